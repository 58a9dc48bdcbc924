"""What an operator can do from a dashboard, as an interface the control side implements.

The dashboard never reaches a node itself: `agentctl dashboard serve` (and `agentctl watch`)
pass an `Actions` built on the control plane's connections, so the dashboard depends on this
protocol only, and tests can hand it any implementation that does the real work.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ActionResult:
    ok: bool
    message: str
    data: dict[str, Any] = field(default_factory=dict)


class Actions(Protocol):
    def run_l1(self, node: str) -> ActionResult:
        """Run `diag l1` on one node now; its result is stored like any L1 run."""
        ...

    def drain(self, node: str) -> ActionResult:
        """Stop routing new requests to the node's workers (the router keeps serving)."""
        ...

    def undrain(self, node: str) -> ActionResult: ...
