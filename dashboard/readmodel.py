"""The read model: every question the web dashboard and the TUI ask of the store, answered
as plain frozen views. Views and widgets never query the store themselves, so both windows
show the same numbers and a page costs a known, small number of queries.

Series read here (written by `agentctl collect`): `node.gpu_count`, `node.gpu_util_avg`,
`node.gpu_mem_used_pct`, `node.gpu_temp_max`, `node.gpu_power_w` (per-node roll-ups of the
GPUs), `gpu<i>.<field>`, `serving.<worker>.<field>`, `host.<field>` (every node: CPU, memory,
load, root disk) and `collect.interval_s`; plus the stored trace replay (`bench_results`).

Replayed GPUs (`agentctl_gpu_replay`: a recording stands in for a GPU) are counted and shown
apart from real ones: their series carry the source `replay:<set>`, and every view that shows
them says `replayed` (NodeRow.gpu_source, GpuRow.source, Chart.source, NodeDetail.replay).

Staleness is judged per node against its own collection interval (`collect.interval_s`, else
collect's default), never a fixed age: a node is stale when its newest sample of any kind is
older than `STALE_INTERVALS` intervals (at least `STALE_FLOOR`); its GPU data alone is stale
when the node sends host samples but its GPU series stopped. A node without GPUs (a router)
is never stale for lacking GPU samples.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from agentctl.collectors.gpu import recorded
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
#: host metrics every node sends: (label, series, unit)
HOST_SERIES: tuple[tuple[str, str, str], ...] = (
    ("cpu", "host.cpu_util_pct", "%"),
    ("host mem", "host.mem_used_pct", "%"),
    ("load", "host.load1", ""),
    ("disk", "host.disk_used_pct", "%"),
)
#: the node page's charts: (label, series, unit); the GPU ones only where GPU data exists
NODE_CHARTS: tuple[tuple[str, str, str], ...] = (*SPARK_SERIES, *HOST_SERIES)
GPU_CHART_SERIES = frozenset(series for _, series, _ in SPARK_SERIES)
#: the serving page's per-worker charts: (label, field, unit)
WORKER_CHARTS: tuple[tuple[str, str, str], ...] = (
    ("KV hit rate", "kv_hit_rate", "%"),
    ("TTFT p50", "ttft_p50_s", "ms"),
)
RANGES: dict[str, timedelta] = {
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "6h": timedelta(hours=6),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
SPARK_WINDOW = timedelta(hours=1)
SPARK_POINTS = 30
ALERT_WINDOW = timedelta(hours=24)
#: a node is stale after this many of its collection intervals without a sample...
STALE_INTERVALS = 3
#: ...and never sooner than this (a pass over many hosts takes seconds itself)
STALE_FLOOR = timedelta(seconds=30)
#: collect's default interval, for a node that has not reported its own
DEFAULT_INTERVAL = timedelta(seconds=60)
REPLAY_KIND = "serving_replay"
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
    stale: bool  # no sample of any kind for `stale_after_s` (see the module docstring)
    sparks: dict[str, list[float | None]] = field(default_factory=dict)
    cpu_pct: float | None = None
    host_mem_pct: float | None = None
    load1: float | None = None
    cpus: float | None = None
    disk_pct: float | None = None
    #: `replay:<set>` when the node's GPUs are replayed recordings; None: measured or none
    gpu_source: str | None = None
    replayed_gpus: int = 0  # GPUs of the last pass that were replayed (not in gpu_count)
    interval_s: float | None = None  # the node's collection interval, as it reported it
    stale_after_s: float = 0.0
    gpu_stale: bool = False  # host samples arrive, GPU samples stopped
    #: why the node is stale, or "" (one sentence for the banner and the tooltip)
    stale_reason: str = ""


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
            "replayed_gpus": sum(n.replayed_gpus for n in self.nodes),
            "health": health,
            "open_alerts": sum(n.open_alerts for n in self.nodes),
            "stale": sum(1 for n in self.nodes if n.stale),
            "gpu_stale": sum(1 for n in self.nodes if n.gpu_stale and not n.stale),
        }

    def stale_banner(self) -> str:
        """What the stale nodes have in common, in one sentence ("" when none is stale)."""
        stale = [n for n in self.nodes if n.stale]
        gpu = [n for n in self.nodes if n.gpu_stale and not n.stale]
        parts = []
        if stale:
            after = sorted({n.stale_after_s for n in stale})
            span = _span(after[0]) if len(after) == 1 else f"{_span(after[0])}-{_span(after[-1])}"
            parts.append(
                f"{len(stale)} of {len(self.nodes)} nodes sent nothing for over "
                f"{STALE_INTERVALS} collection intervals ({span}): collection stopped or "
                "cannot reach them, so their numbers are old (run `agentctl collect "
                "--interval S` to keep them current)."
            )
        if gpu:
            parts.append(
                f"{len(gpu)} node(s) answer but sent no GPU sample for {STALE_INTERVALS} "
                "intervals: their GPU numbers are old (nvidia-smi or NVML failing?)."
            )
        return " ".join(parts)


@dataclass(frozen=True)
class GpuRow:
    index: int
    values: dict[str, float | None]  # GPU_FIELDS field -> latest value (None: n/a)
    statuses: dict[str, str]  # field -> status of that value ("not_supported"...)
    source: str | None = None  # `replay:<set>` for a replayed GPU


@dataclass(frozen=True)
class Chart:
    label: str
    series: str
    unit: str
    resolution_s: int
    step_s: float
    points: tuple[tuple[datetime, float | None, float | None, float | None], ...]  # ts,min,avg,max
    source: str | None = None  # `replay:<set>` when the data is a replayed GPU's


@dataclass(frozen=True)
class ReplayInfo:
    """Where a node's replayed GPUs come from (the recordings' provenance)."""

    set: str
    title: str
    source: str
    kernel_log_note: str
    recordings: tuple[dict[str, str], ...]


@dataclass(frozen=True)
class NodeDetail:
    row: NodeRow
    gpus: tuple[GpuRow, ...]
    range_name: str
    charts: tuple[Chart, ...]
    diagnostics: tuple[DiagRecord, ...]
    events: tuple[EventView, ...]
    replay: ReplayInfo | None = None


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
    #: a simulated engine's time scale (None: real time, e.g. vLLM)
    time_scale: float | None = None
    requests: float | None = None  # first tokens over the serving page's range


#: (x, y) points of a line over trace seconds; None leaves a gap
XYPoints = list[tuple[float, float | None]]


@dataclass(frozen=True)
class TimelineLine:
    """One line of a replay's timeline (a worker's or the fleet's), one value per window;
    None where the window had no requests (a gap, not a zero)."""

    requests: tuple[int, ...]
    hit_rate: tuple[float | None, ...]
    ttft_p50_ms: tuple[float | None, ...]
    ttft_p90_ms: tuple[float | None, ...]


@dataclass(frozen=True)
class ReplayTimeline:
    """A policy's replay in windows of trace time (seconds from the replay's start; wall time
    over the time scale in live mode): window i covers [t0_s + i * window_s, + window_s).
    Each completed request counts in the window of its first token (`basis`)."""

    t0_s: float
    window_s: float
    fleet: TimelineLine
    workers: dict[str, TimelineLine] = field(default_factory=dict)
    basis: str = "first token"

    @property
    def end_s(self) -> float:
        return self.t0_s + self.window_s * len(self.fleet.requests)

    def points(self, attr: str, worker: str | None = None, factor: float = 1.0) -> XYPoints:
        """(window middle, value x factor) of the fleet's line or `worker`'s."""
        line = self.fleet if worker is None else self.workers.get(worker)
        if line is None:
            return []
        vals: tuple[float | None, ...] = getattr(line, attr)
        return [(self.t0_s + self.window_s * (i + 0.5), None if v is None else v * factor)
                for i, v in enumerate(vals)]  # fmt: skip


@dataclass(frozen=True)
class PolicyResult:
    """One routing policy of the stored trace replay (client-side, trace-time figures)."""

    policy: str
    requests: int
    hit_rate: float | None
    oracle_hit_rate: float | None
    ttft_p50_ms: float | None
    ttft_p90_ms: float | None
    ttft_p99_ms: float | None
    e2e_p50_ms: float | None
    imbalance: float | None
    #: worker -> share of the prompt tokens it prefilled (0..1)
    prefill_share: dict[str, float] = field(default_factory=dict)
    #: the run over time (None: a replay stored before the bench had a timeline)
    timeline: ReplayTimeline | None = None


@dataclass(frozen=True)
class ReplayComparison:
    """The last stored replay of real Claude Code traces, KV-aware against round-robin."""

    at: datetime
    title: str
    trace: str
    mode: str
    workers: int
    time_scale: float | None
    policies: tuple[PolicyResult, ...]
    #: round-robin's TTFT p50 over kv's (how many times lower kv's is), None without both
    ttft_p50_ratio: float | None = None

    def bar_items(self, attr: str, factor: float = 1.0) -> list[tuple[str, float | None]]:
        """(policy, value x factor) for a bar chart; None stays None."""
        out: list[tuple[str, float | None]] = []
        for p in self.policies:
            v = getattr(p, attr)
            out.append((p.policy, None if v is None else float(v) * factor))
        return out

    @property
    def has_timeline(self) -> bool:
        return any(p.timeline is not None and p.timeline.fleet.requests for p in self.policies)

    def timeline_span(self) -> tuple[float, float]:
        """(start, end) in trace seconds covering every policy's windows: one x axis for all."""
        tls = [p.timeline for p in self.policies if p.timeline is not None]
        if not tls:
            return 0.0, 1.0
        return min(t.t0_s for t in tls), max(t.end_s for t in tls)

    def window_label(self) -> str:
        """The policies' window lengths, e.g. "5 s" (or "5 s / 10 s" when they differ)."""
        widths = dict.fromkeys(f"{p.timeline.window_s:g} s" for p in self.policies if p.timeline)
        return " / ".join(widths) or "-"

    def timeline_workers(self) -> tuple[str, ...]:
        """Workers with a line in any policy's timeline, first seen first, at most
        `MAX_TIMELINE_WORKERS` (the charts' small multiples)."""
        names = dict.fromkeys(w for p in self.policies if p.timeline for w in p.timeline.workers)
        return tuple(names)[:MAX_TIMELINE_WORKERS]

    def timeline_lines(self, attr: str, worker: str | None = None,
                       factor: float = 1.0) -> list[tuple[str, XYPoints]]:  # fmt: skip
        """(policy, points) per policy that has a timeline: the lines of one chart."""
        return [(p.policy, p.timeline.points(attr, worker, factor))
                for p in self.policies if p.timeline is not None]  # fmt: skip


@dataclass(frozen=True)
class WorkerChart:
    node: str
    worker: str
    charts: tuple[Chart, ...]


@dataclass(frozen=True)
class ServingView:
    generated_at: datetime
    workers: tuple[WorkerRow, ...]
    routers: tuple[str, ...]  # nodes with the router role
    replay: ReplayComparison | None = None
    range_name: str = "1h"
    worker_charts: tuple[WorkerChart, ...] = ()
    #: sentences that explain the numbers (where TTFT is measured, why requests cluster)
    notes: tuple[str, ...] = ()


def _mean(xs: Sequence[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return sum(vals) / len(vals) if vals else None


def _span(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    if seconds >= 60:
        return f"{seconds / 60:g} min"
    return f"{seconds:.0f} s"


class ReadModel:
    """Query functions over one Store; cheap to build, safe to share between threads."""

    def __init__(self, store: Store, *, clock: Callable[[], datetime] | None = None) -> None:
        self.store = store
        self._clock = clock or (lambda: datetime.now(UTC))

    def now(self) -> datetime:
        return self._clock()

    # -- fleet ---------------------------------------------------------------------------------

    def fleet(self, *, sparks: bool = True, only: str | None = None) -> FleetView:
        """Every node (or `only` that one) with its health, latest GPU roll-ups, host metrics,
        serving quality and alerts: a fixed number of queries whatever the fleet's size."""
        now = self.now()
        nodes = [n for n in self.store.list_nodes() if only is None or n.name == only]
        if not nodes:
            return FleetView(now, ())
        scope = None if only is None else [only]
        latest = self.store.fleet_now(["node.", "serving.", "host.", "collect."], nodes=scope)
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
            serving = _serving_of({k: v for k, v in vals.items() if k.startswith("serving.")})
            h = health.get(n.name)
            fresh = _freshness(vals, now)
            gpu_source, replayed = _gpu_source(vals)
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
                    last_sample=fresh.last,
                    stale=fresh.stale,
                    sparks={k: v.get(n.name, []) for k, v in spark_data.items()},
                    cpu_pct=_value(vals, "host.cpu_util_pct"),
                    host_mem_pct=_value(vals, "host.mem_used_pct"),
                    load1=_value(vals, "host.load1"),
                    cpus=_value(vals, "host.cpus"),
                    disk_pct=_value(vals, "host.disk_used_pct"),
                    gpu_source=gpu_source,
                    replayed_gpus=replayed,
                    interval_s=fresh.interval_s,
                    stale_after_s=fresh.after_s,
                    gpu_stale=fresh.gpu_stale,
                    stale_reason=fresh.reason,
                )
            )
        return FleetView(now, tuple(rows))

    def _sparks(self, now: datetime) -> dict[str, dict[str, list[float | None]]]:
        series = [(label, key) for label, key, _ in (*SPARK_SERIES, HOST_SERIES[0])]
        got = self.store.sparklines([key for _, key in series], now - SPARK_WINDOW, now,
                                    points=SPARK_POINTS)  # fmt: skip
        return {label: got.get(key, {}) for label, key in series}

    # -- one node --------------------------------------------------------------------------

    def default_range(self, node: str | None = None) -> str:
        """The shortest range that holds the node's (or the fleet's) whole recent history, so
        a minutes-old fleet shows lines, not a dot at the right edge of a day: 15m or 1h when
        its oldest host sample of the last hour is that young, else 24h."""
        now = self.now()
        scope = None if node is None else [node]
        got = self.store.series_over_range(HOST_SERIES[0][1], now - RANGES["1h"], now,
                                           max_points=60, nodes=scope)  # fmt: skip
        firsts = [pts[0].ts for pts in got.points.values() if pts]
        if not firsts:
            return "24h"
        age = now - min(firsts)
        if age <= RANGES["15m"]:
            return "15m"
        return "1h" if age < RANGES["1h"] - timedelta(minutes=5) else "24h"

    def node(self, name: str, range_name: str = "24h") -> NodeDetail | None:
        """One node over `range_name` ("" picks `default_range`; an unknown name is 24h)."""
        row = next(iter(self.fleet(sparks=False, only=name).nodes), None)
        if row is None:
            return None
        if range_name == "":
            range_name = self.default_range(name)
        span = RANGES.get(range_name, RANGES["24h"])
        now = self.now()
        gpus = self._gpus(name)
        sources = {v.series: v.source for v in self.store.fleet_now(["node.gpu"], nodes=[name])}
        has_gpu = bool(sources) or bool(row.expected_gpus) or bool(row.gpu_count)
        charts = []
        for label, series, unit in NODE_CHARTS:
            if series in GPU_CHART_SERIES and not has_gpu:
                continue  # a node without GPUs (a router) shows its host, not empty GPU charts
            got = self.store.series_over_range(series, now - span, now, max_points=240,
                                               nodes=[name])  # fmt: skip
            pts = tuple((p.ts, p.min, p.avg, p.max) for p in got.points.get(name, []))
            charts.append(Chart(label, series, unit, got.resolution_s, got.step_s, pts,
                                sources.get(series)))  # fmt: skip
        diags = tuple(self.store.list_diag(node=name, limit=20))
        events = tuple(self.store.list_events(node=name, limit=50))
        return NodeDetail(row, gpus, range_name if range_name in RANGES else "24h",
                          tuple(charts), diags, events, _replay_info(row.gpu_source))  # fmt: skip

    def _gpus(self, name: str) -> tuple[GpuRow, ...]:
        fields = {f for _, f, _ in GPU_FIELDS}
        gpus: dict[int, tuple[dict[str, float | None], dict[str, str], list[str | None]]] = {}
        for v in self.store.fleet_now(["gpu"], nodes=[name]):
            m = _GPU_KEY.match(v.series)
            if not m or m.group(2) not in fields:
                continue
            vals, stats, srcs = gpus.setdefault(int(m.group(1)), ({}, {}, []))
            vals[m.group(2)] = v.value
            stats[m.group(2)] = v.status
            srcs.append(v.source)
        return tuple(
            GpuRow(i, vals, stats, next((s for s in srcs if s), None))
            for i, (vals, stats, srcs) in sorted(gpus.items())
        )

    # -- serving, events, runs, diagnostics ------------------------------------------------

    def serving(self, range_name: str = "1h") -> ServingView:
        """Per worker its latest numbers and, for the first `MAX_WORKER_CHARTS` workers, hit
        rate and TTFT over the range; the stored trace replay; notes on what they mean."""
        now = self.now()
        if range_name == "":
            range_name = self.default_range()
        range_name = range_name if range_name in RANGES else "1h"
        span = RANGES[range_name]
        vals: dict[str, dict[str, LatestValue]] = {}
        for v in self.store.fleet_now(["serving."]):
            vals.setdefault(v.node, {})[v.series] = v
        latest = [w for node in sorted(vals) for w in _serving_of(vals[node], node)]
        workers: list[WorkerRow] = []
        charts: list[WorkerChart] = []
        for i, w in enumerate(latest):
            if i >= MAX_WORKER_CHARTS:
                workers.append(w)
                continue
            got = {
                f: self.store.series_over_range(
                    f"serving.{w.worker}.{f}", now - span, now, max_points=120, nodes=[w.node]
                )
                for f in ("kv_hit_rate", "ttft_p50_s", "requests")
            }
            served = [p for p in got["requests"].points.get(w.node, [])]
            total = sum((p.avg or 0.0) * p.count for p in served) if served else None
            workers.append(dataclasses.replace(w, requests=total))
            worker_charts = []
            for label, f, unit in WORKER_CHARTS:
                r = got[f]
                scale = 100.0 if unit == "%" else 1000.0
                pts = tuple((p.ts, _times(p.min, scale), _times(p.avg, scale),
                             _times(p.max, scale)) for p in r.points.get(w.node, []))  # fmt: skip
                worker_charts.append(Chart(label, f"serving.{w.worker}.{f}", unit,
                                           r.resolution_s, r.step_s, pts))  # fmt: skip
            charts.append(WorkerChart(w.node, w.worker, tuple(worker_charts)))
        routers = tuple(n.name for n in self.store.list_nodes() if "router" in n.roles)
        record = self.store.latest_bench(REPLAY_KIND)
        replay = replay_comparison(record.data, record.created_at, record.title) if record else None
        notes = serving_notes(workers, replay, range_name)
        return ServingView(now, tuple(workers), routers, replay, range_name, tuple(charts), notes)

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


MAX_WORKER_CHARTS = 12
#: per-worker small multiples of the replay's timeline on the serving page
MAX_TIMELINE_WORKERS = 8


@dataclass(frozen=True)
class _Fresh:
    last: datetime | None
    interval_s: float | None
    after_s: float
    stale: bool
    gpu_stale: bool
    reason: str


def _freshness(vals: dict[str, LatestValue], now: datetime) -> _Fresh:
    """Staleness against the node's own collection interval (see the module docstring)."""
    last = max((v.ts for v in vals.values()), default=None)
    interval = _value(vals, "collect.interval_s")
    every = timedelta(seconds=interval) if interval and interval > 0 else DEFAULT_INTERVAL
    after = max(STALE_INTERVALS * every, STALE_FLOOR)
    stale = last is not None and now - last > after
    gpu_last = max((v.ts for k, v in vals.items() if k.startswith("node.gpu")), default=None)
    gpu_stale = not stale and gpu_last is not None and now - gpu_last > after
    how = f"every {_span(every.total_seconds())}" + ("" if interval else " (collect's default)")
    reason = ""
    if stale:
        reason = (f"no sample for over {STALE_INTERVALS} collection intervals ({how}): "
                  "collection stopped or cannot reach the node")  # fmt: skip
    elif gpu_stale:
        reason = (f"host samples arrive but no GPU sample for over {STALE_INTERVALS} "
                  f"collection intervals ({how})")  # fmt: skip
    return _Fresh(last, interval, after.total_seconds(), stale, gpu_stale, reason)


def _gpu_source(vals: dict[str, LatestValue]) -> tuple[str | None, int]:
    """(the replay label of the node's GPUs, how many of the last pass were replayed)."""
    src = next((v.source for k, v in vals.items() if k.startswith("node.gpu") and v.source), None)
    if not recorded.is_replayed(src):
        return src, 0
    count = _value(vals, "node.gpu_count")
    return src, int(count) if count is not None else 1


def _replay_info(source: str | None) -> ReplayInfo | None:
    rset = recorded.set_of_source(source)
    if rset is None:
        return None
    d = recorded.describe(rset.name)
    return ReplayInfo(d["set"], d["title"], d["source"], d["kernel_log_note"],
                      tuple(d["recordings"]))  # fmt: skip


def _times(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def _num(d: dict[str, Any], *path: str) -> float | None:
    cur: Any = d
    for key in path:
        cur = cur.get(key) if isinstance(cur, dict) else None
    if isinstance(cur, bool) or not isinstance(cur, int | float) or cur != cur:
        return None
    return float(cur)


def replay_comparison(data: dict[str, Any], at: datetime, title: str) -> ReplayComparison:
    """The stored replay document (`agentctl bench replay --json`'s data, as the demo saves it)
    as a view; fields it lacks are None, never made up."""
    policies = []
    for p in data.get("policies") or []:
        if not isinstance(p, dict) or not isinstance(p.get("policy"), str):
            continue
        prefill = p.get("prefill_tokens")
        items = prefill.items() if isinstance(prefill, dict) else ()
        counts = {str(k): float(v) for k, v in items if isinstance(v, int | float)}
        total = sum(counts.values())
        policies.append(
            PolicyResult(
                policy=p["policy"],
                requests=int(_num(p, "completed") or 0),
                hit_rate=_num(p, "hit_rate"),
                oracle_hit_rate=_num(p, "oracle_hit_rate"),
                ttft_p50_ms=_num(p, "ttft_ms", "p50"),
                ttft_p90_ms=_num(p, "ttft_ms", "p90"),
                ttft_p99_ms=_num(p, "ttft_ms", "p99"),
                e2e_p50_ms=_num(p, "e2e_ms", "p50"),
                imbalance=_num(p, "imbalance"),
                prefill_share={k: v / total for k, v in sorted(counts.items())} if total else {},
                timeline=replay_timeline(p.get("timeline")),
            )
        )
    by = {p.policy: p for p in policies}
    kv, rr = by.get("kv"), by.get("round-robin")
    ratio = None
    if kv and rr and kv.ttft_p50_ms and rr.ttft_p50_ms:
        ratio = rr.ttft_p50_ms / kv.ttft_p50_ms
    return ReplayComparison(
        at=at, title=title, trace=str(data.get("trace") or ""), mode=str(data.get("mode") or ""),
        workers=int(_num(data, "workers") or 0), time_scale=_num(data, "time_scale"),
        policies=tuple(policies), ttft_p50_ratio=ratio,
    )  # fmt: skip


def _series(raw: dict[str, Any], key: str, n: int) -> tuple[float | None, ...]:
    vals = raw.get(key)
    vals = vals if isinstance(vals, list) else []
    return tuple(_num({"v": v}, "v") for v in vals[:n]) + (None,) * max(0, n - len(vals))


def _timeline_line(raw: Any, n: int) -> TimelineLine | None:
    if not isinstance(raw, dict):
        return None
    return TimelineLine(
        requests=tuple(int(v or 0) for v in _series(raw, "requests", n)),
        hit_rate=_series(raw, "hit_rate", n),
        ttft_p50_ms=_series(raw, "ttft_ms_p50", n),
        ttft_p90_ms=_series(raw, "ttft_ms_p90", n),
    )


def replay_timeline(raw: Any) -> ReplayTimeline | None:
    """A stored policy's `timeline` (the bench's, bounded by the demo) as a view; None when it
    is missing or malformed (never a made-up line)."""
    if not isinstance(raw, dict) or not isinstance(raw.get("fleet"), dict):
        return None
    t0, width = _num(raw, "t0_s"), _num(raw, "window_s")
    if t0 is None or width is None or width <= 0:
        return None
    reqs = raw["fleet"].get("requests")
    n = len(reqs) if isinstance(reqs, list) else 0
    fleet = _timeline_line(raw["fleet"], n)
    workers = raw.get("workers")
    items = workers.items() if isinstance(workers, dict) else ()
    lines = {str(w): _timeline_line(v, n) for w, v in items}
    return ReplayTimeline(
        t0_s=t0, window_s=width, fleet=fleet or TimelineLine((), (), (), ()),
        workers={w: line for w, line in lines.items() if line is not None},
        basis=str(raw.get("basis") or "first token"),
    )  # fmt: skip


#: a worker with at least this share of the range's requests has them "concentrated"
CONCENTRATED = 0.75


def serving_notes(
    workers: Sequence[WorkerRow], replay: ReplayComparison | None, range_name: str
) -> tuple[str, ...]:
    """Plain sentences for what the serving numbers cannot say themselves."""
    notes = []
    scales = sorted({w.time_scale for w in workers if w.time_scale})
    engine = (
        "TTFT in the worker table and charts is measured by each engine: from the request's "
        "arrival at the engine to its first token, in wall-clock time."
    )
    if scales:
        x = scales[0]
        engine += (f" These engines are simulated at time_scale {x:g}: they run {1 / x:g}x "
                   f"faster than the GPU they model, so 2 ms here is {2 / x:g} ms of modelled "
                   "GPU time.")  # fmt: skip
    notes.append(engine)
    if replay is not None:
        scale = f" divided by its time_scale {replay.time_scale:g}" if replay.time_scale else ""
        clock = "the simulator's virtual clock" if replay.mode == "sim" else f"wall time{scale}"
        notes.append(
            "The trace replay's TTFT (its table, bars and charts over the run) is measured by "
            "the client: from the router receiving the "
            "request to the first streamed token, HTTP and queueing included, and reported in "
            f"trace time ({clock}), so it is comparable across runs and with the "
            "simulator, not with the engine column."
        )
    counted = [(w.requests or 0.0, w) for w in workers if w.requests is not None]
    total = sum(n for n, _ in counted)
    if len(counted) >= 2 and total >= 4:
        top, busiest = max(counted, key=lambda t: t[0])
        if top / total >= CONCENTRATED:
            notes.append(
                f"{top:.0f} of {total:.0f} requests in the last {range_name} went to "
                f"{busiest.worker}. Requests that share a prefix (agent sessions resend one "
                "system prompt and their history) stay on the worker that has it cached: at "
                "light load a KV-aware router prefers that cache hit over spreading the load, "
                "and moves new work elsewhere only once queueing there would cost more than the "
                "prefill it saves. Round-robin would spread them and prefill the prompt on "
                "every worker."
            )
    return tuple(notes)


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
                time_scale=g("time_scale"),
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
