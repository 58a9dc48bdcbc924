"""The `agentctl` command: global options, sub-commands, and the one place errors become exit codes.

Exit codes: 0 ok, 1 error, 2 usage, 3 some hosts failed, 4 hosts unreachable (none failed),
5 host key or auth refused, 6 verification failed, 130 interrupted.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from agentctl.ctl import __version__
from agentctl.ctl.cli.lazy import LazyCommand, LazyGroup
from agentctl.ctl.cli.output import Output
from agentctl.ctl.cli.state import State
from agentctl.ctl.errors import AgentctlError, ExitCode

EPILOG = (
    "Exit codes: 0 ok, 1 error, 2 usage, 3 some hosts failed, 4 hosts unreachable, "
    "5 host key or auth refused, 6 verification failed, 130 interrupted."
)


def _cmd(module: str, attr: str, help: str, **context_settings: Any) -> LazyCommand:
    return LazyCommand(f"agentctl.ctl.cli.{module}", attr, help, context_settings or None)


# Every command, in `agentctl --help` order; a module is imported only when its command runs.
# `help` is the listing's line: the first sentence of the command's own help (a test keeps
# them equal).
COMMANDS: dict[str, LazyCommand] = {
    "watch": _cmd(
        "dashboard_cmd", "watch", "The terminal dashboard: fleet, nodes, serving; `?` for keys."
    ),
    "export": _cmd(
        "export_cmd",
        "export_cmd",
        "Export for SIEM and CMDB: JSON Lines with a header and a count+sha256 trailer.",
    ),
    "run": _cmd(
        "run_cmd",
        "run",
        "Run one command on the selected hosts, in parallel, and record the run (its output "
        "stored with secrets redacted).",
        allow_interspersed_args=False,
    ),
    "facts": _cmd(
        "facts_cmd",
        "facts",
        "OS, kernel, CPU, memory, disks, NICs, systemd, NVIDIA driver, CUDA, GPUs, PCI devices.",
    ),
    "nodes": _cmd(
        "nodes_cmd",
        "nodes",
        "Every known node with its latest facts: OS, kernel, driver, GPUs, last seen.",
    ),
    "demo": _cmd(
        "demo_cmd",
        "demo",
        "Start a local fleet of sshd nodes, trust them, gather facts, provision and deploy the "
        "serving stack (KV-aware router + simulated workers) from an offline bundle, send agent "
        "sessions through the router, and show it all.",
    ),
    "collect": _cmd(
        "collect_cmd",
        "collect",
        "Collect GPU (nvidia-smi), Xid (kernel log) and serving (/metrics over SSH) telemetry "
        "into the store.",
    ),
    "provision": _cmd(
        "playbook_cmd",
        "provision",
        "Packages, driver pin, user, directories, and the agentctl serving package on nodes.",
    ),
    "deploy": _cmd(
        "playbook_cmd",
        "deploy",
        "The router on router nodes and engine workers on worker nodes, health-checked.",
    ),
    "lifecycle": _cmd(
        "playbook_cmd",
        "lifecycle",
        "Run one lifecycle phase's playbook (NVIDIA's fleet lifecycle).",
    ),
    "drain": _cmd(
        "playbook_cmd",
        "drain",
        "Stop routing new requests to NODE's workers on every router; in-flight ones finish.",
    ),
    "undrain": _cmd("playbook_cmd", "undrain", "Route new requests to NODE's workers again."),
    "inventory": _cmd("inventory_cmd", "app", "Validate and show the inventory."),
    "hosts": _cmd("hosts_cmd", "app", "Trust and list SSH host keys (agentctl's own known_hosts)."),
    "runs": _cmd("runs_cmd", "app", "Recorded runs and their per-host results."),
    "config": _cmd("config_cmd", "app", "Settings and paths."),
    "bench": _cmd("bench_cmd", "app", "Benchmarks (run on demand, not in the test suite)."),
    "serve": _cmd(
        "serve_cmd", "app", "Run the bundled serving stack (router, simulated engine workers)."
    ),
    "bundle": _cmd(
        "bundle_cmd",
        "app",
        "Air-gapped bundles: wheels, playbooks, apt packages and cloud-init seeds, signed.",
    ),
    "metrics": _cmd(
        "metrics_cmd",
        "app",
        "The fleet's latest telemetry as Prometheus metrics (dcgm-exporter and vLLM names).",
    ),
    "diag": _cmd("diag_cmd", "app", "Diagnostics: L1 health, L2 evidence bundles, reboot causes."),
    "dashboard": _cmd("dashboard_cmd", "dashboard_app", "The web dashboard."),
    "users": _cmd("dashboard_cmd", "users_app", "Dashboard users and API tokens."),
    "playbook": _cmd(
        "playbook_cmd", "app", "Run playbooks (the lifecycle phases are also top-level commands)."
    ),
}


class RootGroup(LazyGroup):
    LAZY = COMMANDS


app = typer.Typer(
    name="agentctl",
    help="Ops and diagnostics for GPU inference fleets serving coding agents.",
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    cls=RootGroup,
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
