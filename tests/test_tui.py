"""`agentctl watch`: Pilot tests for keys and drill-down, SVG snapshots, and RemoteSource
against a real HTTP server, all over a real SQLite store filled through the Store API.

Pilot is async and pytest-asyncio is not a dependency, so each scenario runs in `asyncio.run`.
Tests wait on workers (`wait_for_complete`) and the message queue (`pause`), never on sleeps.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import threading
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from rich.text import Text
from textual.app import App
from textual.notifications import Notify
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Sparkline
from textual.widgets.data_table import ColumnKey

from agentctl.collectors.store import EventRecord, EventView, NodeRecord, Sample, Store
from agentctl.ctl.envelope import envelope
from agentctl.dashboard.actions import ActionResult
from agentctl.dashboard.readmodel import FleetView, NodeDetail, ReadModel, ServingView
from agentctl.dashboard.serialize import to_json
from agentctl.dashboard.tui import (
    DataSource,
    LocalSource,
    RemoteSource,
    SourceError,
    WatchApp,
    cells,
)
from agentctl.dashboard.tui.fleet_order import SORT_KEYS, order
from agentctl.dashboard.tui.fleet_screen import FleetScreen
from agentctl.dashboard.tui.help_screen import HelpScreen
from agentctl.dashboard.tui.node_screen import NodeScreen
from agentctl.dashboard.tui.serving_screen import ServingScreen
from agentctl.dashboard.tui.status_line import StatusLine

FIXED_NOW = datetime(2025, 6, 2, 12, 0, tzinfo=UTC)
SIZE = (120, 36)
GIB = 1024**3
NAMES = ["edge-r1", "gpu-a01", "gpu-a02", "gpu-b01", "gpu-c01"]

# -- a small fleet, written through the Store API ----------------------------------------------

#: name -> (util, mem %, temp, power W, GPUs found, minutes since the last sample)
PROFILES: dict[str, tuple[float, float, float, float, int, int]] = {
    "gpu-a01": (35, 42, 61, 820, 4, 0),
    "gpu-a02": (91, 86, 87, 1390, 4, 0),
    "gpu-b01": (64, 57, 74, 2100, 7, 0),
    "gpu-c01": (22, 30, 55, 600, 4, 40),  # stopped reporting: stale
}


def build_fleet(store: Store) -> None:
    store.upsert_nodes(
        [
            NodeRecord("edge-r1", "10.0.2.1", 22, ("edge",), ("router",), None),
            NodeRecord("gpu-a01", "10.0.0.11", 22, ("rack-a",), ("worker",), 4),
            NodeRecord("gpu-a02", "10.0.0.12", 22, ("rack-a",), ("worker",), 4),
            NodeRecord("gpu-b01", "10.0.1.11", 22, ("rack-b",), ("worker",), 8),
            NodeRecord("gpu-c01", "10.0.1.12", 22, ("rack-b",), ("worker",), 4),
        ]
    )
    samples: list[Sample] = []
    for node, (util, mem, temp, power, found, silent_min) in PROFILES.items():
        gpus = [
            {"index": i, "uuid": f"GPU-{node}-{i}", "name": "NVIDIA H100"} for i in range(found)
        ]
        store.record_facts(node, {"gpus": {"gpus": gpus}}, {}, FIXED_NOW - timedelta(minutes=5))
        last = FIXED_NOW - timedelta(seconds=30, minutes=silent_min)
        for k in range(90):  # every 2 minutes over 3 hours, oldest last
            ts = last - timedelta(minutes=2 * k)
            wave = math.sin(k / 5)
            for series, value in (
                ("node.gpu_util_avg", util - 15 * abs(wave) * (k > 0)),
                ("node.gpu_mem_used_pct", mem - 5 * abs(wave) * (k > 0)),
                ("node.gpu_temp_max", temp - 6 * abs(wave) * (k > 0)),
                ("node.gpu_power_w", power - 150 * abs(wave) * (k > 0)),
            ):
                samples.append(Sample(node, series, ts, round(value, 1)))
        for i in range(found):
            hot = node == "gpu-a02" and i == 2
            fields: dict[str, float] = {
                "utilization_gpu_pct": util + (8 if hot else -i),
                "memory_used_bytes": mem / 100 * 80 * GIB,
                "memory_total_bytes": 80 * GIB,
                "temperature_c": temp + (3 if hot else -i),
                "power_draw_w": power / found,
                "power_limit_w": 700,
                "sm_clock_mhz": 1980,
                "remapped_rows.pending": 1 if hot else 0,
                "pcie_gen_current": 5,
                "pcie_width_current": 16,
            }
            for field, value in fields.items():
                samples.append(Sample(node, f"gpu{i}.{field}", last, value))
            ecc_ok = node != "gpu-a01"
            samples.append(
                Sample(
                    node,
                    f"gpu{i}.ecc_uncorrected_volatile",
                    last,
                    (3.0 if hot else 0.0) if ecc_ok else None,
                    "ok" if ecc_ok else "not_supported",
                )
            )
    # host metrics from every node, the router too (it has no GPU): it is fresh, not stale
    for node, cpu, silent_min in (("edge-r1", 12.0, 0), ("gpu-a01", 35.0, 0),
                                  ("gpu-a02", 88.0, 0), ("gpu-b01", 51.0, 0),
                                  ("gpu-c01", 20.0, 40)):  # fmt: skip
        at = FIXED_NOW - timedelta(seconds=30, minutes=silent_min)
        for series, value in (("host.cpu_util_pct", cpu), ("host.mem_used_pct", 41.0),
                              ("host.load1", 1.5), ("host.disk_used_pct", 62.0),
                              ("collect.interval_s", 60.0)):  # fmt: skip
            samples.append(Sample(node, series, at, value))
    workers = {"gpu-a01": ["w0"], "gpu-a02": ["w0", "w1"], "gpu-b01": ["w0"]}
    for node, names in workers.items():
        for j, worker in enumerate(names):
            busy = node == "gpu-a02"
            for field, value in {
                "running": 12.0 if busy else 4.0,
                "waiting": 9.0 if busy else 0.0,
                "kv_usage": 0.93 if busy else 0.41,
                "kv_hit_rate": 0.62 + 0.1 * j if busy else 0.84,
                "ttft_p50_s": 0.42 if busy else 0.09,
                "ttft_p99_s": 2.8 if busy else 0.31,
                "itl_p50_s": 0.031 if busy else 0.018,
            }.items():
                at = FIXED_NOW - timedelta(seconds=30)
                samples.append(Sample(node, f"serving.{worker}.{field}", at, value))
    store.insert_samples(samples)
    store.rollup(FIXED_NOW)
    store.record_events(
        [
            EventRecord(
                "gpu-a02",
                "xid",
                "xid:0000:06:00.0:79",
                FIXED_NOW - timedelta(minutes=20),
                "critical",
                "Xid 79: GPU has fallen off the bus",
                code=79,
                subject="GPU 2",
            ),
            EventRecord(
                "gpu-a02",
                "thermal",
                "thermal:2",
                FIXED_NOW - timedelta(minutes=50),
                "warning",
                "clocks throttled (thermal slowdown)",
                subject="GPU 2",
            ),
            EventRecord(
                "gpu-b01",
                "gpu",
                "gpu_missing",
                FIXED_NOW - timedelta(hours=2),
                "warning",
                "expected 8 GPUs, found 7",
            ),
        ]
    )
    for node, verdict, summary, hours in (
        ("gpu-a01", "pass", "14 checks passed", 3),
        ("gpu-a02", "warn", "1 warning: GPU 2 has a row remap pending", 1),
        ("gpu-b01", "fail", "7 of 8 GPUs visible; persistence mode off", 2),
        ("gpu-c01", "pass", "14 checks passed", 24),
    ):
        store.save_diag(
            node,
            "l1",
            verdict=verdict,
            summary=summary,
            data={"checks": 14},
            created_at=FIXED_NOW - timedelta(hours=hours),
        )


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReadModel]:
    path = tmp_path_factory.mktemp("tui") / "agentctl.db"
    store = Store.open(f"sqlite:///{path}")
    build_fleet(store)
    yield ReadModel(store, clock=lambda: FIXED_NOW)
    store.close()


@pytest.fixture
def source(model: ReadModel) -> LocalSource:
    return LocalSource(model)


def make_app(src: DataSource, **kw: Any) -> WatchApp:
    kw.setdefault("refresh_s", 3600.0)  # tests refresh with ctrl+r, never on a timer
    return WatchApp(src, clock=lambda: FIXED_NOW, **kw)


# -- helpers -------------------------------------------------------------------------------------


async def settle(pilot: Pilot[None]) -> None:
    """Every fetch and action finished, and its result shown."""
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def drive(
    app: WatchApp,
    scenario: Callable[[Pilot[None]], Awaitable[None]],
    notes: list[str] | None = None,
) -> None:
    def hook(message: object) -> None:
        if notes is not None and isinstance(message, Notify):
            notes.append(message.notification.message)

    async def main() -> None:
        async with app.run_test(size=SIZE, message_hook=hook) as pilot:
            await settle(pilot)
            await scenario(pilot)

    asyncio.run(main())


def fleet_table(app: App[Any]) -> DataTable[Text]:
    assert isinstance(app.screen, FleetScreen)
    return app.screen.query_one("#fleet", DataTable)


def keys(table: DataTable[Text]) -> list[str]:
    return [str(row.key.value) for row in table.ordered_rows]


def cell(table: DataTable[Text], row: str, column: str) -> Text:
    value = table.get_cell(row, column)
    assert isinstance(value, Text)
    return value


def column_text(table: DataTable[Text], column: str) -> list[str]:
    return [str(v) for v in table.get_column(column)]


def status_text(app: App[Any]) -> str:
    return str(app.screen.query_one(StatusLine).render())


# -- the fleet screen ------------------------------------------------------------------------------


def test_fleet_rows_show_thresholds_sparklines_and_staleness(source: LocalSource) -> None:
    async def scenario(pilot: Pilot[None]) -> None:
        table = fleet_table(pilot.app)
        assert keys(table) == NAMES
        assert not table.loading
        assert cell(table, "gpu-a02", "util").plain == "91%"
        assert cell(table, "gpu-a02", "util").style == cells.BAD
        assert cell(table, "gpu-a01", "util").style == cells.GOOD
        assert cell(table, "gpu-b01", "util").style == cells.WARN
        assert cell(table, "gpu-a02", "temp").plain == "87°C"
        assert cell(table, "gpu-a02", "temp").style == cells.BAD
        assert cell(table, "gpu-b01", "temp").style == cells.WARN
        assert cell(table, "gpu-b01", "gpus").plain == "7/8"
        assert cell(table, "gpu-b01", "gpus").style == cells.BAD
        assert cell(table, "gpu-b01", "health").plain == "fail"
        assert cell(table, "gpu-a02", "alerts").plain == "1"
        spark = cell(table, "gpu-a01", "spark").plain
        assert len(spark) == 12 and set(spark) <= set(cells.BLOCKS) and len(set(spark)) > 1
        assert cell(table, "gpu-c01", "seen").plain == "! 40m"
        assert cell(table, "gpu-a01", "seen").plain == "30s"
        assert cell(table, "edge-r1", "seen").plain == "30s"  # a router: host samples, no GPU
        assert cell(table, "edge-r1", "cpu").plain == "12%"
        assert cell(table, "gpu-a02", "cpu").style == cells.BAD
        assert cell(table, "gpu-a02", "ttft99").plain == "2.80s"
        assert cell(table, "gpu-a01", "kv").plain == "84%"
        assert "5 nodes" in status_text(pilot.app) and "19 GPUs" in status_text(pilot.app)

    drive(make_app(source), scenario)


def test_filter_narrows_rows_and_escape_clears_it(source: LocalSource) -> None:
    async def scenario(pilot: Pilot[None]) -> None:
        app = pilot.app
        await pilot.press("slash")
        box = app.screen.query_one("#filter", Input)
        assert box.has_focus
        await pilot.press(*"a0")
        await pilot.pause()
        assert keys(fleet_table(app)) == ["gpu-a01", "gpu-a02"]
        assert 'filter "a0" (2/5)' in status_text(app)
        await pilot.press("enter")
        assert fleet_table(app).has_focus
        box.value = "router"  # roles match too
        await pilot.pause()
        assert keys(fleet_table(app)) == ["edge-r1"]
        box.value = "FAIL"  # and health, case-insensitively
        await pilot.pause()
        assert keys(fleet_table(app)) == ["gpu-b01"]
        await pilot.press("escape")
        await pilot.pause()
        assert keys(fleet_table(app)) == NAMES
        assert "filter" not in status_text(app)

    drive(make_app(source), scenario)


def test_sort_keys_cycle_and_reverse_keeping_missing_values_last(source: LocalSource) -> None:
    async def scenario(pilot: Pilot[None]) -> None:
        app = pilot.app
        table = fleet_table(app)
        assert keys(table) == NAMES  # by name
        await pilot.press("s")  # health, worst first; never checked last
        assert keys(table) == ["gpu-b01", "gpu-a02", "gpu-a01", "gpu-c01", "edge-r1"]
        assert "sort health" in status_text(app)
        await pilot.press("s")  # utilisation, busiest first
        assert keys(table) == ["gpu-a02", "gpu-b01", "gpu-a01", "gpu-c01", "edge-r1"]
        assert str(table.columns[ColumnKey("util")].label) == "util↓"
        await pilot.press("S")  # reversed: idlest first, still no data last
        assert keys(table) == ["gpu-c01", "gpu-a01", "gpu-b01", "gpu-a02", "edge-r1"]
        assert "sort utilisation ↑" in status_text(app)

    drive(make_app(source), scenario)


def test_enter_drills_into_the_node_and_escape_returns(source: LocalSource) -> None:
    async def scenario(pilot: Pilot[None]) -> None:
        app = pilot.app
        await pilot.press("down", "down")  # gpu-a02
        await pilot.press("enter")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, NodeScreen) and screen.node_name == "gpu-a02"
        gpus = screen.query_one("#gpus", DataTable)
        assert gpus.row_count == 4
        assert cell(gpus, "2", "util").style == cells.BAD
        assert cell(gpus, "2", "remap").plain == "1"
        assert cell(gpus, "2", "memory").plain == "69/80G 86%"
        assert cell(gpus, "2", "power").plain == "348/700W"
        assert cell(gpus, "0", "pcie").plain == "g5 x16"
        events = screen.query_one("#events", DataTable)
        messages = column_text(events, "message")
        assert any("Xid 79: GPU has fallen off the bus" in m for m in messages)
        assert column_text(events, "code")[0] == "79"
        diags = screen.query_one("#diags", DataTable)
        assert column_text(diags, "verdict") == ["warn"]
        assert "row remap pending" in column_text(diags, "summary")[0]
        assert screen.sub_title == "gpu-a02 · 1h"
        assert screen.query_one("#chart-util Sparkline", Sparkline).data
        await pilot.press("r")
        await settle(pilot)
        assert screen.range_name == "24h" and screen.sub_title == "gpu-a02 · 24h"
        assert "range 24h" in status_text(app)
        assert screen.query_one("#chart-temp Sparkline", Sparkline).data
        await pilot.press("escape")
        await settle(pilot)
        assert isinstance(app.screen, FleetScreen)
        table = fleet_table(app)
        assert table.cursor_row == 2 and keys(table)[2] == "gpu-a02"

    drive(make_app(source), scenario)


def test_a01_gpus_show_not_supported_fields(source: LocalSource) -> None:
    async def scenario(pilot: Pilot[None]) -> None:
        await pilot.press("down", "enter")
        await settle(pilot)
        gpus = pilot.app.screen.query_one("#gpus", DataTable)
        assert column_text(gpus, "ecc") == ["n/a"] * 4

    drive(make_app(source), scenario)


def test_serving_help_and_quit(source: LocalSource) -> None:
    async def scenario(pilot: Pilot[None]) -> None:
        app = pilot.app
        await pilot.press("v")
        await settle(pilot)
        assert isinstance(app.screen, ServingScreen)
        table = app.screen.query_one("#serving", DataTable)
        assert keys(table) == ["gpu-a01/w0", "gpu-a02/w0", "gpu-a02/w1", "gpu-b01/w0"]
        assert cell(table, "gpu-a02/w0", "kv usage").style == cells.BAD
        assert cell(table, "gpu-a02/w1", "kv hit").plain == "72%"
        assert "routers: edge-r1" in status_text(app)
        await pilot.press("escape")
        assert isinstance(app.screen, FleetScreen)
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, FleetScreen)
        await pilot.press("q")
        await pilot.pause()
        assert not app.is_running

    drive(make_app(source), scenario)


# -- L1 from the TUI -----------------------------------------------------------------------------


class RecordingActions:
    """Does what a control plane would, minus SSH: records the call and answers."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def run_l1(self, node: str) -> ActionResult:
        self.calls.append(node)
        return ActionResult(True, "pass (14 checks)", {"verdict": "pass"})

    def drain(self, node: str) -> ActionResult:
        raise AssertionError("the TUI never drains")

    def undrain(self, node: str) -> ActionResult:
        raise AssertionError("the TUI never undrains")


def test_l1_as_viewer_is_refused_with_the_reason(source: LocalSource) -> None:
    actions = RecordingActions()
    notes: list[str] = []

    async def scenario(pilot: Pilot[None]) -> None:
        await pilot.press("l")
        await settle(pilot)

    drive(make_app(source, actions=actions, role="viewer"), scenario, notes)
    assert actions.calls == []
    assert notes == [
        "cannot start L1 on edge-r1: starting an L1 run needs the operator role (you are viewer)"
    ]


def test_l1_without_actions_is_refused(source: LocalSource) -> None:
    notes: list[str] = []

    async def scenario(pilot: Pilot[None]) -> None:
        await pilot.press("l")
        await settle(pilot)

    drive(make_app(source, role="admin"), scenario, notes)
    assert len(notes) == 1 and "not available" in notes[0]


def test_l1_as_operator_runs_from_fleet_and_node_screens(source: LocalSource) -> None:
    actions = RecordingActions()
    notes: list[str] = []

    async def scenario(pilot: Pilot[None]) -> None:
        await pilot.press("down", "l")
        await settle(pilot)
        assert actions.calls == ["gpu-a01"]
        await pilot.press("down", "enter")
        await settle(pilot)
        await pilot.press("l")
        await settle(pilot)
        assert actions.calls == ["gpu-a01", "gpu-a02"]

    drive(make_app(source, actions=actions, role="operator"), scenario, notes)
    assert notes == [
        "L1 run started on gpu-a01…",
        "L1 on gpu-a01: pass (14 checks)",
        "L1 run started on gpu-a02…",
        "L1 on gpu-a02: pass (14 checks)",
    ]


class GatedActions(RecordingActions):
    """An L1 run that lasts until the test says so, then fails."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()

    def run_l1(self, node: str) -> ActionResult:
        self.calls.append(node)
        self.gate.wait(10)
        return ActionResult(False, "fail: 7 of 8 GPUs visible")


def test_l1_runs_once_per_node_at_a_time_and_reports_failure(source: LocalSource) -> None:
    actions = GatedActions()
    notes: list[str] = []

    async def scenario(pilot: Pilot[None]) -> None:
        try:
            await pilot.press("down", "down", "down", "l", "l")
            await pilot.pause()
            assert fleet_table(pilot.app).row_count == 5  # the UI keeps answering meanwhile
        finally:
            actions.gate.set()
        await settle(pilot)

    drive(make_app(source, actions=actions, role="admin"), scenario, notes)
    assert actions.calls == ["gpu-b01"]
    assert notes == [
        "L1 run started on gpu-b01…",
        "an L1 run on gpu-b01 is already in progress",
        "L1 on gpu-b01: fail: 7 of 8 GPUs visible",
    ]


# -- refresh: in place, resilient, never blocking -------------------------------------------------


class ScriptedSource:
    """The local source, with the fleet answer replaceable between refreshes."""

    def __init__(self, inner: LocalSource) -> None:
        self.inner = inner
        self.fleet_answer: Callable[[], FleetView] = inner.fleet
        self.fleet_calls = 0

    def fleet(self) -> FleetView:
        self.fleet_calls += 1
        return self.fleet_answer()

    def node(self, name: str, range_name: str = "24h") -> NodeDetail | None:
        return self.inner.node(name, range_name)

    def serving(self) -> ServingView:
        return self.inner.serving()

    def events(self, node: str | None = None, limit: int = 50) -> list[EventView]:
        return self.inner.events(node, limit)


def test_refresh_updates_cells_in_place_and_keeps_the_cursor(source: LocalSource) -> None:
    scripted = ScriptedSource(source)
    first = source.fleet()

    async def scenario(pilot: Pilot[None]) -> None:
        table = fleet_table(pilot.app)
        assert scripted.fleet_calls == 1  # one fetch on mount, not one per handler in the MRO
        await pilot.press("down", "down", "down")  # gpu-b01
        assert keys(table)[table.cursor_row] == "gpu-b01"
        untouched = table.get_cell("gpu-b01", "temp")
        rows = {r.name: r for r in first.nodes}
        newcomer = dataclasses.replace(rows["gpu-a01"], name="gpu-a00", util_pct=5.0)
        cooler = dataclasses.replace(rows["gpu-a02"], util_pct=12.0)
        scripted.fleet_answer = lambda: FleetView(
            first.generated_at,
            (newcomer, rows["edge-r1"], rows["gpu-a01"], cooler, rows["gpu-b01"]),
        )
        await pilot.press("ctrl+r")
        await settle(pilot)
        assert scripted.fleet_calls == 2
        assert fleet_table(pilot.app) is table
        assert keys(table) == ["edge-r1", "gpu-a00", "gpu-a01", "gpu-a02", "gpu-b01"]
        assert keys(table)[table.cursor_row] == "gpu-b01"  # moved down a line, still on it
        assert cell(table, "gpu-a02", "util").plain == "12%"
        assert cell(table, "gpu-a02", "util").style == cells.GOOD
        assert table.get_cell("gpu-b01", "temp") is untouched  # unchanged cells not rewritten

    drive(make_app(scripted), scenario)


def test_the_fleet_refreshes_on_its_own_every_refresh_s(source: LocalSource) -> None:
    scripted = ScriptedSource(source)

    async def scenario(pilot: Pilot[None]) -> None:
        for _ in range(60):  # the timer is the event here; bounded at 3 s
            if scripted.fleet_calls >= 2:
                break
            await pilot.pause(0.05)
        await settle(pilot)
        assert scripted.fleet_calls >= 2
        assert keys(fleet_table(pilot.app)) == NAMES

    drive(make_app(scripted, refresh_s=0.2), scenario)  # raised to the 1 s floor


def test_a_failing_source_shows_the_error_and_keeps_the_last_rows(source: LocalSource) -> None:
    scripted = ScriptedSource(source)

    def broken() -> FleetView:
        raise SourceError("https://dash:8443/api/v1/fleet: connection refused")

    async def scenario(pilot: Pilot[None]) -> None:
        app = pilot.app
        scripted.fleet_answer = broken
        await pilot.press("ctrl+r")
        await settle(pilot)
        assert app.is_running
        assert "connection refused" in status_text(app)
        assert app.screen.query_one(StatusLine).has_class("-error")
        assert keys(fleet_table(app)) == NAMES
        scripted.fleet_answer = source.fleet
        await pilot.press("ctrl+r")
        await settle(pilot)
        assert "connection refused" not in status_text(app)

    drive(make_app(scripted), scenario)


def test_first_fetch_failing_leaves_an_empty_table_and_the_error(source: LocalSource) -> None:
    scripted = ScriptedSource(source)

    def locked() -> FleetView:
        raise RuntimeError("database is locked")

    scripted.fleet_answer = locked

    async def scenario(pilot: Pilot[None]) -> None:
        table = fleet_table(pilot.app)
        assert table.row_count == 0 and not table.loading
        assert "database is locked" in status_text(pilot.app)

    drive(make_app(scripted), scenario)


def test_the_screen_answers_keys_while_the_first_fetch_is_still_running(
    source: LocalSource,
) -> None:
    scripted = ScriptedSource(source)
    gate = threading.Event()

    def slow() -> FleetView:
        gate.wait(10)
        return source.fleet()

    scripted.fleet_answer = slow

    async def main() -> None:
        app = make_app(scripted)
        try:
            async with app.run_test(size=SIZE) as pilot:
                table = fleet_table(app)
                assert table.loading and table.row_count == 0
                await pilot.press("question_mark")
                assert isinstance(app.screen, HelpScreen)  # not frozen by the fetch
                await pilot.press("escape")
                gate.set()
                await settle(pilot)
                assert not table.loading and keys(table) == NAMES
        finally:
            gate.set()

    asyncio.run(main())


# -- RemoteSource over a real HTTP server ----------------------------------------------------------


class FakeDashboard(BaseHTTPRequestHandler):
    """Serves read-model views in the API's envelope, the way `dashboard serve` does."""

    model: ReadModel
    token = "s3cret"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        if self.headers.get("Authorization") != f"Bearer {self.token}":
            return self.reply(401, None, "invalid or expired token")
        if url.path == "/api/v1/fleet":
            view = self.model.fleet()
            data = to_json(view) | {"totals": view.totals()}
            return self.reply(200, data)
        if url.path.startswith("/api/v1/nodes/"):
            detail = self.model.node(url.path.rsplit("/", 1)[1], query.get("range", "24h"))
            if detail is None:
                return self.reply(404, None, "no such node")
            return self.reply(200, to_json(detail))
        if url.path == "/api/v1/serving":
            return self.reply(200, to_json(self.model.serving()))
        if url.path == "/api/v1/events":
            got = self.model.events(node=query.get("node"), limit=int(query.get("limit", 50)))
            return self.reply(200, to_json(got))
        if url.path == "/api/v1/broken":
            return self.reply(200, None, "collector database is being migrated")
        return self.reply(404, None, "not found")

    def reply(self, status: int, data: Any, error: str | None = None) -> None:
        errors = [] if error is None else [{"kind": "api", "message": error}]
        doc = envelope(data, schema="agentctl.api/1", ok=error is None, errors=errors)
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def dashboard_url(model: ReadModel) -> Iterator[str]:
    handler = type("Handler", (FakeDashboard,), {"model": model})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def remote(dashboard_url: str) -> Iterator[RemoteSource]:
    src = RemoteSource(dashboard_url + "/", FakeDashboard.token, timeout=5.0)
    yield src
    src.close()


def test_remote_source_reads_the_same_views_as_the_local_one(
    remote: RemoteSource, source: LocalSource
) -> None:
    assert remote.fleet() == source.fleet()  # the extra "totals" key is ignored
    assert remote.node("gpu-a02", "24h") == source.node("gpu-a02", "24h")
    assert remote.node("no-such-node") is None
    assert remote.serving() == source.serving()
    events = remote.events(node="gpu-a02", limit=1)
    assert [e.code for e in events] == [79]
    assert len(remote.events()) == 3


def test_remote_source_errors_carry_the_servers_message(dashboard_url: str) -> None:
    bad = RemoteSource(dashboard_url, "wrong-token")
    try:
        with pytest.raises(SourceError, match="invalid or expired token"):
            bad.fleet()
    finally:
        bad.close()
    ok = RemoteSource(dashboard_url, FakeDashboard.token)
    try:
        with pytest.raises(SourceError, match="collector database is being migrated"):
            ok._get("/api/v1/broken")  # an HTTP 200 carrying ok=false is still an error
    finally:
        ok.close()


def test_remote_source_unreachable_is_a_source_error() -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), FakeDashboard) as probe:
        port = probe.server_address[1]  # bound, then closed: nothing listens there
    src = RemoteSource(f"http://127.0.0.1:{port}", "t", timeout=2.0)
    try:
        with pytest.raises(SourceError, match=f"127.0.0.1:{port}/api/v1/serving"):
            src.serving()
    finally:
        src.close()


def test_the_tui_runs_over_a_remote_source(remote: RemoteSource) -> None:
    async def scenario(pilot: Pilot[None]) -> None:
        assert keys(fleet_table(pilot.app)) == NAMES
        await pilot.press("down", "down", "enter")
        await settle(pilot)
        assert pilot.app.screen.query_one("#gpus", DataTable).row_count == 4

    drive(make_app(remote), scenario)


# -- pure parts ------------------------------------------------------------------------------------


def test_thresholds_match_nvitop_style_bands() -> None:
    assert [cells.pct(v).style for v in (49.9, 50, 79.9, 80)] == [
        cells.GOOD,
        cells.WARN,
        cells.WARN,
        cells.BAD,
    ]
    assert [cells.temp(v).style for v in (69, 70, 84, 85)] == [
        cells.GOOD,
        cells.WARN,
        cells.WARN,
        cells.BAD,
    ]
    assert cells.pct(None).plain == cells.NONE


def test_spark_squeezes_to_width_and_leaves_gaps_blank() -> None:
    assert cells.spark([0, 50, 100], 6).plain == "   ▁▅█"
    assert cells.spark([10.0] * 30, 12).plain == "▁" * 12
    assert cells.spark([None, 90.0], 2).plain == " █"
    assert cells.spark([], 4).plain == "    "


def test_order_keeps_rows_without_data_last_in_both_directions(source: LocalSource) -> None:
    rows = source.fleet().nodes
    util = next(k for k in SORT_KEYS if k.column == "util")
    assert [r.name for r in order(rows, util)][-1] == "edge-r1"
    assert [r.name for r in order(rows, util, reverse=True)][-1] == "edge-r1"


# -- SVG snapshots (frozen data, frozen clock, fixed size) ----------------------------------------


@pytest.fixture
def plain_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Snapshots must not depend on the terminal settings of whoever runs the tests."""
    for var in ("NO_COLOR", "TEXTUAL_THEME", "TEXTUAL_ANIMATIONS", "COLUMNS", "LINES"):
        monkeypatch.delenv(var, raising=False)


def test_snapshot_fleet_screen(snap_compare: Any, source: LocalSource, plain_env: None) -> None:
    async def loaded(pilot: Pilot[None]) -> None:
        await settle(pilot)

    assert snap_compare(make_app(source), terminal_size=SIZE, run_before=loaded)


def test_snapshot_node_screen(snap_compare: Any, source: LocalSource, plain_env: None) -> None:
    async def drill(pilot: Pilot[None]) -> None:
        await settle(pilot)
        await pilot.press("down", "down", "enter")
        await settle(pilot)

    assert snap_compare(make_app(source), terminal_size=SIZE, run_before=drill)
