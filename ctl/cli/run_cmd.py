"""`agentctl run [--sudo] -- CMD ARGS...`: an ad-hoc command on every selected host."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Annotated

import typer

from agentctl.ctl.cli.fanout_cmd import (
    Batch,
    Forks,
    MaxFail,
    RerunFailed,
    Timeout,
    execute,
    fanout_options,
    finish,
    select_hosts,
)
from agentctl.ctl.cli.main import state
from agentctl.ctl.cli.output import esc
from agentctl.ctl.errors import UsageError
from agentctl.ctl.fanout import Status, TaskOutput

if TYPE_CHECKING:
    from agentctl.ctl.connector import Connector
    from agentctl.ctl.inventory import Host


def run(
    command: Annotated[
        list[str] | None,
        typer.Argument(help="The command and its arguments, after `--`. Each is quoted."),
    ] = None,
    sudo: Annotated[
        bool, typer.Option("--sudo", help="Run through sudo (non-interactive).")
    ] = False,
    become_user: Annotated[
        str | None, typer.Option("--become-user", help="sudo to this user (default root).")
    ] = None,
    timeout: Timeout = None,
    forks: Forks = None,
    batch: Batch = None,
    max_fail_percent: MaxFail = None,
    rerun_failed: RerunFailed = None,
    store_raw_output: Annotated[
        bool,
        typer.Option(
            "--store-raw-output",
            help="Keep stdout/stderr unredacted: raw output then lands in the store, readable "
            "by anyone who can read the database and by dashboard operators (viewers still see "
            "it redacted). Without it, passwords, tokens and keys are redacted before the run "
            "is stored, as in exports. The command line is stored redacted either way.",
        ),
    ] = False,
) -> None:
    """Run one command on the selected hosts, in parallel, and record the run (its output
    stored with secrets redacted)."""
    from agentctl.ctl.connect import Connections
    from agentctl.ctl.diag.redact import Redactor
    from agentctl.ctl.run_output import redact_argv

    st = state()
    argv = list(command or [])
    if not argv and rerun_failed is not None:
        previous = st.store().get_run(rerun_failed)
        if previous is not None and previous.kind == "run":
            if previous.options.get("argv_redacted"):
                raise UsageError(
                    f"run {rerun_failed}'s command carried a secret and was stored redacted",
                    hint=f"give it again: agentctl run --rerun-failed {rerun_failed} -- CMD ...",
                )
            argv = list(previous.options.get("argv", []))
            sudo = sudo or bool(previous.options.get("sudo"))
            become_user = become_user or previous.options.get("become_user")
    if not argv:
        raise UsageError("no command given: agentctl run [--sudo] -- CMD ARGS...")
    hosts = select_hosts(st, rerun_failed)
    conns = Connections(st.settings(), st.inventory())
    deadline = timeout or st.settings().command_timeout
    stored_argv, argv_redacted = redact_argv(argv, Redactor())

    def task(conn: Connector, host: Host) -> TaskOutput:
        become = conns.become_for(host, sudo=sudo, user=become_user)
        result = conn.run(argv, become=become, timeout=deadline)
        if result.ok:
            return TaskOutput(Status.OK, result)
        message = f"exit {result.exit_status}"
        if become is not None and "password is required" in result.stderr:
            message = "sudo needs a password: set sudo_password_env or NOPASSWD"
        return TaskOutput(Status.FAILED, result, message=message)

    report = execute(
        st,
        kind="run",
        hosts=hosts,
        task=task,
        options=fanout_options(st, forks, batch, max_fail_percent),
        command=shlex.join(stored_argv),
        run_options={
            "argv": stored_argv,
            "argv_redacted": argv_redacted,
            "sudo": sudo,
            "become_user": become_user,
            "rerun_of": rerun_failed,
        },
        schema="agentctl.run/1",
        conns=conns,
        raw_output=store_raw_output,
        render=lambda rep: _print_outputs(rep) if not st.json else None,
    )
    finish(report)


def _print_outputs(report) -> None:  # type: ignore[no-untyped-def]
    st = state()
    for o in report.recap.outcomes:
        if o.result is None:
            continue
        style = "green" if o.result.ok else "red"
        st.output.print(f"[{style}]── {esc(o.host)} (exit {o.result.exit_status})[/{style}]")
        if o.result.stdout:
            st.output.out.print(o.result.stdout.rstrip("\n"), markup=False, highlight=False)
        if o.result.stderr and (not o.result.ok or st.verbose):
            st.output.err.print(o.result.stderr.rstrip("\n"), markup=False, highlight=False)
