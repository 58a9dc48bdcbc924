"""The flow of `agentctl demo` (its options are in `demo_cmd.py`)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.table import Table

from agentctl.ctl.cli.facts_cmd import facts_task, node_record
from agentctl.ctl.cli.main import state
from agentctl.ctl.cli.nodes_cmd import fleet_table, node_dict
from agentctl.ctl.cli.output import BuildProgress, esc, plain, recap_table
from agentctl.ctl.cli.playbook_cmd import load_playbook, run_playbook
from agentctl.ctl.cli.state import State
from agentctl.ctl.collect import Collector, HostCollection, store_task
from agentctl.ctl.connect import Connections, is_local
from agentctl.ctl.demo import start_demo_fleet, stop_services
from agentctl.ctl.errors import HostsFailed
from agentctl.ctl.facts import FAMILIES
from agentctl.ctl.fanout import FanOut, FanoutOptions
from agentctl.ctl.inventory import Host
from agentctl.ctl.runner import run_recorded
from agentctl.ctl.ssh.trust import probe_chain, record


def run_demo(
    *, nodes: int, directory: Path | None, keep: bool, serve: bool, replay: bool, dashboard: bool
) -> None:
    """The demo's flow (`agentctl demo`): fleet, trust, facts, serving, diagnostics, export,
    dashboard; everything it started is stopped on the way out."""
    st = state()
    base = st.settings()
    root = (directory or base.state_dir / "demo").expanduser()
    st.output.info(f"[bold]agentctl demo[/bold]: a local fleet of {nodes} node(s) in {esc(root)}")
    # The demo owns its known_hosts: start it afresh, since ports change on every run.
    (root / "known_hosts").unlink(missing_ok=True)
    demo_fleet = start_demo_fleet(root, nodes)
    web = None
    background: Any = None
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
        data: dict[str, Any] = {
            "mode": demo_fleet.mode,
            "directory": str(root),
            "inventory": str(demo_fleet.inventory_path),
            "database": st.settings().effective_database_url(),
            "run": report.to_dict(),
            "nodes": [node_dict(n) for n in views],
        }
        ok = report.recap.ok
        if serve and ok:
            serving = demo_serving(st, root, hosts, replay)
            data["serving"] = serving
            ok = bool(serving["ok"])
        if ok:
            data["diagnostics"] = demo_diagnose(st, hosts)
            data["export"] = demo_export(st, root)
        password = None
        if ok and dashboard:
            from agentctl.ctl.cli.dashboard_cmd import demo_dashboard

            web, data["dashboard"], password = demo_dashboard(st)
        data["explore"] = explore_env(root, demo_fleet.inventory_path)
        st.output.emit(
            data,
            schema="agentctl.demo/1",
            ok=ok,
            errors=[o.error for o in report.recap.outcomes if o.error],
        )
        running = keep and demo_fleet.fleet is not None
        explore_hint(st, data["explore"], running=running)
        if password is not None:
            login = ["user: demo", f"password: {password}"]
            if running:
                st.output.copyable(
                    [f"{data['dashboard']['url']}/", *login],
                    title="dashboard (one-time login, this demo's store only):",
                )
            else:
                st.output.copyable(["agentctl dashboard serve", *login], title=(
                    "dashboard: checked, and stopped with the demo; to browse the demo's store "
                    "again, with the exports above (or run the demo with --keep):"))  # fmt: skip
        if running:
            if serve and "serving" in data:
                st.output.copyable(
                    [str(data["serving"].get("router"))], title="router (OpenAI API):"
                )
            from agentctl.ctl.demo_story import BackgroundCollection

            # the dashboard stays current: collection goes on every 10 s until Ctrl-C
            background = BackgroundCollection(conns.connect, st.store(), hosts, interval_s=10)
            background.start()
            st.output.info("fleet running, collected every 10 s; Ctrl-C stops it")
            while True:
                time.sleep(3600)
        if not ok:
            raise HostsFailed("some demo nodes failed; see the recap above")
    finally:
        if background is not None:
            background.stop()
        if web is not None:
            web.stop()
        stop_services(root)
        demo_fleet.stop()


def explore_env(root: Path, inventory: Path) -> dict[str, str]:
    """The environment that points the normal commands at what the demo stored."""
    return {
        "AGENTCTL_DATABASE_URL": f"sqlite:///{root / 'agentctl.db'}",
        "AGENTCTL_KNOWN_HOSTS": str(root / "known_hosts"),
        "AGENTCTL_INVENTORY": str(inventory),
    }


def explore_hint(st: State, env: dict[str, str], *, running: bool) -> None:
    """Printed at the end of every demo: without it `agentctl nodes` shows the operator's own
    (empty) store, not the demo's."""
    import shlex

    lines = [f"export {k}={shlex.quote(v)}" for k, v in env.items()]
    lines.append("agentctl nodes; agentctl runs list; agentctl metrics show; agentctl watch")
    if running:
        lines.append("agentctl run -- uname -a")
    st.output.copyable(lines, title="The demo's store, inventory and host keys (copy these):")


DEMO_TRACE = Path(__file__).resolve().parent.parent / "data" / "weka_cc_sample6.jsonl.xz"


def demo_replay(st: State, seconds: float = 12.0) -> dict[str, Any]:
    """Two real Claude Code conversations replayed live through the router, KV-aware against
    round-robin (fresh router and workers per policy, `agentctl bench replay --mode live`);
    the comparison is stored for the serving page."""
    from agentctl.ctl.demo_story import store_replay

    argv = [
        sys.executable, "-m", "agentctl.serving", "bench", "replay", str(DEMO_TRACE),
        "--mode", "live", "--policy", "round-robin", "--policy", "kv", "--workers", "2",
        "--limit", "2", "--think-scale", "0.02", "--time-scale", "0.25",
        "--max-wall", str(seconds), "--json",
    ]  # fmt: skip
    st.output.info(f"replaying Claude Code traces live: round-robin, then kv ({seconds:.0f}s each)")
    res = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    try:
        bench = json.loads(res.stdout)["data"]
        policies = bench["policies"]
    except (ValueError, KeyError, TypeError):
        st.output.warn(f"trace replay failed: {res.stderr.strip()[-300:]}")
        return {"ok": False}
    table = Table(title="Claude Code traces, live through the router", title_justify="left")
    for col in ("policy", "requests", "KV hit rate", "TTFT p50", "TTFT p99"):
        table.add_column(col, justify="left" if col == "policy" else "right")
    rows = {}
    for p in policies:
        ttft = p.get("ttft_ms") or {}
        rows[p["policy"]] = {
            "hit_rate": p.get("hit_rate"), "ttft_p50_ms": ttft.get("p50"),
            "ttft_p99_ms": ttft.get("p99"), "requests": p.get("completed"),
        }  # fmt: skip
        table.add_row(plain(p["policy"]), plain(p.get("completed", "-")),
                      f"{p.get('hit_rate', 0):.1%}", f"{ttft.get('p50', 0):.0f} ms",
                      f"{ttft.get('p99', 0):.0f} ms")  # fmt: skip
    st.output.print(table)
    kv, rr = rows.get("kv"), rows.get("round-robin")
    out: dict[str, Any] = {"ok": True, "policies": rows}
    if kv and rr and kv["ttft_p50_ms"] and rr["ttft_p50_ms"]:
        out["ttft_p50_ratio_rr_over_kv"] = rr["ttft_p50_ms"] / kv["ttft_p50_ms"]
        st.output.info(f"kv vs round-robin: hit rate {kv['hit_rate']:.1%} vs {rr['hit_rate']:.1%}, "
                       f"TTFT p50 {out['ttft_p50_ratio_rr_over_kv']:.2f}x lower")  # fmt: skip
    first = next(iter(st.inventory().hosts.values()), None)
    scale = first.vars.get("agentctl_time_scale") if first is not None else None
    out["stored"] = store_replay(st.store(), bench, trace=str(DEMO_TRACE),
                                 fleet_time_scale=float(scale) if scale else None)  # fmt: skip
    st.output.info("TTFT above is the client's (router receive to first token) in trace time "
                   "(wall / 0.25); the fleet's own TTFT is the engines', at their time_scale "
                   f"{scale}: see the serving page")  # fmt: skip
    return out


def demo_serving(st: State, root: Path, hosts: list[Host], replay: bool = True) -> dict[str, Any]:
    """Bundle (built once, verified every time), provision, deploy, then agent traffic."""
    out: dict[str, Any] = {"ok": False}
    wheels = _demo_bundle(st, root / "bundle")
    for phase, extra in (("provision", {"agentctl_wheelhouse": str(wheels)}), ("deploy", {})):
        started = time.monotonic()
        rep = run_playbook(
            st, load_playbook(phase), hosts=hosts, check=False, diff=False, yes=True,
            extra_vars=extra, timeout=300, forks=None, batch=None, max_fail=None,
            command=f"{phase} (demo)", emit=False,
        )  # fmt: skip
        st.output.info(f"{phase}: {time.monotonic() - started:.1f}s")
        out[phase] = rep.to_dict()
        if not rep.recap.ok:
            return out
    router = next(h for h in hosts if "router" in h.roles)
    address = "127.0.0.1" if is_local(router) else router.address
    out["router"] = f"http://{address}:{int(router.vars['agentctl_router_port'])}"
    workers = [f"{h.name}-w{i}" for h in hosts if "worker" in h.roles
               for i in range(int(h.vars.get("agentctl_workers", 1)))]  # fmt: skip
    out["traffic"] = agent_traffic(st, out["router"], workers)
    if replay:
        out["replay"] = demo_replay(st)
    out["collect"] = demo_collect(st, hosts)
    out["ok"] = all(t["status"] == 200 for t in out["traffic"]) and out["collect"]["ok"]
    return out


def demo_diagnose(st: State, hosts: list[Host]) -> dict[str, Any]:
    """L1 on every node (stored, as `agentctl diag l1`), and a reboot-cause report for one."""
    from agentctl.ctl.cli.diag_cmd import check_table, l1_task, store_l1, thresholds_of
    from agentctl.ctl.diag.reboot import render_text
    from agentctl.ctl.diag.service import reboot_json, run_reboot_cause

    store = st.store()
    conns = Connections(st.settings(), st.inventory())
    report = run_recorded(
        store, kind="diag-l1", hosts=hosts, task=l1_task(st, thresholds_of(st), False),
        connect=conns.connect, options=FanoutOptions(), command="diag l1 (demo)",
        selection=None, run_options={"demo": True},
    )  # fmt: skip
    store_l1(store, report)
    verdicts = {}
    for o in report.recap.outcomes:
        if isinstance(o.data, dict) and "verdict" in o.data:
            verdicts[o.host] = o.data["verdict"]
    first = next((o.data for o in report.recap.outcomes if isinstance(o.data, dict)), None)
    if first is not None and "checks" in first:
        st.output.print(check_table(first))
    st.output.info("L1: " + ", ".join(f"{esc(h)} {v}" for h, v in sorted(verdicts.items())))
    host = hosts[0]
    conn = conns.connect(host)
    try:
        rep, _ = run_reboot_cause(conn, host)
    finally:
        conn.close()
    doc = reboot_json(rep, host.name)
    store.save_diag(host.name, "reboot_cause", verdict=rep.reason_code, summary=rep.summary,
                    data=doc)  # fmt: skip
    st.output.print(render_text(rep))
    return {"l1_run": report.run_id, "l1": verdicts, "reboot_cause": doc}


def demo_export(st: State, root: Path) -> dict[str, Any]:
    """An ECS export of the events and inventory the demo produced (verifiable JSON Lines)."""
    from agentctl.ctl.export import export, verify_file

    out: dict[str, Any] = {}
    for kind in ("events", "inventory"):
        path = root / f"export-ecs-{kind}.jsonl"
        with open(path, "w", encoding="utf-8") as fh:
            summary = export(st.store(), "ecs", kind, None, fh)
        ok = verify_file(path).ok
        out[kind] = {"path": str(path), "count": summary.count, "sha256": summary.sha256,
                     "verified": ok}  # fmt: skip
        st.output.info(f"ECS export: {summary.count} {kind} record(s) in {esc(path)}")
    return out


def demo_collect(st: State, hosts: list[Host]) -> dict[str, Any]:
    """Four collection passes 1.5 s apart, as a schedule would run them: host metrics of every
    node, the workers' replayed GPUs (under load in the first pass, which covers the agent
    traffic, idle after), the recorded Xid, serving interval deltas (hit rate, TTFT)."""
    store = st.store()
    conns = Connections(st.settings(), st.inventory())
    got: dict[str, HostCollection] = {}
    task = store_task(Collector(store=store), store, got)
    seen: dict[str, list[HostCollection]] = {}
    ok = True
    for i in range(4):
        time.sleep(1.5 if i else 0)
        got.clear()
        recap = FanOut(conns.connect, task, name_of=lambda h: h.name).run(hosts)
        ok = ok and recap.ok
        for name, hc in got.items():
            seen.setdefault(name, []).append(hc)
    samples = {name: sum(len(hc.samples) for hc in hcs) for name, hcs in seen.items()}
    store.rollup(datetime.now(UTC))
    latest = store.fleet_now(["serving.", "host.", "node.gpu_count"])
    hit = [v for v in latest if v.series.endswith(".kv_hit_rate")]
    replayed = {v.node: v.source for v in latest if v.series == "node.gpu_count" and v.source}
    host_nodes = sorted({v.node for v in latest if v.series.startswith("host.")})
    requests: dict[str, float] = {}
    for hcs in seen.values():
        for hc in hcs:
            for smp in hc.samples:
                if smp.series.startswith("serving.") and smp.series.endswith(".requests"):
                    w = smp.series.split(".")[1]
                    requests[w] = requests.get(w, 0.0) + (smp.value or 0.0)
    st.output.info(
        f"collected {sum(samples.values())} samples; KV hit rate per worker: "
        + ", ".join(f"{esc(v.series.split('.')[1])} {v.value:.0%}" for v in hit if v.value)
    )
    st.output.info(f"host metrics from {len(host_nodes)} node(s); replayed GPUs (recordings, not "
                   "real GPUs): " + (", ".join(f"{esc(n)} {esc(s)}" for n, s in sorted(
                       replayed.items())) or "none"))  # fmt: skip
    return {"ok": ok, "samples": samples, "kv_hit_rate": {v.series: v.value for v in hit},
            "host_metrics": host_nodes, "replayed_gpus": replayed,
            "requests": requests}  # fmt: skip


def _demo_bundle(st: State, path: Path) -> Path:
    from agentctl.ctl.bundle import BuildOptions, build_bundle, make_target, verify_bundle
    from agentctl.ctl.errors import VerificationError

    if (path / "manifest.json").exists():
        try:
            return verify_bundle(path).wheels_dir
        except VerificationError as exc:
            st.output.warn(f"rebuilding the demo bundle: {exc.message}")
    st.output.info("building the offline bundle (pip download, once; then reused)...")
    with BuildProgress(st.output) as progress:
        build_bundle(BuildOptions(out=path, target=make_target(), force=True), progress)
    return verify_bundle(path).wheels_dir


#: three agent sessions sharing a system prompt, each turn resending its whole history
_SYSTEM = "You are a coding agent. Tools: read_file, edit_file, run_tests, grep. " * 40


def agent_traffic(
    st: State, router: str, workers: list[str], sessions: int = 3, turns: int = 4
) -> list[dict[str, Any]]:
    """Agent sessions through the router, and why they land where they land."""
    from agentctl.ctl.demo_story import CONCENTRATION_NOTE, concentration

    rows: list[dict[str, Any]] = []
    table = Table(title="Agent sessions through the KV-aware router", title_justify="left")
    for col in ("session", "turn", "worker", "prompt", "cached", "ms"):
        table.add_column(col, justify="right" if col in ("prompt", "cached", "ms") else "left")
    with httpx.Client(base_url=router, timeout=60) as client:
        history = {s: _SYSTEM for s in range(sessions)}
        for turn in range(turns):
            for s in range(sessions):
                history[s] += (
                    f" [session {s} turn {turn}] fix the failing test in module_{s}.py " * 8
                )
                body = {
                    "prompt": history[s],
                    "max_tokens": 16,
                    "nvext": {"session_control": {"session_id": f"agent-{s}"}},
                }
                started = time.monotonic()
                r = client.post("/v1/completions", json=body)
                ms = 1000 * (time.monotonic() - started)
                usage = r.json().get("usage", {}) if r.status_code == 200 else {}
                cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)
                row = {
                    "session": s, "turn": turn, "status": r.status_code,
                    "worker": r.headers.get("x-agentctl-worker"),
                    "prompt_tokens": usage.get("prompt_tokens", 0), "cached_tokens": cached,
                    "ms": round(ms, 1),
                }  # fmt: skip
                rows.append(row)
                table.add_row(
                    plain(s), plain(turn), plain(row["worker"]), plain(row["prompt_tokens"]),
                    plain(cached), f"{ms:.0f}",
                )  # fmt: skip
    st.output.print(table)
    prompt = sum(done["prompt_tokens"] for done in rows)
    cached = sum(done["cached_tokens"] for done in rows)
    if prompt:
        st.output.info(
            f"prefix cache hits: {cached}/{prompt} prompt tokens ({cached / prompt:.0%})"
        )
    per_worker = dict.fromkeys(workers, 0.0)
    for done in rows:
        if done["worker"]:
            per_worker[str(done["worker"])] = per_worker.get(str(done["worker"]), 0.0) + 1
    busiest = concentration(per_worker)
    if busiest is not None:
        st.output.info(esc(CONCENTRATION_NOTE.format(worker=busiest[0], top=busiest[1],
                                                     total=busiest[2])))  # fmt: skip
    return rows
