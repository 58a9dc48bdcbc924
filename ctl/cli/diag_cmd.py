"""`agentctl diag l1 | l2 | reboot-cause`: health posture, evidence bundles, reboot causes.

Every probe is read-only and runs on the node with a timeout; its status is part of the output.
L1 results and reboot-cause reports are stored (diag_reports), failed and warning checks also
as events; an L2 bundle is written atomically to --out and its summary stored.

Exit codes: 0 every host judged and none failed (warnings allowed), 3 a host failed a check
(or its L2 could not be written), 4 a host was unreachable, 5 host key or auth refused.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from agentctl.ctl import __version__
from agentctl.ctl.cli.fanout_cmd import (
    Forks,
    MaxFail,
    RerunFailed,
    execute,
    fanout_options,
    finish,
    select_hosts,
)
from agentctl.ctl.cli.main import state
from agentctl.ctl.cli.output import plain
from agentctl.ctl.fanout import Status, TaskOutput

if TYPE_CHECKING:  # probes, parsers, SSH and the store load when a command runs
    from agentctl.collectors.store import EventRecord, NodeRecord, Store
    from agentctl.ctl.connector import Connector
    from agentctl.ctl.diag.l1 import L1Thresholds
    from agentctl.ctl.diag.reboot import RebootReport
    from agentctl.ctl.diag.service import L1Report
    from agentctl.ctl.inventory import Host
    from agentctl.ctl.runner import RunReport


app = typer.Typer(help="Diagnostics: L1 health, L2 evidence bundles, reboot causes.",
                  no_args_is_help=True)  # fmt: skip

Sudo = Annotated[
    bool, typer.Option("--sudo", help="Run the probes through sudo (journal, SEL, lspci -vvv).")
]
_VERDICT_STYLE = {"pass": "green", "warn": "yellow", "fail": "bold red", "skip": "dim"}
_CHECK_EVENT_WINDOW = timedelta(hours=1)


def thresholds_of(st: Any) -> L1Thresholds:
    from agentctl.ctl.diag.l1 import L1Thresholds

    t = getattr(st.settings(), "diag_l1", None)
    return t if isinstance(t, L1Thresholds) else L1Thresholds()


def _node_record(h: Host) -> NodeRecord:
    from agentctl.collectors.store import NodeRecord

    return NodeRecord(h.name, h.address, h.port, h.groups, h.roles, h.expected_gpus)


def check_events(report: dict[str, Any]) -> list[EventRecord]:
    """Failed and warning checks as events (repeats within an hour fold into one row)."""
    from agentctl.collectors.store import EventRecord

    at = datetime.fromisoformat(report["collected_at"])
    out = []
    for c in report.get("checks", []):
        if c.get("verdict") in ("fail", "warn"):
            out.append(
                EventRecord(
                    node=report["host"],
                    kind="check",
                    key=f"check:{c['name']}",
                    at=at,
                    severity="critical" if c["verdict"] == "fail" else "warn",
                    message=str(c.get("reason", ""))[:1000],
                    subject=c["name"],
                    data={"verdict": c["verdict"], "category": c.get("category")},
                )
            )
    return out


def store_l1(store: Store, report: RunReport) -> None:
    for o in report.recap.outcomes:
        data = o.data
        if isinstance(data, dict) and data.get("schema", "").startswith("agentctl.diag.l1/"):
            store.save_diag(o.host, "l1", verdict=data["verdict"],
                            summary=str(data.get("summary", "")), data=data,
                            run_id=report.run_id)  # fmt: skip
            store.record_events(check_events(data), window=_CHECK_EVENT_WINDOW)


def l1_task(
    st: Any, thresholds: L1Thresholds, sudo: bool
) -> Callable[[Connector, Host], TaskOutput]:
    from agentctl.ctl.connect import Connections
    from agentctl.ctl.diag.service import run_l1

    conns = Connections(st.settings(), st.inventory())

    def task(conn: Connector, host: Host) -> TaskOutput:
        rep: L1Report = run_l1(conn, host, thresholds, become=conns.become_for(host, sudo=sudo))
        data = {**rep.to_json(), "summary": rep.summary()}
        status = Status.FAILED if rep.verdict == "fail" else Status.OK
        return TaskOutput(status, data=data, message=rep.summary()[:200])

    return task


def _render_l1(st: Any, details: bool) -> Callable[[RunReport], None]:
    def render(report: RunReport) -> None:
        table = Table(title="L1 health", title_justify="left")
        for col in ("host", "verdict", "pass", "warn", "fail", "skip", "first problems"):
            table.add_column(col)
        hosts_detail = []
        for o in report.recap.outcomes:
            d = o.data if isinstance(o.data, dict) else None
            if d is None or "counts" not in d:
                table.add_row(plain(o.host), plain(o.status.value), "", "", "", "",
                              plain(o.error.message if o.error else (o.message or "")))  # fmt: skip
                continue
            n = d["counts"]
            v = d["verdict"]
            bad = [c for c in d["checks"] if c["verdict"] in ("fail", "warn")]
            bad.sort(key=lambda c: c["verdict"] != "fail")
            table.add_row(
                plain(o.host), f"[{_VERDICT_STYLE[v]}]{v}[/]", plain(n["pass"]), plain(n["warn"]),
                plain(n["fail"]), plain(n["skip"]),
                plain("; ".join(f"{c['name']}: {c['reason']}" for c in bad[:2])[:160]),
            )  # fmt: skip
            hosts_detail.append(d)
        st.output.print(table)
        if details or len(hosts_detail) == 1:
            for d in hosts_detail:
                st.output.print(check_table(d))

    return render


def check_table(d: dict[str, Any]) -> Table:
    t = Table(title=f"{d['host']}: {d['verdict']}", title_justify="left")
    for col in ("check", "verdict", "reason", "probes"):
        t.add_column(col)
    for c in d["checks"]:
        probes = ", ".join(f"{k}={v}" for k, v in c.get("probes", {}).items() if v != "ok")
        v = c["verdict"]
        t.add_row(plain(c["name"]), f"[{_VERDICT_STYLE[v]}]{v}[/]", plain(c["reason"]),
                  plain(probes))  # fmt: skip
    return t


@app.command("l1")
def l1(
    hosts: Annotated[list[str] | None, typer.Argument(help="Host patterns (default: all).")] = None,
    sudo: Sudo = False,
    details: Annotated[bool, typer.Option("--details", help="Every check of every host.")] = False,
    forks: Forks = None,
    max_fail_percent: MaxFail = None,
    rerun_failed: RerunFailed = None,
) -> None:
    """Fast health posture: disk, memory, load, NICs, time, taint, driver, GPUs, Xids, serving."""
    st = state()
    chosen = st.select(hosts)
    if rerun_failed is not None:
        again = {h.name for h in select_hosts(st, rerun_failed)}
        chosen = [h for h in chosen if h.name in again]
    store = st.store()
    store.upsert_nodes(_node_record(h) for h in chosen)
    thresholds = thresholds_of(st)
    report = execute(
        st, kind="diag-l1", hosts=chosen, task=l1_task(st, thresholds, sudo),
        options=fanout_options(st, forks, None, max_fail_percent), command="diag l1",
        run_options={"sudo": sudo, "rerun_of": rerun_failed}, schema="agentctl.diag.l1.run/1",
        render=_render_l1(st, details),
    )  # fmt: skip
    store_l1(store, report)
    finish(report)


@app.command("l2")
def l2(
    host: Annotated[str, typer.Argument(help="One host.")],
    out: Annotated[Path, typer.Option("--out", help="Directory for the bundle.")],
    sudo: Sudo = False,
    nvidia_bug_report: Annotated[
        bool, typer.Option("--nvidia-bug-report", help="Also nvidia-bug-report.sh --safe-mode.")
    ] = False,
    dcgm_diag: Annotated[
        bool, typer.Option("--dcgm-diag", help="Also dcgmi diag -r 1 (loads the GPUs briefly).")
    ] = False,
    pseudonymize: Annotated[
        bool,
        typer.Option(
            "--pseudonymize", help="Replace hostnames and addresses (mapping kept aside)."
        ),
    ] = False,
    max_bytes: Annotated[
        int | None, typer.Option("--max-bytes", min=4096, help="Cap on all captures together.")
    ] = None,
) -> None:
    """Evidence bundle (tar.gz with a manifest): GPU state, PCIe, kernel logs, boots, RAS, SEL."""
    from agentctl.ctl.connect import Connections
    from agentctl.ctl.diag.service import run_l2

    st = state()
    chosen = st.select([host])
    if len(chosen) != 1:
        raise typer.BadParameter(f"{host!r} matches {len(chosen)} hosts; name exactly one")
    target = chosen[0]
    optional = [k for k, on in (("nvidia_bug_report", nvidia_bug_report),
                                ("dcgm_diag", dcgm_diag)) if on]  # fmt: skip
    conns = Connections(st.settings(), st.inventory())
    thresholds = thresholds_of(st)
    got: dict[str, Any] = {}

    def task(conn: Connector, h: Host) -> TaskOutput:
        res = run_l2(conn, h, out, thresholds, become=conns.become_for(h, sudo=sudo),
                     optional=optional, pseudonymize=pseudonymize, total_cap=max_bytes,
                     tool_version=__version__)  # fmt: skip
        got["outcome"] = res
        data = {"schema": "agentctl.diag.l2/1", "bundle": res.bundle.to_json(),
                "l1_verdict": res.l1.verdict, "reboot_cause": res.reboot.reason_code,
                "probes": res.probe_statuses}  # fmt: skip
        return TaskOutput(Status.OK, data=data, message=str(res.bundle.path))

    report = execute(
        st, kind="diag-l2", hosts=[target], task=task, options=fanout_options(st, 1, None, None),
        command="diag l2", run_options={"out": str(out), "optional": optional}, conns=conns,
        schema="agentctl.diag.l2.run/1",
    )  # fmt: skip
    res = got.get("outcome")
    if res is not None:
        st.store().save_diag(target.name, "l2", verdict=res.l1.verdict,
                             summary=f"bundle {res.bundle.path.name} sha256 {res.bundle.sha256}",
                             data=res.bundle.to_json(), run_id=report.run_id)  # fmt: skip
        st.output.info(f"bundle: {res.bundle.path}\nsha256: {res.bundle.sha256}")
        if res.bundle.mapping_path:
            st.output.info(f"pseudonym mapping (keep it here): {res.bundle.mapping_path}")
    finish(report)


@app.command("reboot-cause")
def reboot_cause(
    host: Annotated[str | None, typer.Argument(help="One host (or use --bundle).")] = None,
    bundle: Annotated[
        Path | None, typer.Option("--bundle", help="Analyse an L2 bundle offline.")
    ] = None,
    sudo: Sudo = False,
) -> None:
    """Why did the host last restart: evidence in the window between boots, never a guess."""
    from agentctl.ctl.connect import Connections
    from agentctl.ctl.diag.bundle import load_bundle
    from agentctl.ctl.diag.reboot import analyze, render_text
    from agentctl.ctl.diag.service import reboot_json, run_reboot_cause

    st = state()
    if (host is None) == (bundle is None):
        raise typer.BadParameter("name a HOST or give --bundle FILE (one of them)")
    if bundle is not None:
        loaded = load_bundle(bundle)
        for p in loaded.problems:
            st.output.warn(f"bundle: {p}")
        name = str(loaded.manifest.get("host", "?"))
        offline = analyze(loaded.results)
        st.output.emit(reboot_json(offline, name), schema="agentctl.diag.reboot_cause/1",
                       ok=True, errors=[])  # fmt: skip
        st.output.print(render_text(offline))
        return
    assert host is not None
    chosen = st.select([host])
    if len(chosen) != 1:
        raise typer.BadParameter(f"{host!r} matches {len(chosen)} hosts; name exactly one")
    conns = Connections(st.settings(), st.inventory())
    got: dict[str, Any] = {}

    def task(conn: Connector, h: Host) -> TaskOutput:
        rep, _ = run_reboot_cause(conn, h, become=conns.become_for(h, sudo=sudo))
        got["report"] = rep
        return TaskOutput(Status.OK, data=reboot_json(rep, h.name), message=rep.summary[:200])

    report = execute(
        st, kind="diag-reboot-cause", hosts=chosen, task=task,
        options=fanout_options(st, 1, None, None), command="diag reboot-cause", run_options={},
        conns=conns, schema="agentctl.diag.reboot_cause.run/1", emit=False,
    )  # fmt: skip
    rep: RebootReport | None = got.get("report")
    if rep is not None:
        doc = reboot_json(rep, chosen[0].name)
        st.store().save_diag(chosen[0].name, "reboot_cause", verdict=rep.reason_code,
                             summary=rep.summary, data=doc, run_id=report.run_id)  # fmt: skip
        st.output.emit(doc, schema="agentctl.diag.reboot_cause/1", ok=True, errors=[])
        st.output.print(render_text(rep))
    else:
        recap = report.recap
        st.output.emit(report.to_dict(), schema="agentctl.diag.reboot_cause.run/1", ok=False,
                       errors=[o.error for o in recap.outcomes if o.error])  # fmt: skip
    finish(report)
