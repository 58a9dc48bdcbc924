"""The `agentctl` command: global options, sub-commands, and the one place errors become exit codes.

Exit codes: 0 ok, 1 error, 2 usage, 3 some hosts failed, 4 hosts unreachable (none failed),
5 host key or auth refused, 6 verification failed, 130 interrupted.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from agentctl.ctl import __version__
from agentctl.ctl.cli.output import Output
from agentctl.ctl.cli.state import State
from agentctl.ctl.errors import AgentctlError, ExitCode

EPILOG = (
    "Exit codes: 0 ok, 1 error, 2 usage, 3 some hosts failed, 4 hosts unreachable, "
    "5 host key or auth refused, 6 verification failed, 130 interrupted."
)

app = typer.Typer(
    name="agentctl",
    help="Ops and diagnostics for GPU inference fleets serving coding agents.",
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

_STATE = State()


def state() -> State:
    return _STATE


def _version(value: bool) -> None:
    if value:
        print(f"agentctl {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    inventory: Annotated[
        str | None,
        typer.Option(
            "--inventory",
            "-i",
            help="Ansible YAML inventory file, or 'h1,h2,' list.",
            envvar="AGENTCTL_INVENTORY",
            show_envvar=False,
        ),
    ] = None,
    limit: Annotated[
        str | None,
        typer.Option("--limit", "-l", help="Host pattern (Ansible syntax: web*,&gpu,!node3)."),
    ] = None,
    json_: Annotated[
        bool,
        typer.Option("--json", help="Print exactly one JSON envelope on stdout; never prompt."),
    ] = False,
    verbose: Annotated[int, typer.Option("-v", "--verbose", count=True, help="More detail.")] = 0,
    config: Annotated[
        Path | None, typer.Option("--config", help="Settings file (default: XDG config.toml).")
    ] = None,
    version: Annotated[
        bool | None,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = None,
) -> None:
    _STATE.inventory_path = inventory
    _STATE.limit = limit
    _STATE.json = _STATE.json or json_
    _STATE.verbose = verbose
    _STATE.config_file = config
    _STATE.output = Output(json_mode=_STATE.json, verbose=verbose)


def _register() -> None:
    from agentctl.ctl.cli import (
        bench_cmd,
        bundle_cmd,
        collect_cmd,
        config_cmd,
        dashboard_cmd,
        demo_cmd,
        diag_cmd,
        export_cmd,
        facts_cmd,
        hosts_cmd,
        inventory_cmd,
        metrics_cmd,
        nodes_cmd,
        playbook_cmd,
        run_cmd,
        runs_cmd,
        serve_cmd,
    )

    app.add_typer(inventory_cmd.app, name="inventory")
    app.add_typer(hosts_cmd.app, name="hosts")
    app.add_typer(runs_cmd.app, name="runs")
    app.add_typer(config_cmd.app, name="config")
    app.add_typer(bench_cmd.app, name="bench")
    app.add_typer(serve_cmd.app, name="serve")
    app.add_typer(bundle_cmd.app, name="bundle")
    app.add_typer(metrics_cmd.app, name="metrics")
    app.add_typer(diag_cmd.app, name="diag")
    app.add_typer(dashboard_cmd.dashboard_app, name="dashboard")
    app.add_typer(dashboard_cmd.users_app, name="users")
    app.command("watch")(dashboard_cmd.watch)
    app.command("export")(export_cmd.export_cmd)
    bench_cmd.app.command("replay", context_settings=serve_cmd.PASS_THROUGH)(serve_cmd.replay)
    app.command("run", context_settings={"allow_interspersed_args": False})(run_cmd.run)
    app.command("facts")(facts_cmd.facts)
    app.command("nodes")(nodes_cmd.nodes)
    app.command("demo")(demo_cmd.demo)
    app.command("collect")(collect_cmd.collect)
    app.add_typer(playbook_cmd.app, name="playbook")
    app.command("provision")(playbook_cmd.provision)
    app.command("deploy")(playbook_cmd.deploy)
    app.command("lifecycle")(playbook_cmd.lifecycle)
    app.command("drain")(playbook_cmd.drain)
    app.command("undrain")(playbook_cmd.undrain)


_register()


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the CLI and map every failure to a documented exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    global _STATE
    _STATE = State(json="--json" in args[: args.index("--") if "--" in args else len(args)])
    _STATE.output = Output(json_mode=_STATE.json)
    command = typer.main.get_command(app)
    # A service manager's SIGTERM stops a fan-out the same way Ctrl-C does: cleanly, exit 130.
    with contextlib.suppress(ValueError):  # not the main thread (embedded use)
        signal.signal(signal.SIGTERM, _raise_interrupt)
    code: int = ExitCode.OK
    try:
        result = command.main(args, prog_name="agentctl", standalone_mode=False)
        code = int(result) if isinstance(result, int) else ExitCode.OK
    except typer.Exit as exc:
        code = exc.exit_code
    except typer.Abort:
        code = _fail(AgentctlError("aborted"), ExitCode.INTERRUPTED)
    except typer.TyperException as exc:  # click's usage errors, vendored by typer
        if _STATE.json:
            _STATE.output.emit(
                None,
                schema="agentctl.error/1",
                ok=False,
                errors=[{"kind": "usage", "message": exc.format_message()}],
            )
        else:
            show = getattr(exc, "show", None)
            if callable(show):  # usage line plus message, as click prints it
                show()
            else:
                _STATE.output.err.print(f"error: {exc.format_message()}", markup=False)
        code = ExitCode.USAGE
    except AgentctlError as exc:
        code = _fail(exc, exc.exit_code)
    except KeyboardInterrupt:
        code = _fail(AgentctlError("interrupted"), ExitCode.INTERRUPTED)
    finally:
        _STATE.close()
    return code


def _raise_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _fail(exc: AgentctlError, code: int) -> int:
    out = _STATE.output
    if out.json_mode:
        out.emit(None, schema="agentctl.error/1", ok=False, errors=[exc])
    else:
        out.error(exc)
    return code


def run() -> None:
    sys.exit(main())
