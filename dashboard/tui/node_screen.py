"""One node: its GPUs (same thresholds as the fleet), charts over a range (`r` cycles it),
recent events and the last diagnostics. Escape goes back to the fleet."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid
from textual.widget import Widget
from textual.widgets import DataTable, Footer, Header, Static

from agentctl.collectors.store import DiagRecord, EventView
from agentctl.dashboard.readmodel import NODE_CHARTS, GpuRow, NodeDetail

from . import cells
from .chart_panel import ChartPanel
from .context import WatchContext
from .messages import L1Requested
from .polled_screen import PolledScreen
from .status_line import StatusLine
from .table_sync import sync_rows

RANGE_CYCLE = ("1h", "24h", "7d", "30d")
GPU_COLUMNS = (
    ("gpu", 3),
    ("util", 5),
    ("memory", 14),
    ("temp", 5),
    ("power", 10),
    ("sm clock", 8),
    ("ecc", 4),
    ("remap", 5),
    ("pcie", 7),
)
EVENT_COLUMNS = (("age", 4), ("severity", 8), ("kind", 10), ("code", 4), ("message", 78))
DIAG_COLUMNS = (("age", 4), ("kind", 10), ("verdict", 7), ("summary", 85))


def _table(id: str, columns: tuple[tuple[str, int], ...], title: str) -> DataTable[Text]:
    # no cursor: these tables are read, not picked from, and a cursor row hides the colours
    table: DataTable[Text] = DataTable(id=id, cursor_type="none", zebra_stripes=True)
    for label, width in columns:
        table.add_column(label, key=label, width=width)
    table.border_title = title
    return table


class NodeScreen(PolledScreen[NodeDetail | None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("r", "next_range", "Range"),
        Binding("l", "run_l1", "L1 run"),
    ]

    def __init__(self, ctx: WatchContext, name: str) -> None:
        super().__init__(ctx)
        self.node_name = name
        self.range_name = RANGE_CYCLE[0]

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="summary")
        yield _table("gpus", GPU_COLUMNS, "GPUs")
        with Grid(id="charts"):
            for label, _, _ in NODE_CHARTS:
                yield ChartPanel(label, id=f"chart-{_panel_id(label)}")
        yield _table("events", EVENT_COLUMNS, "recent events")
        yield _table("diags", DIAG_COLUMNS, "last diagnostics")
        yield StatusLine(id="status")
        yield Footer()

    def prepare(self) -> None:
        self._set_title()

    def busy_widget(self) -> Widget:
        return self.query_one("#gpus")

    def fetch(self) -> NodeDetail | None:
        return self.ctx.source.node(self.node_name, self.range_name)

    def _set_title(self) -> None:
        self.sub_title = f"{self.node_name} · {self.range_name}"

    # -- rendering -----------------------------------------------------------------------------

    def show(self, data: NodeDetail | None) -> None:
        if data is None:
            self.status.set_error(f"{self.node_name} is not in the fleet (retired or renamed?)")
            return
        now = self.ctx.clock()
        self.query_one("#summary", Static).update(self._summary(data, now))
        sync_rows(
            self.query_one("#gpus", DataTable), [(str(g.index), _gpu_cells(g)) for g in data.gpus]
        )
        if data.replay is not None:
            self.query_one(
                "#gpus", DataTable
            ).border_title = f"GPUs: replayed{cells.REPLAY_MARK} ({data.replay.set}), not real"
        shown = set()
        for chart in data.charts:
            panel = self.query_one(f"#chart-{_panel_id(chart.label)}", ChartPanel)
            panel.set_chart(chart, data.range_name)
            shown.add(chart.label)
        for label, _, _ in NODE_CHARTS:
            if label not in shown:
                self.query_one(f"#chart-{_panel_id(label)}", ChartPanel).set_absent("no GPU")
        sync_rows(
            self.query_one("#events", DataTable),
            [(str(e.id), _event_cells(e, now)) for e in data.events],
        )
        sync_rows(
            self.query_one("#diags", DataTable),
            [(str(d.id), _diag_cells(d, now)) for d in data.diagnostics],
        )
        self.status.set_info(
            f"{len(data.gpus)} GPUs  ·  {len(data.events)} events  ·  "
            f"{len(data.diagnostics)} diagnostics  ·  range {data.range_name}  ·  "
            f"data {now:%H:%M:%S}Z"
        )

    def _summary(self, data: NodeDetail, now: datetime) -> Text:
        r = data.row
        line = Text()
        line.append(r.name, style="bold")
        line.append(f"  {r.address}  roles {','.join(r.roles) or '-'}")
        line.append(f"  groups {','.join(r.groups) or '-'}  GPUs ")
        line.append_text(cells.gpus_with_replayed(r.gpu_count, r.expected_gpus, r.replayed_gpus))
        line.append("  seen ")
        line.append_text(cells.seen(r.last_sample, now, r.stale, r.gpu_stale))
        line.append("\nhost ")
        line.append_text(cells.pct(r.cpu_pct))
        line.append(" cpu  mem ")
        line.append_text(cells.pct(r.host_mem_pct))
        load = "-" if r.load1 is None else f"{r.load1:.2f}"
        line.append(f"  load {load}  disk ")
        line.append_text(cells.pct(r.disk_pct))
        if data.replay is not None:
            line.append(f"  GPUs replayed{cells.REPLAY_MARK}: {data.replay.title}",
                        style=cells.REPLAYED)  # fmt: skip
        elif r.stale_reason:
            line.append(f"  {r.stale_reason}", style=cells.WARN)
        line.append("\nhealth ")
        line.append_text(cells.health(r.health))
        line.append(f"  {r.health_summary}")
        if r.health_at is not None:
            line.append(f"  ({cells.age(r.health_at, now)} ago)", style="dim")
        return line

    # -- keys ----------------------------------------------------------------------------------

    def action_next_range(self) -> None:
        i = RANGE_CYCLE.index(self.range_name) if self.range_name in RANGE_CYCLE else -1
        self.range_name = RANGE_CYCLE[(i + 1) % len(RANGE_CYCLE)]
        self._set_title()
        self.refresh_data()

    def action_run_l1(self) -> None:
        self.post_message(L1Requested(self.node_name))


def _panel_id(label: str) -> str:
    return label.replace(" ", "-")


def _gpu_cells(g: GpuRow) -> list[Text]:
    v = g.values

    def na(field: str) -> Text:
        return (
            Text("n/a", style="dim")
            if g.statuses.get(field) == "not_supported"
            else cells.missing()
        )

    def num(field: str, unit: str = "") -> Text:
        value = v.get(field)
        return na(field) if value is None else cells.number(value, unit)

    util = v.get("utilization_gpu_pct")
    gen, width = v.get("pcie_gen_current"), v.get("pcie_width_current")
    ecc = v.get("ecc_uncorrected_volatile")
    remap = v.get("remapped_rows.pending")
    return [
        cells.mark_replayed(Text(str(g.index)), g.source is not None),
        cells.pct(util) if util is not None else na("utilization_gpu_pct"),
        cells.memory(v.get("memory_used_bytes"), v.get("memory_total_bytes")),
        cells.temp(v.get("temperature_c")),
        cells.watts(v.get("power_draw_w"), v.get("power_limit_w")),
        num("sm_clock_mhz", "MHz"),
        cells.count(int(ecc)) if ecc is not None else na("ecc_uncorrected_volatile"),
        cells.count(int(remap)) if remap is not None else na("remapped_rows.pending"),
        Text(f"g{gen:g} x{width:g}") if gen is not None and width is not None else cells.missing(),
    ]


def _event_cells(e: EventView, now: datetime) -> list[Text]:
    message = f"{e.subject}: {e.message}" if e.subject else e.message
    if e.count > 1:
        message = f"{message} (x{e.count})"
    return [
        Text(cells.age(e.last_at, now), style="dim"),
        cells.severity(e.severity),
        cells.mark_replayed(Text(e.kind), bool(e.data.get("replayed"))),
        Text("" if e.code is None else str(e.code)),
        Text(message),
    ]


def _diag_cells(d: DiagRecord, now: datetime) -> list[Text]:
    return [
        Text(cells.age(d.created_at, now), style="dim"),
        Text(d.kind),
        cells.health(d.verdict),
        Text(d.summary.splitlines()[0] if d.summary else ""),
    ]
