"""The refresh loop every data screen shares: fetch in a thread worker, show on the UI thread.

Source calls block (SQL, HTTP), so they never run on the event loop: the screen keeps
answering keys while a slow fetch is in flight (nvtop's frozen UI is what operators hate).
`exclusive=True` drops a fetch that a newer one overtook. A failed fetch only sets the
status line: the last good data stays on screen.
"""

from __future__ import annotations

from typing import ClassVar, Generic, TypeVar, cast

from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widget import Widget
from textual.worker import Worker, WorkerState

from .context import WatchContext
from .status_line import StatusLine

T = TypeVar("T")
POLL_GROUP = "poll"


class PolledScreen(Screen[None], Generic[T]):
    """Subclasses implement `fetch` (worker thread) and `show` (UI thread) and compose a
    `StatusLine`; `busy_widget` gets the loading indicator until the first answer."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+r", "refresh_now", "Refresh", show=False),
    ]

    def __init__(self, ctx: WatchContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.data: T | None = None
        self._answered = False

    def fetch(self) -> T:
        """Read the source; runs in a worker thread, so it must not touch widgets."""
        raise NotImplementedError

    def show(self, data: T) -> None:
        """Put `data` on screen; runs on the UI thread."""
        raise NotImplementedError

    def busy_widget(self) -> Widget:
        raise NotImplementedError

    def prepare(self) -> None:
        """Set up widgets before the first fetch (columns, titles). Subclasses override this,
        not `on_mount`: Textual calls every class's own `on_mount` along the MRO, so an
        override that also called super() would start the polling twice."""

    @property
    def status(self) -> StatusLine:
        return self.query_one(StatusLine)

    def on_mount(self) -> None:
        self.prepare()
        self.busy_widget().loading = True
        self.set_interval(self.ctx.refresh_s, self._tick)
        self.refresh_data()

    def on_screen_resume(self) -> None:
        """Back from a sub-screen: show fresh data now rather than at the next tick."""
        if self._answered:
            self.refresh_data()

    def _tick(self) -> None:
        if self.is_current:
            self.refresh_data()

    def action_refresh_now(self) -> None:
        self.refresh_data()

    def refresh_data(self) -> None:
        self.run_worker(
            self.fetch, group=POLL_GROUP, thread=True, exclusive=True, exit_on_error=False
        )

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        worker = event.worker
        if worker.group != POLL_GROUP:
            return
        if event.state == WorkerState.SUCCESS:
            self.data = cast(T, worker.result)
            self.status.set_error(None)
            self.show(self.data)
        elif event.state == WorkerState.ERROR:
            exc = worker.error
            self.status.set_error(str(exc) or type(exc).__name__)
        else:
            return
        if not self._answered:
            self._answered = True
            self.busy_widget().loading = False
