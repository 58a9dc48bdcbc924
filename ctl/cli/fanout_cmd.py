"""What `run` and `facts` share: fan-out flags, host selection with --rerun-failed, the recap."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agentctl.ctl.cli.output import recap_table
from agentctl.ctl.cli.state import State
from agentctl.ctl.errors import UsageError
from agentctl.ctl.fanout import FanoutOptions, TaskOutput

if TYPE_CHECKING:  # SSH (paramiko) and the store (SQLAlchemy) load when a command runs
    from agentctl.ctl.connect import Connections
    from agentctl.ctl.connector import Connector
    from agentctl.ctl.inventory import Host
    from agentctl.ctl.runner import RunReport

Forks = Annotated[
    int | None, typer.Option("--forks", "-f", min=1, help="Parallel hosts (default: derived).")
]
Batch = Annotated[
    str | None,
    typer.Option("--batch", help="Rolling batches, Ansible 'serial' style: 1,10%,100%."),
]
MaxFail = Annotated[
    float | None,
    typer.Option(
        "--max-fail-percent",
        min=0,
        max=100,
        help="Stop before the next batch when a batch's failures exceed this.",
    ),
]
RerunFailed = Annotated[
    int | None,
    typer.Option(
        "--rerun-failed",
        metavar="RUN",
        help="Only the hosts that failed or were unreachable in run RUN.",
    ),
]
Timeout = Annotated[
    float | None, typer.Option("--timeout", min=0.1, help="Deadline per remote step, seconds.")
]


def fanout_options(
    st: State, forks: int | None, batch: str | None, max_fail: float | None
) -> FanoutOptions:
    s = st.settings()
    return FanoutOptions(
        forks=forks or s.forks,
        batch=batch,
        max_fail_percent=s.max_fail_percent if max_fail is None else max_fail,
        connect_retries=s.connect_retries,
        retry_backoff=s.retry_backoff,
    )


def select_hosts(st: State, rerun_failed: int | None) -> list[Host]:
    hosts = st.select()
    if rerun_failed is None:
        return hosts
    previous = st.store().get_run(rerun_failed)
    if previous is None:
        raise UsageError(f"--rerun-failed: no run with id {rerun_failed}")
    wanted = set(st.store().hosts_with_status(rerun_failed))
    chosen = [h for h in hosts if h.name in wanted]
    if not chosen:
        raise UsageError(f"run {rerun_failed} has no failed or unreachable hosts to rerun")
    return chosen


def execute(
    st: State,
    *,
    kind: str,
    hosts: list[Host],
    task: Callable[[Connector, Host], TaskOutput],
    options: FanoutOptions,
    command: str | None,
    run_options: dict[str, Any],
    schema: str,
    render: Callable[[RunReport], None] | None = None,
    conns: Connections | None = None,
    emit: bool = True,
    host_progress: bool = True,
    raw_output: bool = False,
) -> RunReport:
    """One recorded fan-out pass, rendered. `host_progress=False` when the task shows its own
    (per-step) progress: a terminal holds one live display at a time. The store gets the
    output redacted unless `raw_output` (see `run_output`)."""
    from agentctl.ctl.connect import Connections
    from agentctl.ctl.runner import run_recorded

    conns = conns or Connections(st.settings(), st.inventory())
    for warning in conns.warnings:
        st.output.warn(warning)
    with st.output.progress(kind, len(hosts) if host_progress else 0) as advance:
        report = run_recorded(
            st.store(),
            kind=kind,
            hosts=hosts,
            task=task,
            connect=conns.connect,
            options=options,
            command=command,
            selection=st.limit,
            run_options=run_options,
            on_done=advance,
            on_cancel=conns.abort,
            raw_output=raw_output,
        )
    recap = report.recap
    errors = [o.error for o in recap.outcomes if o.error is not None]
    if emit:
        st.output.emit(report.to_dict(), schema=schema, ok=recap.ok, errors=errors)
    if render is not None:
        render(report)
    st.output.print(recap_table(recap, title=f"Run {report.run_id}: {kind}"))
    if recap.aborted:
        st.output.info("[red]stopped: --max-fail-percent exceeded; remaining hosts skipped[/red]")
    return report


def finish(report: RunReport) -> None:
    code = int(report.recap.exit_code)
    if code:
        raise typer.Exit(code)
