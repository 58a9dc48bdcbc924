"""`agentctl hosts trust|list`: host keys are trusted deliberately, never automatically."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from agentctl.ctl.cli.main import state
from agentctl.ctl.cli.output import esc, plain
from agentctl.ctl.cli.state import State
from agentctl.ctl.errors import AgentctlError, ExitCode, HostKeyError
from agentctl.ctl.fanout import default_forks

if TYPE_CHECKING:  # SSH (paramiko) loads when a command runs
    from agentctl.ctl.connect import Connections
    from agentctl.ctl.inventory import Host
    from agentctl.ctl.ssh.trust import HopKey

app = typer.Typer(
    help="Trust and list SSH host keys (agentctl's own known_hosts).", no_args_is_help=True
)


@app.command("trust")
def trust(
    hosts: Annotated[
        list[str] | None,
        typer.Argument(help="Hosts or patterns; none means every host selected by --limit."),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Record without asking.")] = False,
    forks: Annotated[int | None, typer.Option("--forks", "-f", min=1)] = None,
) -> None:
    """Fetch host keys, show their SHA256 fingerprints, and record them after confirmation.

    A changed key is never replaced here: it is reported (exit 5) until the old entry is removed
    by hand. Jump hosts are trusted first, then the hosts behind them.
    """
    from agentctl.ctl.connect import Connections, is_local
    from agentctl.ctl.ssh.trust import record

    st = state()
    selected = [h for h in st.select(hosts) if not is_local(h)]
    conns = Connections(st.settings(), st.inventory())
    rows: list[dict[str, Any]] = []
    errors: list[AgentctlError] = []
    recorded_keys: set[tuple[str, str]] = set()
    pending_hosts = list(selected)
    # Each round trusts one more hop of every chain; a chain of depth d needs d+1 rounds.
    for _round in range(10):
        if not pending_hosts:
            break
        new: dict[tuple[str, str], HopKey] = {}
        finished: list[tuple[Host, HopKey]] = []
        blocked: list[Host] = []
        for host, found in _probe_all(conns, pending_hosts, forks):
            if isinstance(found, AgentctlError):
                errors.append(found)
                rows.append({"host": host.name, "state": "error", "error": found.message})
                continue
            last = found[-1]
            reached_target = len(found) == len(conns.target(host).jumps) + 1
            if last.state == "changed":
                errors.append(
                    HostKeyError(
                        f"host key CHANGED for {last.hop.known_hosts_key}: offered "
                        f"{last.info.key_type} {last.info.fingerprint}; not replacing it",
                        host=last.hop.name,
                        changed=True,
                        hint=f"if expected, remove the old entry from {conns.known_hosts.path}",
                    )
                )
                rows.append(_row(host, last, "changed"))
            elif last.state == "known":
                rows.append(_row(host, last, "trusted"))
            else:
                new.setdefault((last.info.host, last.info.base64), last)
                if reached_target:
                    finished.append((host, last))
                else:
                    blocked.append(host)  # behind an unknown jump host: probe again next round
        if not new:
            break
        _confirm(st, conns, list(new.values()), rows, yes)
        for key, hop_key in new.items():
            if record(conns.known_hosts, hop_key.info):
                recorded_keys.add(key)
        rows.extend(_row(host, k, "recorded") for host, k in finished)
        pending_hosts = blocked
    ok = not errors
    st.output.emit(
        {"hosts": rows, "recorded": len(recorded_keys)},
        schema="agentctl.hosts.trust/1",
        ok=ok,
        errors=errors,
    )
    summary = Table(title="Trust", title_justify="left")
    for col in ("host", "state", "type", "fingerprint"):
        summary.add_column(col, overflow="fold")
    for r in rows:
        summary.add_row(
            plain(r["host"]),
            plain(r["state"]),
            plain(r.get("key_type", "")),
            plain(r.get("fingerprint", r.get("error", ""))),
        )
    st.output.print(summary)
    if errors:
        codes = {int(e.exit_code) for e in errors}
        raise typer.Exit(
            ExitCode.HOST_KEY_OR_AUTH if ExitCode.HOST_KEY_OR_AUTH in codes else max(codes)
        )


def _confirm(
    st: State, conns: Connections, keys: list[HopKey], rows: list[dict[str, Any]], yes: bool
) -> None:
    table = Table(title="Host keys not yet trusted", title_justify="left")
    for col in ("host", "address", "type", "fingerprint"):
        table.add_column(col, overflow="fold")
    for k in keys:
        table.add_row(
            plain(k.hop.name), plain(k.info.host), plain(k.info.key_type), plain(k.info.fingerprint)
        )
    st.output.print(table)
    if yes:
        return
    if st.json or not st.output.interactive:
        st.output.emit(
            {"pending": [_key_dict(k) for k in keys], "hosts": rows},
            schema="agentctl.hosts.trust/1",
            ok=False,
            errors=[{"kind": "usage", "message": "confirmation needed: re-run with --yes"}],
        )
        st.output.info("[red]not recorded:[/red] no terminal to confirm on; re-run with --yes")
        raise typer.Exit(ExitCode.USAGE)
    if not typer.confirm(
        f"Record {len(keys)} key(s) in {conns.known_hosts.path}?", default=False, err=True
    ):
        raise typer.Exit(ExitCode.HOST_KEY_OR_AUTH)


def _probe_all(
    conns: Connections, hosts: list[Host], forks: int | None
) -> list[tuple[Host, list[HopKey] | AgentctlError]]:
    from agentctl.ctl.ssh.trust import probe_chain

    def one(host: Host) -> tuple[Host, list[HopKey] | AgentctlError]:
        try:
            target = conns.target(host)
            return host, probe_chain(target, conns.known_hosts, conns.options, conns.aborter)
        except AgentctlError as exc:
            exc.host = exc.host or host.name
            return host, exc

    pool = ThreadPoolExecutor(max_workers=forks or default_forks(len(hosts)))
    try:
        return list(pool.map(one, hosts))
    except BaseException:
        # Ctrl-C: cut the handshakes in flight short instead of waiting out their timeouts.
        conns.abort()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _key_dict(k: HopKey) -> dict[str, str]:
    return {"address": k.info.host, "key_type": k.info.key_type, "fingerprint": k.info.fingerprint}


def _row(host: Host, k: HopKey, what: str) -> dict[str, str]:
    return {"host": host.name, "state": what, **_key_dict(k)}


@app.command("list")
def list_keys() -> None:
    """Each selected host's trust state, from the known_hosts file alone (no network)."""
    from agentctl.ctl.connect import Connections, is_local

    st = state()
    conns = Connections(st.settings(), st.inventory())
    rows: list[dict[str, Any]] = []
    for host in st.select():
        if is_local(host):
            rows.append({"host": host.name, "address": "local", "trusted": True, "types": []})
            continue
        target = conns.target(host)
        types = conns.known_hosts.key_types(target.known_hosts_key)
        rows.append(
            {
                "host": host.name,
                "address": target.known_hosts_key,
                "trusted": bool(types),
                "types": types,
            }
        )
    st.output.emit(
        {"known_hosts": str(conns.known_hosts.path), "hosts": rows}, schema="agentctl.hosts.list/1"
    )
    table = Table(title=f"Host keys ({esc(conns.known_hosts.path)})", title_justify="left")
    for col in ("host", "address", "trusted", "types"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(
            plain(r["host"]),
            plain(r["address"]),
            "yes" if r["trusted"] else "[red]no[/red]",
            plain(",".join(r["types"])),
        )
    st.output.print(table)
