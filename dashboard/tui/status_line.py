"""The one-line status bar under each table: what is shown, how fresh it is, and the last
error from the source, so a failing fetch is visible without hiding the data still on screen."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


class StatusLine(Static):
    """`info` is the screen's own summary; `error` (if any) is shown before it, in red."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id)
        self.info = "loading…"
        self.error: str | None = None

    def set_info(self, info: str) -> None:
        self.info = info
        self._render_line()

    def set_error(self, error: str | None) -> None:
        self.error = error
        self.set_class(error is not None, "-error")
        self._render_line()

    def _render_line(self) -> None:
        line = Text()
        if self.error is not None:
            line.append(f"⚠ {self.error}", style="bold")
            line.append("  ·  ")
        line.append(self.info)
        self.update(line)
