"""Serving quality per engine worker: queue depth, KV-cache usage and prefix-hit rate, TTFT
and ITL, the numbers that say whether KV-aware routing is paying off; under it the stored
trace replay (KV-aware against round-robin, one line per policy with its hit rate over the run
as a sparkline) and what the TTFT columns measure."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widget import Widget
from textual.widgets import DataTable, Footer, Header, Static

from agentctl.dashboard.readmodel import PolicyResult, ServingView, WorkerRow

from . import cells
from .polled_screen import PolledScreen
from .status_line import StatusLine
from .table_sync import sync_rows

#: cells of the replay's hit-rate sparkline (the bench keeps at most 30 windows)
SPARK_WIDTH = 21

COLUMNS = (
    ("node", 12),
    ("worker", 12),
    ("running", 7),
    ("waiting", 7),
    ("kv usage", 8),
    ("kv hit", 6),
    ("ttft p50", 8),
    ("ttft p99", 8),
    ("itl p50", 8),
    ("reqs 1h", 7),
    ("scale", 6),
    ("seen", 6),
)
REPLAY_COLUMNS = (
    ("policy", 12),
    ("requests", 8),
    ("kv hit", 7),
    ("oracle", 7),
    ("ttft p50", 9),
    ("ttft p99", 9),
    ("hit rate over the run", SPARK_WIDTH),
    ("prefill per worker", 24),
)


class ServingScreen(PolledScreen[ServingView]):
    SUB_TITLE = "serving"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "app.pop_screen", "Back")]

    def compose(self) -> ComposeResult:
        yield Header()
        table: DataTable[Text] = DataTable(id="serving", cursor_type="row", zebra_stripes=True)
        for label, width in COLUMNS:
            table.add_column(label, key=label, width=width)
        yield table
        replay: DataTable[Text] = DataTable(id="replay", cursor_type="none", zebra_stripes=True)
        for label, width in REPLAY_COLUMNS:
            replay.add_column(label, key=label, width=width)
        replay.border_title = "trace replay: kv vs round-robin (client side, trace time)"
        yield replay
        yield Static("", id="notes")
        yield StatusLine(id="status")
        yield Footer()

    def busy_widget(self) -> Widget:
        return self.query_one("#serving")

    def fetch(self) -> ServingView:
        return self.ctx.source.serving()

    def show(self, data: ServingView) -> None:
        now = self.ctx.clock()
        rows = [(f"{w.node}/{w.worker}", _cells(w, now)) for w in data.workers]
        sync_rows(self.query_one("#serving", DataTable), rows)
        replay = data.replay
        sync_rows(
            self.query_one("#replay", DataTable),
            [(p.policy, _policy_cells(p)) for p in (replay.policies if replay else ())],
        )
        notes = Text()
        if replay is not None and replay.ttft_p50_ratio:
            notes.append(f"kv TTFT p50 {replay.ttft_p50_ratio:.2f}x lower than round-robin. ",
                         style="bold")  # fmt: skip
        elif replay is None:
            notes.append("No trace replay stored yet (agentctl demo stores one). ", style="dim")
        notes.append(" ".join(data.notes), style="dim")
        self.query_one("#notes", Static).update(notes)
        routers = ", ".join(data.routers) or "none"
        self.status.set_info(
            f"{len(data.workers)} workers  ·  routers: {routers}  ·  "
            f"data {data.generated_at:%H:%M:%S}Z"
        )


def _cells(w: WorkerRow, now: datetime) -> list[Text]:
    return [
        Text(w.node, style="bold"),
        Text(w.worker),
        cells.number(w.running),
        cells.number(w.waiting),
        cells.pct(None if w.kv_usage is None else w.kv_usage * 100),
        cells.ratio(w.kv_hit_rate),
        cells.seconds(w.ttft_p50_s),
        cells.seconds(w.ttft_p99_s),
        cells.seconds(w.itl_p50_s),
        cells.number(w.requests),
        Text("real", style="dim") if w.time_scale is None else cells.number(w.time_scale),
        Text(cells.age(w.at, now), style="dim"),
    ]


def _policy_cells(p: PolicyResult) -> list[Text]:
    share = " ".join(f"{w} {v:.0%}" for w, v in sorted(p.prefill_share.items()))
    return [
        Text(p.policy, style="bold" if p.policy == "kv" else ""),
        Text(str(p.requests)),
        cells.ratio(p.hit_rate),
        cells.ratio(p.oracle_hit_rate),
        cells.seconds(None if p.ttft_p50_ms is None else p.ttft_p50_ms / 1000),
        cells.seconds(None if p.ttft_p99_ms is None else p.ttft_p99_ms / 1000),
        _hit_spark(p),
        Text(share or cells.NONE, style="dim" if not share else ""),
    ]


def _hit_spark(p: PolicyResult) -> Text:
    """The policy's fleet-wide hit rate per window, 0..100 %, in one colour (a high hit rate is
    good, so no thresholds); blank for a window without requests."""
    tl = p.timeline
    if tl is None or not tl.fleet.hit_rate:
        return cells.missing()
    style = "bold cyan" if p.policy == "kv" else "white"
    return cells.spark(tl.fleet.hit_rate, SPARK_WIDTH, top=1.0, style=style)
