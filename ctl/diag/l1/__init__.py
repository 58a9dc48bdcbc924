"""`agentctl diag l1`: the fast health posture of a host, one verdict per check.

`l1_probes(ctx)` lists the read-only probes a runner executes on the node; `evaluate(results,
ctx, thresholds)` turns their results into `CheckResult`s without any I/O, so the same code
judges a live host and a recorded bundle.
"""

from agentctl.ctl.diag.l1.checks import (
    CHECK_NAMES,
    CheckResult,
    Verdict,
    evaluate,
    overall,
)
from agentctl.ctl.diag.l1.context import L1Context, ServingExpect, context_from_vars
from agentctl.ctl.diag.l1.probes import l1_probes
from agentctl.ctl.diag.l1.thresholds import L1Thresholds

__all__ = [
    "CHECK_NAMES",
    "CheckResult",
    "L1Context",
    "L1Thresholds",
    "ServingExpect",
    "Verdict",
    "context_from_vars",
    "evaluate",
    "l1_probes",
    "overall",
]
