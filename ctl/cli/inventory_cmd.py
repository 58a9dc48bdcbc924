"""`agentctl inventory check|show`: validate and display the inventory, without touching a host."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from agentctl.ctl.cli.main import state
from agentctl.ctl.cli.output import esc, plain

app = typer.Typer(help="Validate and show the inventory.", no_args_is_help=True)


@app.command("check")
def check() -> None:
    """Parse and validate the inventory; errors name the file, line and field."""
    st = state()
    inv = st.inventory()
    hosts = st.select()
    data = {
        "path": inv.path,
        "hosts": len(inv.hosts),
        "selected": len(hosts),
        "groups": sorted(inv.groups),
        "roles": {h.name: list(h.roles) for h in hosts if h.roles},
    }
    st.output.emit(data, schema="agentctl.inventory.check/1")
    st.output.print(
        f"[green]ok[/green] {esc(inv.path or 'inline list')}: {len(inv.hosts)} hosts, "
        f"{len(inv.groups)} groups" + (f", {len(hosts)} selected by --limit" if st.limit else "")
    )


@app.command("show")
def show(
    host: Annotated[str | None, typer.Argument(help="Show one host's merged variables.")] = None,
) -> None:
    """Hosts with their groups, connection values and merged variables (secrets masked)."""
    st = state()
    hosts = st.select([host] if host else None)
    data = [h.to_public_dict() for h in hosts]
    st.output.emit({"hosts": data}, schema="agentctl.inventory.show/1")
    if host:
        st.output.print(data[0])
        return
    table = Table(title="Inventory", title_justify="left")
    for col in ("host", "address", "port", "user", "groups", "roles", "jump"):
        table.add_column(col)
    for h in hosts:
        table.add_row(
            plain(h.name),
            plain(h.address),
            str(h.port or 22),
            plain(h.user or ""),
            plain(",".join(g for g in h.groups if g != "all")),
            plain(",".join(h.roles)),
            plain(h.proxy_jump or ""),
        )
    st.output.print(table)
