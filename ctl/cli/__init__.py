"""The command-line interface (typer + rich) on top of the core."""

from agentctl.ctl.cli.main import app, main, run

__all__ = ["app", "main", "run"]
