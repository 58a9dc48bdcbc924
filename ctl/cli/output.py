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
        # Text is never wrapped (soft_wrap): a login line, an `AGENTCTL_...=` hint or a path
        # must stay one copyable line; the terminal folds long lines on screen by itself.
        width = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS") or 160)
        self.out = Console(no_color=no_color, highlight=False, soft_wrap=True, width=width)
        err_width = None if sys.stderr.isatty() else int(os.environ.get("COLUMNS") or 160)
        self.err = Console(
            stderr=True, no_color=no_color, highlight=False, soft_wrap=True, width=err_width
        )
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

    def copyable(self, lines: Sequence[str], *, title: str | None = None) -> None:
        """Lines meant to be copied into a shell (plain text, never wrapped, never styled),
        on stderr like the other notes, indented under an optional title."""
        if self.json_mode:
            return
        if title:
            self.err.print(title, markup=False)
        for line in lines:
            self.err.print("  " + line, markup=False, soft_wrap=True, crop=False)

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


class BuildProgress:
    """A long build's phases as lines on stderr, and what its subprocess (pip) prints: a live
    status line on a terminal, its `Collecting ...` lines elsewhere (logs), so a 30 s download
    is never one line and then silence."""

    #: pip lines worth a log line each: one per package, not per progress tick
    MILESTONES = ("Collecting ", "Processing ", "Building wheel", "Successfully ")

    def __init__(self, output: Output, prefix: str = "bundle") -> None:
        self.output = output
        self.prefix = prefix
        self._status: Any = None

    def __enter__(self) -> BuildProgress:
        if not self.output.json_mode and self.output.err.is_terminal:
            self._status = self.output.err.status(f"{self.prefix}: starting")
            self._status.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._status is not None:
            self._status.__exit__(None, None, None)

    def step(self, message: str) -> None:
        self.output.info(f"[bold]{esc(self.prefix)}:[/bold] {esc(message)}")
        if self._status is not None:
            self._status.update(esc(message))

    def line(self, text: str) -> None:
        self.output.debug(text)
        if self._status is not None:
            self._status.update(f"[dim]{esc(text[:120])}[/dim]")
        elif not self.output.verbose and text.lstrip().startswith(self.MILESTONES):
            self.output.info(f"[dim]{esc(self.prefix)}:   {esc(text.strip()[:160])}[/dim]")


class StepProgress:
    """Per host, per step progress of a multi-step pass (a playbook): on a terminal a bar per
    host with the step it finished last; elsewhere (logs, CI) one line per finished step, so a
    long provisioning is never minutes of silence followed by every host's log at once."""

    def __init__(self, output: Output, title: str, hosts: Sequence[str], steps: int) -> None:
        self.output = output
        self.title = title
        self.steps = steps
        self.seen: dict[str, set[object]] = {h: set() for h in hosts}
        self.width = max((len(h) for h in hosts), default=4)
        self._bars: Any = None  # a rich Progress, on a terminal
        self._ids: dict[str, Any] = {}

    def __enter__(self) -> StepProgress:
        out = self.output
        if not out.json_mode and out.err.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )

            self._bars = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("{task.fields[step]}"),
                console=out.err,
                transient=True,
            )
            self._bars.__enter__()
            for host in self.seen:
                self._ids[host] = self._bars.add_task(
                    f"{self.title} {host}", total=self.steps, step=""
                )
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bars is not None:
            self._bars.__exit__(None, None, None)

    @property
    def live_lines(self) -> bool:
        """Whether steps are printed as lines (no terminal): the caller's summary can be short."""
        return self._bars is None and not self.output.json_mode

    def step(self, host: str, key: object, step: str, status: str, duration_s: float) -> None:
        """`host` finished `step` (`key` tells steps apart: a loop's items share one) with
        `status`; safe from the fan-out's threads."""
        seen = self.seen.setdefault(host, set())
        seen.add(key)
        n = len(seen)
        if self._bars is not None:
            self._bars.update(self._ids[host], completed=min(n, self.steps), step=esc(step))
        elif not self.output.json_mode and (status != "skipped" or self.output.verbose):
            colour = {"changed": "yellow", "failed": "red", "skipped": "dim"}.get(status, "green")
            self.output.info(
                f"{esc(self.title)} {esc(host):{self.width}} [{n}/{self.steps}] "
                f"[{colour}]{status:7}[/{colour}] {esc(step)} [dim]({duration_s:.1f}s)[/dim]"
            )


def recap_table(recap: Recap, *, title: str = "Recap") -> Table:
    table = Table(title=title, title_justify="left", expand=False)
    for col in ("host", "status", "exit", "time"):
        table.add_column(col, justify="right" if col in ("exit", "time") else "left")
    # The cause is the point of a failed row: fold it over lines rather than cut it.
    table.add_column("detail", overflow="fold")
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
            plain(_one_line(detail, 600)),
        )
    counts = recap.counts()
    table.caption = "  ".join(f"[{STATUS_STYLE[Status(k)]}]{k}={v}[/]" for k, v in counts.items())
    return table


def _one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"
