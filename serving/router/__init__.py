"""KV-aware router core: block index, load accounting and routing policies (pure, no I/O).

The HTTP front end (`app.py`) wires these to workers; everything here takes `now` as an
argument, so the simulator and the live router run the same code.
"""

from __future__ import annotations

from agentctl.serving.router.index import (
    BlockIndex,
    Gap,
    IndexStats,
    Overlap,
    UnknownWorker,
    leading_depths,
)
from agentctl.serving.router.load import (
    CostModelLike,
    LoadTracker,
    WorkerLoad,
    chunked_prefill_ms,
)
from agentctl.serving.router.policies import (
    POLICIES,
    Decision,
    DynamoCost,
    KvPolicy,
    LeastLoaded,
    NoEligibleWorker,
    Policy,
    RoundRobin,
    SessionAffinity,
    SglangCacheAware,
    WorkerState,
    dynamo_logit,
    eligible_workers,
    make_policy,
    policy_names,
    rendezvous_order,
    rendezvous_score,
)

__all__ = [
    "POLICIES",
    "BlockIndex",
    "CostModelLike",
    "Decision",
    "DynamoCost",
    "Gap",
    "IndexStats",
    "KvPolicy",
    "LeastLoaded",
    "LoadTracker",
    "NoEligibleWorker",
    "Overlap",
    "Policy",
    "RoundRobin",
    "SessionAffinity",
    "SglangCacheAware",
    "UnknownWorker",
    "WorkerLoad",
    "WorkerState",
    "chunked_prefill_ms",
    "dynamo_logit",
    "eligible_workers",
    "leading_depths",
    "make_policy",
    "policy_names",
    "rendezvous_order",
    "rendezvous_score",
]
