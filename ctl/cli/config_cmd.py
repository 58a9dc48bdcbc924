"""`agentctl config paths|show`: where agentctl keeps things, and each setting's source."""

from __future__ import annotations

import typer
from rich.table import Table

from agentctl.ctl.cli.main import state
from agentctl.ctl.cli.output import plain

app = typer.Typer(help="Settings and paths.", no_args_is_help=True)


@app.command("paths")
def paths() -> None:
    """Config file, data and state directories, database and known_hosts."""
    from agentctl.ctl.settings import config_paths

    st = state()
    found = config_paths(st.settings())
    st.output.emit(found, schema="agentctl.config.paths/1")
    table = Table(title="Paths", title_justify="left")
    table.add_column("what")
    table.add_column("path")
    for key, value in found.items():
        table.add_row(plain(key), plain(value))
    st.output.print(table)


@app.command("show")
def show() -> None:
    """Every setting, its value, where it came from, and what it means."""
    from agentctl.ctl.settings import settings_sources

    st = state()
    settings = st.settings()
    sources = settings_sources(settings)
    st.output.emit(
        {"settings": settings.public_dict(), "sources": sources}, schema="agentctl.config/1"
    )
    table = Table(title="Settings", title_justify="left")
    for col in ("setting", "value", "source", "meaning"):
        table.add_column(col, overflow="fold")
    for name, value, description in settings.describe():
        table.add_row(
            plain(name), plain(value), plain(sources.get(name, "default")), plain(description)
        )
    st.output.print(table)
