"""`agentctl nodes`: the fleet table, from what the store knows (no network)."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text

from agentctl.ctl.cli.main import state
from agentctl.ctl.cli.output import esc, plain
from agentctl.ctl.envelope import utc_now_iso

if TYPE_CHECKING:  # the store (SQLAlchemy) loads when a command runs
    from agentctl.collectors.store import NodeView


def node_dict(n: NodeView) -> dict[str, Any]:
    d = asdict(n)
    d["last_seen"] = utc_now_iso(n.last_seen) if n.last_seen else None
    return d


def fleet_table(nodes: list[NodeView], *, title: str = "Fleet") -> Table:
    table = Table(title=esc(title), title_justify="left")
    for col in ("node", "address", "roles", "os", "kernel", "driver", "gpus", "last seen"):
        table.add_column(col)
    for n in nodes:
        if n.gpu_count is None:
            gpus = Text("?")
        elif n.gpu_count == 0:
            gpus = Text("none")
        else:
            gpus = Text(f"{n.gpu_count}x {', '.join(sorted(set(n.gpu_names)))}")
        if (
            n.expected_gpus is not None
            and n.gpu_count is not None
            and n.gpu_count != n.expected_gpus
        ):
            gpus.append(f" (expected {n.expected_gpus})")
            gpus.stylize("red")
        table.add_row(
            plain(n.name),
            plain(f"{n.address}:{n.port or 22}"),
            plain(",".join(n.roles)),
            plain(n.os or "?"),
            plain(n.kernel or "?"),
            plain(n.driver_version or "-"),
            gpus,
            utc_now_iso(n.last_seen) if n.last_seen else "never",
        )
    return table


def nodes() -> None:
    """Every known node with its latest facts: OS, kernel, driver, GPUs, last seen."""
    st = state()
    views = st.store().list_nodes()
    st.output.emit({"nodes": [node_dict(n) for n in views]}, schema="agentctl.nodes/1")
    st.output.print(fleet_table(views))
    if not views:
        from agentctl.ctl.cli.hints import empty_store

        empty_store(st, "nodes", "`agentctl -i INVENTORY facts` records them")
