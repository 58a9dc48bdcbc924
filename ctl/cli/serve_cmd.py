"""`agentctl serve router|worker ...`: the serving stack.

The serving package stands alone (a node runs it without the control plane), so these commands
start `python -m agentctl.serving` as a child process and pass the arguments through, rather
than importing it: the same program the deploy step installs as a service. `agentctl bench
replay` (bench_cmd) starts it the same way, with its options spelled out.
"""

from __future__ import annotations

import subprocess
import sys

import typer

PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}

app = typer.Typer(
    help="Run the bundled serving stack (router, simulated engine workers).", no_args_is_help=True
)


def run_serving(args: list[str]) -> None:
    """Run `python -m agentctl.serving ARGS` in the foreground; its exit code is ours."""
    try:
        code = subprocess.call([sys.executable, "-m", "agentctl.serving", *args])
    except KeyboardInterrupt:
        code = 130
    if code:
        raise typer.Exit(code)


@app.command("router", context_settings=PASS_THROUGH)
def router(ctx: typer.Context) -> None:
    """The KV-aware router (see `agentctl serve router --help`)."""
    run_serving(["router", *ctx.args])


@app.command("worker", context_settings=PASS_THROUGH)
def worker(ctx: typer.Context) -> None:
    """A simulated engine worker (see `agentctl serve worker --help`)."""
    run_serving(["worker", *ctx.args])
