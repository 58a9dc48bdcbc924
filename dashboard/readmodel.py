"""The read model: every question the web dashboard and the TUI ask of the store, answered
as plain frozen views. Views and widgets never query the store themselves, so both windows
show the same numbers and a page costs a known, small number of queries.

Series read here (written by `agentctl collect`): `node.gpu_util_avg`, `node.gpu_mem_used_pct`,
`node.gpu_temp_max`, `node.gpu_power_w` (per-node roll-ups of the GPUs), `gpu<i>.<field>`
and `serving.<worker>.<field>`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from agentctl.collectors.store import DiagRecord, EventView, LatestValue, RunRecord, Store

#: the fleet overview's sparklines: (label, series, unit)
SPARK_SERIES: tuple[tuple[str, str, str], ...] = (
    ("util", "node.gpu_util_avg", "%"),
    ("mem", "node.gpu_mem_used_pct", "%"),
    ("temp", "node.gpu_temp_max", "°C"),
    ("power", "node.gpu_power_w", "W"),
)
#: per-GPU columns of the node page: (label, field, unit)
GPU_FIELDS: tuple[tuple[str, str, str], ...] = (
    ("util", "utilization_gpu_pct", "%"),
    ("mem used", "memory_used_bytes", "B"),
    ("mem total", "memory_total_bytes", "B"),
    ("temp", "temperature_c", "°C"),
    ("power", "power_draw_w", "W"),
    ("power limit", "power_limit_w", "W"),
    ("sm clock", "sm_clock_mhz", "MHz"),
    ("ecc uncorr.", "ecc_uncorrected_volatile", ""),
    ("remap pending", "remapped_rows.pending", ""),
    ("pcie gen", "pcie_gen_current", ""),
    ("pcie width", "pcie_width_current", "x"),
)
#: the node page's charts: (label, series, unit)
NODE_CHARTS: tuple[tuple[str, str, str], ...] = (*SPARK_SERIES,)
RANGES: dict[str, timedelta] = {
    "1h": timedelta(hours=1),
    "6h": timedelta(hours=6),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
SPARK_WINDOW = timedelta(hours=1)
SPARK_POINTS = 30
ALERT_WINDOW = timedelta(hours=24)
STALE_AFTER = timedelta(minutes=15)
_GPU_KEY = re.compile(r"^gpu(\d+)\.(.+)$")
_SERVING_KEY = re.compile(r"^serving\.(.+)\.([a-z0-9_]+)$")


@dataclass(frozen=True)
class NodeRow:
    """One line of the fleet overview."""

    name: str
    address: str
    roles: tuple[str, ...]
    groups: tuple[str, ...]
    health: str | None  # the last L1 verdict (pass/warn/fail/skip), None: never checked
    health_summary: str
    health_at: datetime | None
    gpu_count: int | None  # GPUs seen by the last collection (None: never collected)
    expected_gpus: int | None
    util_pct: float | None
    mem_used_pct: float | None
    temp_c: float | None
    power_w: float | None
    kv_hit_rate: float | None
    ttft_p50_s: float | None
    ttft_p99_s: float | None
    open_alerts: int  # critical events in the last 24 h
    last_sample: datetime | None
    stale: bool  # no sample for STALE_AFTER
    sparks: dict[str, list[float | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class FleetView:
    generated_at: datetime
    nodes: tuple[NodeRow, ...]

    def totals(self) -> dict[str, Any]:
        health: dict[str, int] = {}
        for n in self.nodes:
            key = n.health or "unknown"
            health[key] = health.get(key, 0) + 1
        return {
            "nodes": len(self.nodes),
            "gpus": sum(n.gpu_count or 0 for n in self.nodes),
            "health": health,
            "open_alerts": sum(n.open_alerts for n in self.nodes),
        }


@dataclass(frozen=True)
class GpuRow:
    index: int
    values: dict[str, float | None]  # GPU_FIELDS field -> latest value (None: n/a)
    statuses: dict[str, str]  # field -> status of that value ("not_supported"...)


@dataclass(frozen=True)
class Chart:
    label: str
    series: str
    unit: str
    resolution_s: int
    step_s: float
    points: tuple[tuple[datetime, float | None, float | None, float | None], ...]  # ts,min,avg,max


@dataclass(frozen=True)
class NodeDetail:
    row: NodeRow
    gpus: tuple[GpuRow, ...]
    range_name: str
    charts: tuple[Chart, ...]
    diagnostics: tuple[DiagRecord, ...]
    events: tuple[EventView, ...]


@dataclass(frozen=True)
class WorkerRow:
    node: str
    worker: str
    running: float | None
    waiting: float | None
    kv_usage: float | None
    kv_hit_rate: float | None
    ttft_p50_s: float | None
    ttft_p99_s: float | None
    itl_p50_s: float | None
    at: datetime | None


@dataclass(frozen=True)
class ServingView:
    generated_at: datetime
    workers: tuple[WorkerRow, ...]
    routers: tuple[str, ...]  # nodes with the router role


def _mean(xs: Sequence[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return sum(vals) / len(vals) if vals else None


class ReadModel:
    """Query functions over one Store; cheap to build, safe to share between threads."""

    def __init__(self, store: Store, *, clock: Callable[[], datetime] | None = None) -> None:
        self.store = store
        self._clock = clock or (lambda: datetime.now(UTC))

    def now(self) -> datetime:
        return self._clock()

    # -- fleet ---------------------------------------------------------------------------------

    def fleet(self, *, sparks: bool = True, only: str | None = None) -> FleetView:
        """Every node (or `only` that one) with its health, latest GPU roll-ups, serving
        quality and alerts: a fixed number of queries whatever the fleet's size."""
        now = self.now()
        nodes = [n for n in self.store.list_nodes() if only is None or n.name == only]
        if not nodes:
            return FleetView(now, ())
        scope = None if only is None else [only]
        latest = self.store.fleet_now(["node.", "serving."], nodes=scope)
        by_node: dict[str, dict[str, LatestValue]] = {}
        for v in latest:
            by_node.setdefault(v.node, {})[v.series] = v
        health = self.store.latest_diag("l1")
        alerts: dict[str, int] = {}
        for e in self.store.list_events(node=only, severities=["critical"],
                                        since=now - ALERT_WINDOW, limit=10_000):  # fmt: skip
            alerts[e.node] = alerts.get(e.node, 0) + 1
        spark_data = self._sparks(now) if sparks else {}
        rows = []
        for n in nodes:
            vals = by_node.get(n.name, {})
            serving = _serving_of(vals)
            last = max((v.ts for v in vals.values()), default=None)
            h = health.get(n.name)
            rows.append(
                NodeRow(
                    name=n.name,
                    address=n.address,
                    roles=n.roles,
                    groups=n.groups,
                    health=h.verdict if h else None,
                    health_summary=h.summary if h else "no L1 run yet",
                    health_at=h.created_at if h else None,
                    gpu_count=n.gpu_count,
                    expected_gpus=n.expected_gpus,
                    util_pct=_value(vals, "node.gpu_util_avg"),
                    mem_used_pct=_value(vals, "node.gpu_mem_used_pct"),
                    temp_c=_value(vals, "node.gpu_temp_max"),
                    power_w=_value(vals, "node.gpu_power_w"),
                    kv_hit_rate=_mean([w.kv_hit_rate for w in serving]),
                    ttft_p50_s=_mean([w.ttft_p50_s for w in serving]),
                    ttft_p99_s=max(
                        (w.ttft_p99_s for w in serving if w.ttft_p99_s is not None), default=None
                    ),
                    open_alerts=alerts.get(n.name, 0),
                    last_sample=last,
                    stale=last is None or now - last > STALE_AFTER,
                    sparks={k: v.get(n.name, []) for k, v in spark_data.items()},
                )
            )
        return FleetView(now, tuple(rows))

    def _sparks(self, now: datetime) -> dict[str, dict[str, list[float | None]]]:
        got = self.store.sparklines([series for _, series, _ in SPARK_SERIES],
                                    now - SPARK_WINDOW, now, points=SPARK_POINTS)  # fmt: skip
        return {label: got.get(series, {}) for label, series, _ in SPARK_SERIES}

    # -- one node --------------------------------------------------------------------------

    def node(self, name: str, range_name: str = "24h") -> NodeDetail | None:
        row = next(iter(self.fleet(sparks=False, only=name).nodes), None)
        if row is None:
            return None
        span = RANGES.get(range_name, RANGES["24h"])
        now = self.now()
        gpus = self._gpus(name)
        charts = []
        for label, series, unit in NODE_CHARTS:
            got = self.store.series_over_range(series, now - span, now, max_points=240,
                                               nodes=[name])  # fmt: skip
            pts = tuple((p.ts, p.min, p.avg, p.max) for p in got.points.get(name, []))
            charts.append(Chart(label, series, unit, got.resolution_s, got.step_s, pts))
        diags = tuple(self.store.list_diag(node=name, limit=20))
        events = tuple(self.store.list_events(node=name, limit=50))
        return NodeDetail(row, gpus, range_name if range_name in RANGES else "24h",
                          tuple(charts), diags, events)  # fmt: skip

    def _gpus(self, name: str) -> tuple[GpuRow, ...]:
        fields = {f for _, f, _ in GPU_FIELDS}
        gpus: dict[int, tuple[dict[str, float | None], dict[str, str]]] = {}
        for v in self.store.fleet_now(["gpu"], nodes=[name]):
            m = _GPU_KEY.match(v.series)
            if not m or m.group(2) not in fields:
                continue
            vals, stats = gpus.setdefault(int(m.group(1)), ({}, {}))
            vals[m.group(2)] = v.value
            stats[m.group(2)] = v.status
        return tuple(GpuRow(i, vals, stats) for i, (vals, stats) in sorted(gpus.items()))

    # -- serving, events, runs, diagnostics ------------------------------------------------

    def serving(self) -> ServingView:
        now = self.now()
        vals: dict[str, dict[str, LatestValue]] = {}
        for v in self.store.fleet_now(["serving."]):
            vals.setdefault(v.node, {})[v.series] = v
        workers = [w for node in sorted(vals) for w in _serving_of(vals[node], node)]
        routers = tuple(n.name for n in self.store.list_nodes() if "router" in n.roles)
        return ServingView(now, tuple(workers), routers)

    def events(
        self,
        *,
        node: str | None = None,
        kinds: Sequence[str] = (),
        severities: Sequence[str] = (),
        since: timedelta | None = None,
        limit: int = 200,
    ) -> list[EventView]:
        start = self.now() - since if since is not None else None
        return self.store.list_events(node=node, kinds=kinds, severities=severities,
                                      since=start, limit=limit)  # fmt: skip

    def runs(self, limit: int = 50) -> list[RunRecord]:
        return self.store.list_runs(limit)

    def run(self, run_id: int) -> RunRecord | None:
        return self.store.get_run(run_id)

    def diagnostics(self, node: str, kind: str | None = None, limit: int = 20) -> list[DiagRecord]:
        return self.store.list_diag(node=node, kind=kind, limit=limit)


def _value(vals: dict[str, LatestValue], series: str) -> float | None:
    v = vals.get(series)
    return v.value if v is not None and v.status == "ok" else None


def _serving_of(vals: dict[str, LatestValue], node: str = "") -> list[WorkerRow]:
    per: dict[str, dict[str, LatestValue]] = {}
    for series, v in vals.items():
        m = _SERVING_KEY.match(series)
        if m:
            per.setdefault(m.group(1), {})[m.group(2)] = v
    rows = []
    for worker, f in sorted(per.items()):

        def g(key: str, f: dict[str, LatestValue] = f) -> float | None:
            v = f.get(key)
            return v.value if v is not None and v.status == "ok" else None

        rows.append(
            WorkerRow(
                node=node or next(iter(f.values())).node,
                worker=worker,
                running=g("running"),
                waiting=g("waiting"),
                kv_usage=g("kv_usage"),
                kv_hit_rate=g("kv_hit_rate"),
                ttft_p50_s=g("ttft_p50_s"),
                ttft_p99_s=g("ttft_p99_s"),
                itl_p50_s=g("itl_p50_s"),
                at=max(v.ts for v in f.values()),
            )
        )
    return rows
