"""Trace-replay benchmark: trace readers, workloads, the discrete-event simulator and its metrics.

`load_workload(path, ...)` reads a Mooncake or WEKA trace into a `Workload`; `compare(workload,
policies, workers=8)` replays it through simulated engines once per routing policy (same
workload, same seed) and returns one `PolicyResult` each; `format_table` / `to_json` render them
with ratios against round-robin; each result's `timeline` is the run in windows of trace time.
"""

from __future__ import annotations

from agentctl.serving.bench.metrics import (
    LatencySummary,
    OracleCache,
    PolicyResult,
    RequestRecord,
    WorkerTotals,
    oracle_hit_rate,
    percentile,
    summarize,
)
from agentctl.serving.bench.report import format_table, ratios, ratios_vs, to_json
from agentctl.serving.bench.sim import SimOptions, compare, run_sim
from agentctl.serving.bench.timeline import Line, Timeline, build_timeline
from agentctl.serving.bench.traces import (
    MooncakeRequest,
    TraceFormatError,
    WekaConversation,
    WekaRequest,
    WekaSubagent,
    detect_format,
    read_mooncake,
    read_weka,
)
from agentctl.serving.bench.workload import (
    Driver,
    PlannedRequest,
    Session,
    Spawn,
    Workload,
    load_workload,
    mooncake_workload,
    replay_order,
    weka_workload,
)

__all__ = [
    "Driver",
    "LatencySummary",
    "Line",
    "MooncakeRequest",
    "OracleCache",
    "PlannedRequest",
    "PolicyResult",
    "RequestRecord",
    "Session",
    "SimOptions",
    "Spawn",
    "Timeline",
    "TraceFormatError",
    "WekaConversation",
    "WekaRequest",
    "WekaSubagent",
    "WorkerTotals",
    "Workload",
    "build_timeline",
    "compare",
    "detect_format",
    "format_table",
    "load_workload",
    "mooncake_workload",
    "oracle_hit_rate",
    "percentile",
    "ratios",
    "ratios_vs",
    "read_mooncake",
    "read_weka",
    "replay_order",
    "run_sim",
    "summarize",
    "to_json",
    "weka_workload",
]
