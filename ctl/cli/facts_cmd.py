"""`agentctl facts`: gather every fact family in one round trip per host, and store it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from agentctl.ctl.cli.fanout_cmd import (
    Batch,
    Forks,
    MaxFail,
    RerunFailed,
    Timeout,
    execute,
    fanout_options,
    finish,
    select_hosts,
)
from agentctl.ctl.cli.main import state
from agentctl.ctl.cli.output import plain
from agentctl.ctl.fanout import Status, TaskOutput

if TYPE_CHECKING:  # the store (SQLAlchemy) and the fact parsers load when the command runs
    from agentctl.collectors.store import NodeRecord, Store
    from agentctl.ctl.connector import Connector
    from agentctl.ctl.facts import FactFamily
    from agentctl.ctl.inventory import Host
    from agentctl.ctl.runner import RunReport


def facts(
    family: Annotated[
        list[str] | None,
        typer.Option("--family", "-F", help="Only these fact families (repeatable)."),
    ] = None,
    timeout: Timeout = None,
    forks: Forks = None,
    batch: Batch = None,
    max_fail_percent: MaxFail = None,
    rerun_failed: RerunFailed = None,
) -> None:
    """OS, kernel, CPU, memory, disks, NICs, systemd, NVIDIA driver, CUDA, GPUs, PCI devices."""
    from agentctl.ctl.facts import select_families

    st = state()
    families = select_families(family)
    hosts = select_hosts(st, rerun_failed)
    store = st.store()
    store.upsert_nodes(node_record(h) for h in hosts)
    deadline = timeout or min(st.settings().command_timeout, 60.0)
    task = facts_task(store, families, deadline)

    report = execute(
        st,
        kind="facts",
        hosts=hosts,
        task=task,
        options=fanout_options(st, forks, batch, max_fail_percent),
        command="facts " + ",".join(families),
        run_options={"families": list(families), "rerun_of": rerun_failed},
        schema="agentctl.facts/1",
        render=_render,
    )
    finish(report)


def facts_task(
    store: Store, families: Mapping[str, FactFamily], deadline: float
) -> Callable[[Connector, Host], TaskOutput]:
    """Gather, store, and report one host's facts; a parser problem is not a failure."""
    from agentctl.ctl.facts import gather_facts

    def task(conn: Connector, host: Host) -> TaskOutput:
        gathered = gather_facts(conn, families, timeout=deadline)
        store.record_facts(host.name, gathered.facts, gathered.problems, datetime.now(UTC))
        status = Status.OK if gathered.facts else Status.FAILED
        message = "; ".join(f"{k}: {v}" for k, v in gathered.problems.items()) or None
        return TaskOutput(status, gathered.result, data=gathered.facts, message=message)

    return task


def node_record(host: Host) -> NodeRecord:
    from agentctl.collectors.store import NodeRecord

    return NodeRecord(
        name=host.name,
        address=host.address,
        port=host.port,
        groups=tuple(g for g in host.groups if g != "all"),
        roles=tuple(host.roles),
        expected_gpus=host.expected_gpus,
    )


def _render(report: RunReport) -> None:
    st = state()
    table = Table(title="Facts", title_justify="left")
    for col in ("host", "os", "kernel", "cpus", "memory", "driver", "cuda", "gpus"):
        table.add_column(col)
    for o in report.recap.outcomes:
        f = o.data or {}
        if not f:
            continue
        table.add_row(plain(o.host), *(plain(cell) for cell in summary_cells(f)))
    if table.row_count:
        st.output.print(table)


def summary_cells(f: dict[str, Any]) -> list[str]:
    osf, kern, cpu, mem = (
        f.get("os", {}),
        f.get("kernel", {}),
        f.get("cpu", {}),
        f.get("memory", {}),
    )
    nv, gpus = f.get("nvidia", {}), f.get("gpus", {})
    total = mem.get("total_bytes")
    gpu_text = "none"
    if gpus.get("present"):
        names = sorted({g.get("name") or "?" for g in gpus.get("gpus", [])})
        gpu_text = f"{gpus.get('count', 0)}x {', '.join(names)}"
    elif gpus.get("error"):
        gpu_text = f"error: {gpus.get('reason')}"
    return [
        str(osf.get("pretty_name") or "?"),
        str(kern.get("release") or "?"),
        str(cpu.get("threads") or cpu.get("logical") or "?"),
        f"{total / 2**30:.1f} GiB" if isinstance(total, int | float) else "?",
        str(nv.get("driver_version") or "-"),
        str(nv.get("cuda_version") or "-"),
        gpu_text,
    ]
