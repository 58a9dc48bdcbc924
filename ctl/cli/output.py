"""Where output goes: data on stdout (one JSON document in --json mode), the rest on stderr.

Everything printed through rich is markup, so every value that comes from data (inventory,
ssh_config, remote output, the store, exception messages) is escaped with `esc()` or passed as
`plain()` Text: a host named `[/x]` must print as such, not crash rich with a MarkupError.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from agentctl.ctl.envelope import dumps, envelope
from agentctl.ctl.errors import AgentctlError
from agentctl.ctl.fanout import Status

if TYPE_CHECKING:
    from agentctl.ctl.fanout import HostOutcome, Recap

STATUS_STYLE = {
    Status.OK: "green",
    Status.CHANGED: "yellow",
    Status.FAILED: "red",
    Status.UNREACHABLE: "magenta",
    Status.SKIPPED: "dim",
}


def esc(value: object) -> str:
    """`value` as markup that prints literally, to interpolate into our own styled strings."""
    return escape(str(value))


def plain(value: object) -> Text:
    """`value` as a renderable that is never parsed as markup (table cells)."""
    return Text(str(value))


class Output:
    def __init__(self, *, json_mode: bool = False, verbose: int = 0) -> None:
        self.json_mode = json_mode
        self.verbose = verbose
        no_color = bool(os.environ.get("NO_COLOR"))
        # Piped or redirected tables would wrap at rich's default 80 columns; logs are wider.
        width = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS") or 160)
        self.out = Console(no_color=no_color, highlight=False, soft_wrap=False, width=width)
        self.err = Console(stderr=True, no_color=no_color, highlight=False)
        self._emitted = False

    @property
    def interactive(self) -> bool:
        return not self.json_mode and sys.stdin.isatty() and self.err.is_terminal

    def emit(
        self,
        data: Any,
        *,
        schema: str,
        ok: bool = True,
        errors: Sequence[AgentctlError | dict[str, str]] = (),
    ) -> None:
        """The JSON envelope, exactly once per process, and only in --json mode."""
        if not self.json_mode or self._emitted:
            return
        errs = [e.to_dict() if isinstance(e, AgentctlError) else e for e in errors]
        print(dumps(envelope(data, schema=schema, ok=ok, errors=errs)), flush=True)
        self._emitted = True

    def info(self, message: str) -> None:
        """`message` is markup: escape any data in it with `esc()`."""
        if not self.json_mode:
            self.err.print(message)

    def debug(self, message: str) -> None:
        """`message` is plain text (escaped here)."""
        if self.verbose and not self.json_mode:
            self.err.print(f"[dim]{esc(message)}[/dim]")

    def warn(self, message: str) -> None:
        """`message` is plain text (escaped here)."""
        self.err.print(f"[yellow]warning:[/yellow] {esc(message)}")

    def error(self, exc: AgentctlError) -> None:
        self.err.print(f"[red]error:[/red] {esc(exc)}", markup=True, highlight=False)
        if exc.hint:
            self.err.print(f"  hint: {esc(exc.hint)}")

    def print(self, renderable: Any) -> None:
        if not self.json_mode:
            self.out.print(renderable)

    @contextmanager
    def progress(self, description: str, total: int) -> Iterator[Any]:
        """A rich progress bar on stderr; silent in --json mode or when stderr is no terminal."""
        from rich.progress import (  # only a fan-out needs it, not `--help`
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        enabled = not self.json_mode and self.err.is_terminal and total > 1
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.err,
            transient=True,
            disable=not enabled,
        )
        with progress:
            task_id = progress.add_task(description, total=total)

            def advance(_outcome: HostOutcome | None = None) -> None:
                progress.advance(task_id)

            yield advance


def recap_table(recap: Recap, *, title: str = "Recap") -> Table:
    table = Table(title=title, title_justify="left", expand=False)
    for col in ("host", "status", "exit", "time", "detail"):
        table.add_column(col, justify="right" if col in ("exit", "time") else "left")
    for o in recap.outcomes:
        style = STATUS_STYLE[o.status]
        detail = o.message or ""
        if o.error is not None:
            detail = f"{o.error.kind}: {o.error.message}"
        exit_status = "" if o.result is None else str(o.result.exit_status)
        table.add_row(
            plain(o.host),
            Text(o.status.value, style=style),
            exit_status,
            f"{o.duration_s:.2f}s",
            plain(_one_line(detail, 90)),
        )
    counts = recap.counts()
    table.caption = "  ".join(f"[{STATUS_STYLE[Status(k)]}]{k}={v}[/]" for k, v in counts.items())
    return table


def _one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"
