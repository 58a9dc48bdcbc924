"""`agentctl runs list|show`: every fan-out is recorded; read it back."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from agentctl.ctl.cli.main import state
from agentctl.ctl.cli.output import esc, plain
from agentctl.ctl.envelope import utc_now_iso
from agentctl.ctl.errors import UsageError

if TYPE_CHECKING:  # the store (SQLAlchemy) loads when a command runs
    from agentctl.collectors.store import RunRecord

app = typer.Typer(help="Recorded runs and their per-host results.", no_args_is_help=True)


def run_dict(run: RunRecord, *, with_output: bool) -> dict[str, Any]:
    data = asdict(run)
    data["started_at"] = utc_now_iso(run.started_at)
    data["finished_at"] = utc_now_iso(run.finished_at) if run.finished_at else None
    if not with_output:
        data.pop("results")
    return data


@app.command("list")
def list_runs(
    count: Annotated[int, typer.Option("--count", "-n", help="How many, newest first.")] = 20,
) -> None:
    """The most recent runs."""
    st = state()
    runs = st.store().list_runs(limit=count)
    st.output.emit(
        {"runs": [run_dict(r, with_output=False) for r in runs]}, schema="agentctl.runs/1"
    )
    table = Table(title="Runs", title_justify="left")
    for col in ("id", "kind", "started", "status", "recap", "command"):
        table.add_column(col)
    for r in runs:
        recap = " ".join(f"{k}={v}" for k, v in r.recap.items() if v)
        table.add_row(
            str(r.id),
            plain(r.kind),
            utc_now_iso(r.started_at),
            plain(r.status),
            plain(recap),
            plain((r.command or "")[:60]),
        )
    st.output.print(table)
    if not runs:
        from agentctl.ctl.cli.hints import empty_store

        empty_store(st, "runs", "every fan-out command (run, facts, provision, ...) records one")


@app.command("show")
def show(run_id: Annotated[int, typer.Argument(help="Run id (see `runs list`).")]) -> None:
    """One run with each host's result and bounded output."""
    st = state()
    run = st.store().get_run(run_id)
    if run is None:
        raise UsageError(f"no run with id {run_id}")
    st.output.emit(run_dict(run, with_output=True), schema="agentctl.run/1")
    table = Table(title=f"Run {run.id} ({esc(run.kind)}) {esc(run.status)}", title_justify="left")
    for col in ("host", "status", "exit", "time", "detail"):
        table.add_column(col)
    for res in run.results:
        detail = res.error_message or (res.stdout.strip().splitlines() or [""])[-1]
        table.add_row(
            plain(res.host),
            plain(res.status),
            "" if res.exit_status is None else str(res.exit_status),
            f"{res.duration_s:.2f}s",
            plain(detail[:80]),
        )
    st.output.print(table)
