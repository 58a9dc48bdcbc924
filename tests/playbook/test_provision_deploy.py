"""`agentctl provision` and `deploy` on real sshd nodes, end to end: the serving stack really
starts on them and answers a completion through the router; re-runs change nothing; drain
moves traffic; a host that fails midway is reported and a re-run continues from there.

Three loopback sshd "nodes" share this machine, each with its own install root and address
(127.0.0.15x), so their services do not collide. The services' ports are free ones picked here
(`agentctl_router_port` and the worker and event base ports), never deploy.yml's defaults: another
test run on this machine may be using 8080 at the same address. Packages come from a wheelhouse
built once by `agentctl bundle build` (the offline path: `pip install --no-index
--require-hashes`).
"""

from __future__ import annotations

import json
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import children
import httpx
import pytest
import yaml

from agentctl.ctl.fleet import LocalFleet, find_sshd

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "b"
    res = children.run(  # pip downloads in subprocesses: a timeout stops them too
        [sys.executable, "-m", "agentctl.ctl", "bundle", "build", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if res.returncode != 0 and "pip" in res.stderr and "download" in res.stderr.lower():
        pytest.skip(f"no package index reachable to build the wheelhouse: {res.stderr[-300:]}")
    assert res.returncode == 0, res.stderr
    return out / "wheels"


@dataclass(frozen=True)
class Ports:
    router: int  # on dp01
    worker_base: int  # worker i on dp02 and dp03: worker_base + i
    events_base: int  # worker i's events and replay: events_base + 2i, + 2i + 1

    def vars(self) -> dict[str, int]:
        return {
            "agentctl_router_port": self.router,
            "agentctl_worker_base_port": self.worker_base,
            "agentctl_events_base_port": self.events_base,
        }


def _free_block(addresses: list[str], count: int, held: list[socket.socket]) -> int:
    """A first port P such that P .. P+count-1 are free on every address; the sockets stay in
    `held` (bound) until the caller closes them, so the next block cannot overlap this one."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind((addresses[0], 0))
            first = int(probe.getsockname()[1])
        if first + count > 65535:
            continue
        block: list[socket.socket] = []
        try:
            for port in range(first, first + count):
                for address in addresses:
                    sock = socket.socket()
                    block.append(sock)
                    sock.bind((address, port))
        except OSError:
            for sock in block:
                sock.close()
            continue
        held += block
        return first
    raise RuntimeError(f"no {count} consecutive free ports on {addresses}")


@pytest.fixture(scope="module")
def ports(fleet: tuple[LocalFleet, Path]) -> Ports:
    """Free ports for the module: a re-deploy must find the services where it left them."""
    fl, _ = fleet
    router_host, *worker_hosts = (n.address for n in fl.nodes)
    held: list[socket.socket] = []
    try:
        return Ports(
            router=_free_block([router_host], 1, held),
            worker_base=_free_block(worker_hosts, 2, held),  # dp02 runs two workers
            events_base=_free_block(worker_hosts, 4, held),
        )
    finally:
        for sock in held:
            sock.close()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalFleet, Path]]:
    if find_sshd() is None:
        pytest.skip("sshd not installed")
    tmp = tmp_path_factory.mktemp("deploy")
    fl = LocalFleet(tmp / "fleet", 3, prefix="dp", first_address=150)
    try:  # start() may fail half-way, with some nodes up
        fl.start()
        yield fl, tmp
    finally:
        for node in fl.nodes:
            root = tmp / "roots" / node.name
            py = root / "venv" / "bin" / "python"
            if py.exists():
                children.run(
                    [str(py), "-m", "agentctl.serving", "supervise", "stop", "--all",
                     "--dir", str(root / "state")],
                    capture_output=True, timeout=60, check=False,
                )  # fmt: skip
        fl.stop()


def write_inventory(
    fl: LocalFleet, tmp: Path, ports: Ports, name: str = "inventory", **overrides: dict[str, Any]
) -> Path:
    doc: dict[str, Any] = fl.inventory(groups={"routers": ["dp01"], "workers": ["dp02", "dp03"]})
    all_group = doc["all"]
    all_group["vars"].update(
        **ports.vars(),
        agentctl_time_scale=0.01,
        agentctl_worker_engine={"capacity_blocks": 2048},
        agentctl_health_timeout=30,
    )
    for host, hv in all_group["hosts"].items():
        hv["agentctl_install_root"] = str(tmp / "roots" / host)
        hv.update(overrides.get(host, {}))
    all_group["children"]["routers"]["vars"] = {"agentctl_roles": ["router"]}
    all_group["children"]["workers"]["vars"] = {"agentctl_roles": ["worker"]}
    all_group["hosts"]["dp02"]["agentctl_workers"] = 2
    path = tmp / f"{name}.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def counts(doc: dict[str, Any]) -> dict[str, dict[str, int]]:
    return {h["host"]: h["data"]["counts"] for h in doc["data"]["hosts"] if h.get("data")}


def complete(router: str, prompt: str) -> httpx.Response:
    body = {"prompt": prompt, "max_tokens": 3}
    return httpx.post(router + "/v1/completions", json=body, timeout=30)


def test_provision_deploy_serve_redeploy_drain(
    cli: Any,
    fleet: tuple[LocalFleet, Path],
    ports: Ports,
    wheelhouse: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fl, tmp = fleet
    monkeypatch.setenv("AGENTCTL_KNOWN_HOSTS", str(fl.write_known_hosts(tmp / "kh")))
    inv = str(write_inventory(fl, tmp, ports))

    plan = cli("-i", inv, "--json", "provision", "--wheelhouse", str(wheelhouse))
    assert plan.code == 0, plan.stdout + plan.stderr
    assert plan.json["data"]["kind"] == "provision --check"  # --json without --yes: plan only
    assert not (tmp / "roots" / "dp01" / "venv").exists()

    first = cli("-i", inv, "--json", "provision", "--wheelhouse", str(wheelhouse), "--yes")
    assert first.code == 0, first.stdout + first.stderr
    assert all(c["changed"] > 0 and c["failed"] == 0 for c in counts(first.json).values())
    again = cli("-i", inv, "--json", "provision", "--wheelhouse", str(wheelhouse), "--yes")
    assert again.code == 0
    assert all(c["changed"] == 0 for c in counts(again.json).values()), counts(again.json)

    dep = cli("-i", inv, "--json", "deploy", "--yes")
    assert dep.code == 0, dep.stdout + dep.stderr
    router = f"http://{fl.nodes[0].address}:{ports.router}"
    seen = set()
    for i in range(6):
        r = complete(router, f"prompt number {i} " * 40)
        assert r.status_code == 200, r.text
        seen.add(r.headers["x-agentctl-worker"])
    assert seen <= {"dp02-w0", "dp02-w1", "dp03-w0"} and len(seen) >= 2
    redo = cli("-i", inv, "--json", "deploy", "--yes")
    assert redo.code == 0
    assert all(c["changed"] == 0 for c in counts(redo.json).values()), counts(redo.json)

    drained = cli("-i", inv, "--json", "drain", "dp02")
    assert drained.code == 0, drained.stdout + drained.stderr
    for i in range(4):
        r = complete(router, f"after drain {i} " * 40)
        assert r.status_code == 200 and r.headers["x-agentctl-worker"] == "dp03-w0"
    assert cli("-i", inv, "--json", "undrain", "dp02").code == 0
    seen = {complete(router, f"after undrain {i} " * 40).headers["x-agentctl-worker"]
            for i in range(8)}  # fmt: skip
    assert seen & {"dp02-w0", "dp02-w1"}

    # a config change restarts only the service it concerns
    inv = str(
        write_inventory(
            fl, tmp, ports, "smaller", dp03={"agentctl_worker_engine": {"capacity_blocks": 1024}}
        )
    )
    change = cli("-i", inv, "--json", "deploy", "--yes")
    assert change.code == 0
    c = counts(change.json)
    assert set(c) == {"dp01", "dp02", "dp03"}, change.json
    assert c["dp03"]["changed"] == 2 and c["dp02"]["changed"] == 0, change.json  # config + restart
    assert c["dp01"]["changed"] == 2  # the router's config lists capacities: config + restart


def test_a_host_failing_midway_is_reported_and_a_rerun_continues(
    cli: Any,
    fleet: tuple[LocalFleet, Path],
    ports: Ports,
    wheelhouse: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fl, tmp = fleet
    monkeypatch.setenv("AGENTCTL_KNOWN_HOSTS", str(fl.write_known_hosts(tmp / "kh")))
    good = str(write_inventory(fl, tmp, ports))
    assert (
        cli("-i", good, "--json", "provision", "--wheelhouse", str(wheelhouse), "--yes").code == 0
    )
    # dp03's engine settings are invalid: its worker cannot start
    bad = str(
        write_inventory(
            fl, tmp, ports, "bad", dp03={"agentctl_worker_engine": {"capacity_blocks": 0}}
        )
    )
    res = cli("-i", bad, "--json", "--limit", "dp02,dp03", "deploy", "--yes")
    assert res.code == 3
    hosts = {h["host"]: h for h in res.json["data"]["hosts"]}
    assert hosts["dp02"]["status"] in ("ok", "changed")
    assert hosts["dp03"]["status"] == "failed"
    tasks = hosts["dp03"]["data"]["tasks"]
    assert tasks[-1]["status"] == "failed" and tasks[-1]["task"].startswith("worker service")
    assert "did not start" in tasks[-1]["message"]
    assert "capacity_blocks" in tasks[-1]["message"]  # the worker's own error, from its log
    fixed = cli("-i", good, "--json", "--limit", "dp03", "deploy", "--yes")
    assert fixed.code == 0, fixed.stdout


def test_lifecycle_receive_maintenance_incident_decommission(
    cli: Any,
    fleet: tuple[LocalFleet, Path],
    ports: Ports,
    wheelhouse: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fl, tmp = fleet
    monkeypatch.setenv("AGENTCTL_KNOWN_HOSTS", str(fl.write_known_hosts(tmp / "kh")))
    inv = str(write_inventory(fl, tmp, ports, "life"))
    assert cli("-i", inv, "--json", "provision", "--wheelhouse", str(wheelhouse), "--yes").code == 0
    dep = cli("-i", inv, "--json", "deploy", "--yes")
    assert dep.code == 0, [h.get("message") for h in dep.json["data"]["hosts"]]

    rec = cli("-i", inv, "--json", "lifecycle", "receive", "--yes")
    assert rec.code == 0, rec.stdout
    assert all(c["changed"] == 0 and c["ok"] >= 3 for c in counts(rec.json).values())

    marker = tmp / "roots" / "dp03" / "maintained"
    steps = json.dumps([["touch", str(marker)]])
    maint = cli("-i", inv, "--json", "lifecycle", "maintenance", "dp03", "--yes",
                "-e", f"agentctl_maintenance_commands={steps}")  # fmt: skip
    assert maint.code == 0, maint.stdout
    assert [p["step"] for p in maint.json["data"]["passes"]] == ["drain", "maintenance", "undrain"]
    assert marker.exists()
    router = f"http://{fl.nodes[0].address}:{ports.router}"
    workers = {w["id"]: w for w in httpx.get(router + "/health", timeout=10).json()["workers"]}
    assert workers["dp03-w0"]["draining"] is False  # undrained after a successful window

    inc = cli("-i", inv, "--json", "lifecycle", "incident", "dp02", "--yes")
    assert inc.code == 0, inc.stdout
    tasks = {t["task"]: t for t in inc.json["data"]["hosts"][0]["data"]["tasks"]}
    assert "worker-0" in (tasks["serving services"]["message"] or "")

    gone = cli("-i", inv, "--json", "lifecycle", "decommission", "dp03", "--yes")
    assert gone.code == 0, gone.stdout
    assert gone.json["data"]["retired"] == ["dp03"]
    assert not (tmp / "roots" / "dp03").exists()
    workers = {w["id"]: w for w in httpx.get(router + "/health", timeout=10).json()["workers"]}
    assert workers["dp03-w0"]["draining"] is True  # decommissioned workers stay drained
    for i in range(4):
        r = complete(router, f"after decommission {i} " * 30)
        assert r.status_code == 200 and r.headers["x-agentctl-worker"].startswith("dp02-")
    again = cli("-i", inv, "--json", "lifecycle", "decommission", "dp03", "--yes")
    assert again.code == 0, again.stdout  # idempotent: nothing left to remove
