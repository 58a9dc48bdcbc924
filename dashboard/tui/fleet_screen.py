"""The fleet overview: one row per node, refreshed in place, filtered with `/`, sorted with
`s`/`S`, Enter to drill into a node."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widget import Widget
from textual.widgets import DataTable, Footer, Header, Input
from textual.widgets.data_table import ColumnKey

from agentctl.dashboard.readmodel import FleetView, NodeRow

from . import cells
from .fleet_order import SORT_KEYS, matches, order
from .messages import L1Requested
from .node_screen import NodeScreen
from .polled_screen import PolledScreen
from .status_line import StatusLine
from .table_sync import cursor_key, sync_rows

#: (key, label, width): fixed widths, so the layout does not jump as values change
COLUMNS: tuple[tuple[str, str, int], ...] = (
    ("node", "node", 12),
    ("health", "health", 7),
    ("gpus", "gpus", 5),
    ("cpu", "cpu", 5),
    ("util", "util", 5),
    ("spark", "util 1h", 12),
    ("mem", "mem", 5),
    ("temp", "temp", 5),
    ("power", "power", 6),
    ("kv", "kvhit", 5),
    ("ttft50", "ttft50", 6),
    ("ttft99", "ttft99", 6),
    ("alerts", "alerts", 6),
    ("seen", "seen", 7),
)
SPARK_WIDTH = 12


class FleetScreen(PolledScreen[FleetView]):
    SUB_TITLE = "fleet"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "Filter"),
        Binding("s", "sort_next", "Sort"),
        Binding("S,shift+s", "sort_reverse", "Reverse"),
        Binding("l", "run_l1", "L1 run"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
    ]

    sort_index = 0
    reverse = False
    filter_text = ""

    def compose(self) -> ComposeResult:
        yield Header()
        yield DataTable[Text](id="fleet", cursor_type="row", zebra_stripes=True)
        yield Input(
            placeholder="filter: name, role or health (Enter: keep, Esc: clear)", id="filter"
        )
        yield StatusLine(id="status")
        yield Footer()

    def prepare(self) -> None:
        table = self.table
        for key, label, width in COLUMNS:
            table.add_column(label, key=key, width=width)
        self._label_sort_column()

    @property
    def table(self) -> DataTable[Text]:
        return self.query_one("#fleet", DataTable)

    def busy_widget(self) -> Widget:
        return self.table

    def fetch(self) -> FleetView:
        return self.ctx.source.fleet()

    # -- rendering -----------------------------------------------------------------------------

    def show(self, data: FleetView) -> None:
        key = SORT_KEYS[self.sort_index]
        shown = order((r for r in data.nodes if matches(r, self.filter_text)), key, self.reverse)
        now = self.ctx.clock()
        sync_rows(self.table, [(r.name, self._cells(r, now)) for r in shown])
        self.status.set_info(self._summary(data, len(shown)))

    def _cells(self, r: NodeRow, now: datetime) -> list[Text]:
        rep = r.replayed_gpus > 0
        return [
            Text(r.name, style="bold"),
            cells.health(r.health),
            cells.gpus_with_replayed(r.gpu_count, r.expected_gpus, r.replayed_gpus),
            cells.pct(r.cpu_pct),
            cells.mark_replayed(cells.pct(r.util_pct), rep),
            cells.spark(r.sparks.get("util", []), SPARK_WIDTH),
            cells.mark_replayed(cells.pct(r.mem_used_pct), rep),
            cells.mark_replayed(cells.temp(r.temp_c), rep),
            cells.mark_replayed(cells.watts(r.power_w), rep),
            cells.ratio(r.kv_hit_rate),
            cells.seconds(r.ttft_p50_s),
            cells.seconds(r.ttft_p99_s),
            cells.count(r.open_alerts),
            cells.seen(r.last_sample, now, r.stale, r.gpu_stale),
        ]

    def _summary(self, data: FleetView, shown: int) -> str:
        totals = data.totals()
        key = SORT_KEYS[self.sort_index]
        parts = [
            f"{totals['nodes']} nodes",
            f"{totals['gpus']} GPUs",
            *(
                [f"{totals['replayed_gpus']} replayed{cells.REPLAY_MARK} (recordings, not GPUs)"]
                if totals["replayed_gpus"]
                else []
            ),
            *([f"{totals['stale']} stale"] if totals["stale"] else []),
            f"{totals['open_alerts']} critical in 24h",
            f"data {data.generated_at:%H:%M:%S}Z",
            f"sort {key.label} {'↑' if key.descending == self.reverse else '↓'}",
        ]
        if self.filter_text:
            parts.append(f'filter "{self.filter_text}" ({shown}/{totals["nodes"]})')
        return "  ·  ".join(parts)

    def _label_sort_column(self) -> None:
        key = SORT_KEYS[self.sort_index]
        arrow = "↑" if key.descending == self.reverse else "↓"
        for column_key, label, _ in COLUMNS:
            column = self.table.columns[ColumnKey(column_key)]
            column.label = Text(f"{label}{arrow}" if column_key == key.column else label)
        self.table.notify_style_update()  # drops the cached header row

    def _redraw(self) -> None:
        self._label_sort_column()
        if self.data is not None:
            self.show(self.data)

    # -- keys ----------------------------------------------------------------------------------

    def action_sort_next(self) -> None:
        self.sort_index = (self.sort_index + 1) % len(SORT_KEYS)
        self.reverse = False
        self._redraw()

    def action_sort_reverse(self) -> None:
        self.reverse = not self.reverse
        self._redraw()

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("-open")
        box.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.value = ""  # posts Input.Changed, which redraws
        box.remove_class("-open")
        self.filter_text = ""
        self.table.focus()
        self._redraw()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value
        self._redraw()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if not event.value:
            event.input.remove_class("-open")
        self.table.focus()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.app.push_screen(NodeScreen(self.ctx, event.row_key.value))

    def action_run_l1(self) -> None:
        node = cursor_key(self.table)
        if node is None:
            self.notify("no node selected", severity="warning", markup=False)
            return
        self.post_message(L1Requested(node))
