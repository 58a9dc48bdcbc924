"""`WatchApp`: the fleet screen first, node / serving / help screens pushed on top, and the
one place that turns a key press into an action on a node (the role check lives here, not in
the screens, so every screen refuses the same way)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import ClassVar

from textual import on
from textual.app import App
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from agentctl.dashboard.actions import ActionResult, Actions

from .context import WatchContext
from .fleet_screen import FleetScreen
from .help_screen import HelpScreen
from .messages import L1Requested
from .polled_screen import PolledScreen
from .serving_screen import ServingScreen
from .source import DataSource

#: refreshing faster than NVML answers only burns CPU (nvitop's maintainers hold the same line)
MIN_REFRESH_S = 1.0
L1_GROUP = "l1"


class WatchApp(App[None]):
    """`source` is read from worker threads; `actions` (if any) is called from one too."""

    CSS_PATH = "app.tcss"
    TITLE = "agentctl watch"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help"),
        Binding("v", "serving", "Serving"),
    ]

    def __init__(
        self,
        source: DataSource,
        *,
        actions: Actions | None = None,
        role: str = "viewer",
        refresh_s: float = 5.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__()
        self.ctx = WatchContext(
            source=source,
            actions=actions,
            role=role,
            refresh_s=max(MIN_REFRESH_S, refresh_s),
            clock=clock or (lambda: datetime.now(UTC)),
        )
        self._l1_running: set[str] = set()

    def get_default_screen(self) -> Screen[None]:
        return FleetScreen(self.ctx)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_serving(self) -> None:
        if isinstance(self.screen, HelpScreen):
            self.pop_screen()
        if not isinstance(self.screen, ServingScreen):
            self.push_screen(ServingScreen(self.ctx))

    # -- L1 runs -----------------------------------------------------------------------------

    @on(L1Requested)
    def start_l1(self, message: L1Requested) -> None:
        actions = self.ctx.actions
        reason = self.ctx.why_not_act()
        if actions is None or reason is not None:
            self.notify(
                f"cannot start L1 on {message.node}: {reason}", severity="warning", markup=False
            )
            return
        if message.node in self._l1_running:
            self.notify(
                f"an L1 run on {message.node} is already in progress",
                severity="warning",
                markup=False,
            )
            return
        self._l1_running.add(message.node)
        self.notify(f"L1 run started on {message.node}…", markup=False)
        self.run_worker(
            partial(actions.run_l1, message.node),
            name=message.node,
            group=L1_GROUP,
            thread=True,
            exit_on_error=False,
        )

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if worker.group != L1_GROUP:
            return
        node = worker.name
        if event.state in (WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED):
            self._l1_running.discard(node)
        if event.state == WorkerState.SUCCESS and isinstance(worker.result, ActionResult):
            result = worker.result
            self.notify(
                f"L1 on {node}: {result.message}",
                title="L1 run",
                severity="information" if result.ok else "error",
                markup=False,
            )
            if isinstance(self.screen, PolledScreen):
                self.screen.refresh_data()  # the new verdict shows without waiting a tick
        elif event.state == WorkerState.ERROR:
            self.notify(
                f"L1 on {node} failed: {worker.error}",
                title="L1 run",
                severity="error",
                markup=False,
            )
