"""`agentctl collect [--once | --interval S]`: GPU and serving telemetry into the store.

Each due host gets one SSH session per pass (nvidia-smi, then `/metrics` of its workers
through a port forward); its samples are written in one transaction, so an interrupted pass
leaves whole hosts or nothing. Hosts have their own interval (`agentctl_collect_interval`);
an unreachable host backs off (twice its interval each time, at most 10 minutes). After each
pass the rollups advance and, every few passes, retention purges in bounded batches.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from agentctl.ctl.cli.main import state
from agentctl.ctl.cli.output import plain
from agentctl.ctl.errors import ExitCode
from agentctl.ctl.fanout import FanOut, FanoutOptions, HostOutcome, Status

if TYPE_CHECKING:  # the collector, SSH and the store load when the command runs
    from agentctl.ctl.collect import HostCollection

MAX_BACKOFF_S = 600.0
PURGE_EVERY = 10


def collect(
    hosts: Annotated[list[str] | None, typer.Argument(help="Host patterns (default: all).")] = None,
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit.")] = False,
    interval: Annotated[
        float, typer.Option("--interval", min=1.0, help="Seconds between passes (default 60).")
    ] = 60.0,
    timeout: Annotated[float, typer.Option("--timeout", min=1.0, help="Per step.")] = 20.0,
    forks: Annotated[int | None, typer.Option("--forks", "-f", min=1)] = None,
) -> None:
    """Collect GPU (nvidia-smi), Xid (kernel log) and serving (/metrics over SSH) telemetry
    into the store."""
    from agentctl.ctl.collect import Collector, store_task
    from agentctl.ctl.connect import Connections

    st = state()
    chosen = st.select(hosts)
    store = st.store()
    conns = Connections(st.settings(), st.inventory())
    # the pass spacing is stored with the samples (`collect.interval_s`): the dashboards
    # judge staleness by it; a one-off pass (cron, by hand) has no spacing to record
    collector = Collector(timeout=timeout, store=store, interval_s=None if once else interval)
    got: dict[str, HostCollection] = {}

    task = store_task(collector, store, got)

    options = FanoutOptions(forks=forks or st.settings().forks, connect_retries=0)
    due = {h.name: 0.0 for h in chosen}
    failures = {h.name: 0 for h in chosen}
    passes = 0
    try:
        while True:
            now = time.monotonic()
            batch = [h for h in chosen if due[h.name] <= now]
            recap = None
            if batch:
                with st.output.progress("collect", len(batch)) as advance:
                    fan = FanOut(conns.connect, task, name_of=lambda h: h.name,
                                 options=options, on_done=advance)  # fmt: skip
                    recap = fan.run(batch)
            outcomes: list[HostOutcome] = recap.outcomes if recap else []
            for o in outcomes:
                host = next(h for h in chosen if h.name == o.host)
                every = float(host.vars.get("agentctl_collect_interval", interval))
                if o.status in (Status.OK, Status.CHANGED):
                    failures[o.host] = 0
                    due[o.host] = now + every
                else:
                    failures[o.host] += 1
                    due[o.host] = now + min(every * 2 ** failures[o.host], MAX_BACKOFF_S)
            at = datetime.now(UTC)
            store.rollup(at)
            passes += 1
            if passes % PURGE_EVERY == 0:
                store.purge(at)
                store.purge_events(at)
            if once:
                _report(st, outcomes, got)
                bad = [o for o in outcomes if o.status not in (Status.OK, Status.CHANGED)]
                if bad:
                    raise typer.Exit(ExitCode.UNREACHABLE)
                return
            total = sum(len(got[o.host].samples) for o in outcomes if o.host in got)
            st.output.info(f"pass {passes}: {len(outcomes)} host(s), {total} samples")
            time.sleep(max(0.2, min(due.values()) - time.monotonic()))
    except KeyboardInterrupt:
        st.output.info("stopped; every pass written so far is complete in the store")
        raise typer.Exit(ExitCode.INTERRUPTED) from None


def _report(st: Any, outcomes: list[HostOutcome], got: dict[str, HostCollection]) -> None:
    rows = []
    for o in outcomes:
        row: dict[str, Any] = {"host": o.host, "status": o.status.value, "message": o.message}
        if o.host in got:
            row.update(got[o.host].to_dict())
        rows.append(row)
    data = {"hosts": rows}
    ok = all(o.status in (Status.OK, Status.CHANGED) for o in outcomes)
    st.output.emit(
        data, schema="agentctl.collect/1", ok=ok, errors=[o.error for o in outcomes if o.error]
    )
    table = Table(title="Collection pass", title_justify="left")
    for col in ("host", "status", "gpus", "endpoints", "samples", "problems"):
        table.add_column(col)
    for o in outcomes:
        hc = got.get(o.host)
        table.add_row(
            plain(o.host), plain(o.status.value), plain(hc.gpus if hc else "-"),
            plain(hc.endpoints if hc else "-"), plain(len(hc.samples) if hc else "-"),
            plain("; ".join(hc.problems) if hc else (o.message or "")),
        )  # fmt: skip
    st.output.print(table)
