"""`agentctl demo`: the main job on an embedded default, a local fleet, end to end."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from agentctl.ctl.cli.facts_cmd import facts_task, node_record
from agentctl.ctl.cli.main import state
from agentctl.ctl.cli.nodes_cmd import fleet_table, node_dict
from agentctl.ctl.cli.output import esc, plain, recap_table
from agentctl.ctl.connect import Connections, is_local
from agentctl.ctl.demo import start_demo_fleet
from agentctl.ctl.errors import HostsFailed
from agentctl.ctl.facts import FAMILIES
from agentctl.ctl.fanout import FanoutOptions
from agentctl.ctl.runner import run_recorded
from agentctl.ctl.ssh.trust import probe_chain, record


def demo(
    nodes: Annotated[int, typer.Option("--nodes", "-n", min=1, max=50, help="Fleet size.")] = 3,
    directory: Annotated[
        Path | None, typer.Option("--dir", help="Where the demo keeps its fleet and database.")
    ] = None,
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the fleet running until Ctrl-C.")
    ] = False,
) -> None:
    """Start a local fleet of sshd nodes, trust them, gather facts, store them, show the fleet."""
    st = state()
    base = st.settings()
    root = (directory or base.state_dir / "demo").expanduser()
    st.output.info(f"[bold]agentctl demo[/bold]: a local fleet of {nodes} node(s) in {esc(root)}")
    # The demo owns its known_hosts: start it afresh, since ports change on every run.
    (root / "known_hosts").unlink(missing_ok=True)
    demo_fleet = start_demo_fleet(root, nodes)
    try:
        for note in demo_fleet.notes:
            st.output.warn(note)
        # The demo owns its own database and known_hosts, so it never touches the operator's.
        st._settings = base.with_overrides(
            {
                "database_url": f"sqlite:///{root / 'agentctl.db'}",
                "known_hosts": root / "known_hosts",
                "use_ssh_config": False,
            },
            source="demo",
        )
        st.inventory_path = str(demo_fleet.inventory_path)
        st._inventory = None
        hosts = st.select()
        conns = Connections(st.settings(), st.inventory())

        trusted = Table(
            title="Host keys (checked against the generated key files)", title_justify="left"
        )
        for col in ("node", "address", "fingerprint", "state"):
            trusted.add_column(col, overflow="fold")
        for host in hosts:
            if is_local(host):
                trusted.add_row(plain(host.name), "local", "-", "local connector")
                continue
            target = conns.target(host)
            for hop_key in probe_chain(target, conns.known_hosts, conns.options, conns.aborter):
                if hop_key.state != "known":
                    demo_fleet.verify_fingerprint(hop_key.info.host, hop_key.info.fingerprint)
                    record(conns.known_hosts, hop_key.info)
                trusted.add_row(
                    plain(host.name),
                    plain(hop_key.info.host),
                    plain(hop_key.info.fingerprint),
                    "trusted" if hop_key.state == "known" else "recorded",
                )
        st.output.print(trusted)

        store = st.store()
        store.upsert_nodes(node_record(h) for h in hosts)
        started = time.monotonic()
        with st.output.progress("facts", len(hosts)) as advance:
            report = run_recorded(
                store,
                kind="facts",
                hosts=hosts,
                task=facts_task(store, FAMILIES, 60.0),
                connect=conns.connect,
                options=FanoutOptions(),
                command="facts (demo)",
                selection=None,
                run_options={"demo": True},
                on_done=advance,
                on_cancel=conns.abort,
            )
        elapsed = time.monotonic() - started
        st.output.print(recap_table(report.recap, title=f"Run {report.run_id}: facts"))
        views = store.list_nodes()
        st.output.print(fleet_table(views, title=f"Fleet ({demo_fleet.mode} nodes)"))
        st.output.info(
            f"facts from {len(hosts)} node(s) in {elapsed:.2f}s; stored in "
            f"{esc(root / 'agentctl.db')} (run {report.run_id})"
        )
        data = {
            "mode": demo_fleet.mode,
            "directory": str(root),
            "inventory": str(demo_fleet.inventory_path),
            "database": st.settings().effective_database_url(),
            "run": report.to_dict(),
            "nodes": [node_dict(n) for n in views],
        }
        ok = report.recap.ok
        st.output.emit(
            data,
            schema="agentctl.demo/1",
            ok=ok,
            errors=[o.error for o in report.recap.outcomes if o.error],
        )
        if keep and demo_fleet.fleet is not None:
            st.output.info(
                "fleet running; Ctrl-C stops it. Try:\n  "
                f"AGENTCTL_KNOWN_HOSTS={esc(root / 'known_hosts')} "
                f"AGENTCTL_DATABASE_URL=sqlite:///{esc(root / 'agentctl.db')} "
                f"agentctl -i {esc(demo_fleet.inventory_path)} run -- uname -a"
            )
            while True:
                time.sleep(3600)
        if not ok:
            raise HostsFailed("some demo nodes failed; see the recap above")
    finally:
        demo_fleet.stop()
