"""Serving quality per engine worker: queue depth, KV-cache usage and prefix-hit rate, TTFT
and ITL, the numbers that say whether KV-aware routing is paying off."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widget import Widget
from textual.widgets import DataTable, Footer, Header

from agentctl.dashboard.readmodel import ServingView, WorkerRow

from . import cells
from .polled_screen import PolledScreen
from .status_line import StatusLine
from .table_sync import sync_rows

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
    ("seen", 6),
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
        Text(cells.age(w.at, now), style="dim"),
    ]
