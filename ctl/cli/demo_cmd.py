"""`agentctl demo`: the main job on an embedded default, a local fleet, end to end.

Only the options live here, so `agentctl demo --help` imports nothing heavy; the flow is in
`demo_run.py`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def demo(
    nodes: Annotated[int, typer.Option("--nodes", "-n", min=1, max=50, help="Fleet size.")] = 3,
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Where the demo keeps its fleet and database.")
    ] = None,
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the fleet running until Ctrl-C.")
    ] = False,
    serve: Annotated[
        bool,
        typer.Option(
            "--serve/--no-serve",
            help="Provision and deploy the serving stack on the fleet and send it traffic.",
        ),
    ] = True,
    replay: Annotated[
        bool,
        typer.Option("--replay/--no-replay", help="Replay Claude Code traces, kv vs round-robin."),
    ] = True,
    dashboard: Annotated[
        bool, typer.Option("--dashboard/--no-dashboard", help="Serve the web dashboard.")
    ] = True,
) -> None:
    """Start a local fleet of sshd nodes, trust them, gather facts, provision and deploy the
    serving stack (KV-aware router + simulated workers) from an offline bundle, send agent
    sessions through the router, and show it all."""
    from agentctl.ctl.cli.demo_run import run_demo

    run_demo(nodes=nodes, directory=directory, keep=keep, serve=serve, replay=replay,
             dashboard=dashboard)  # fmt: skip
