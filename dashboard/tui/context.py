"""What every screen of `agentctl watch` shares: the data source, the actions, the operator's
role, the refresh period and the clock. Built once by `WatchApp`, read-only afterwards."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from agentctl.dashboard.actions import Actions

from .source import DataSource

#: roles that may act on nodes (viewers only watch), as in the web dashboard
ACTING_ROLES = frozenset({"operator", "admin"})


@dataclass(frozen=True)
class WatchContext:
    source: DataSource
    actions: Actions | None
    role: str
    refresh_s: float
    clock: Callable[[], datetime]

    def why_not_act(self) -> str | None:
        """None when actions are allowed, else the reason to show the operator."""
        if self.actions is None:
            return "actions are not available here (read-only source)"
        if self.role not in ACTING_ROLES:
            return f"starting an L1 run needs the operator role (you are {self.role})"
        return None
