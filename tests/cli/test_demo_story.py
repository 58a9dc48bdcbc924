"""After `agentctl demo --json` the store tells the story an operator should see: replayed GPU
samples labelled as such on the workers, host metrics from every node, an L1 failure from the
recorded Xid (labelled replayed), and the trace replay's KV-aware against round-robin comparison.

The demo runs once, without the dashboard, in its own process group; whatever happens, the test
stops it (Ctrl-C first, which stops its fleet and services), then any sshd and service it left
(their pid files are under the demo directory)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentctl.collectors.store import Store
from agentctl.ctl.demo import stop_services
from agentctl.ctl.fleet import find_sshd

pytestmark = pytest.mark.timeout(600)


def _kill_pidfile(path: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(path.read_text().split()[0]), signal.SIGTERM)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if find_sshd() is None:
        pytest.skip("sshd not installed: the demo would use the local connector")
    tmp = tmp_path_factory.mktemp("story")
    root = tmp / "demo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTCTL_")}
    env.update(XDG_STATE_HOME=str(tmp / "state"), XDG_DATA_HOME=str(tmp / "data"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentctl.ctl", "--json", "demo", "--nodes", "3", "--dir",
         str(root), "--no-dashboard"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=540)
        assert proc.returncode == 0, err[-4000:]
        yield {"doc": json.loads(out), "root": root}
    finally:
        if proc.poll() is None:  # interrupted or timed out: Ctrl-C stops what it started
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=90)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        stop_services(root)
        for pidfile in root.glob("fleet/*/sshd.pid"):
            _kill_pidfile(pidfile)


def _store(demo: dict[str, Any]) -> Store:
    return Store.open(f"sqlite:///{demo['root'] / 'agentctl.db'}")


def test_workers_have_replayed_gpus_labelled_and_every_node_host_metrics(demo: dict) -> None:
    data = demo["doc"]["data"]
    nodes = [n["name"] for n in data["nodes"]]
    assert nodes == ["node01", "node02", "node03"]
    collected = data["serving"]["collect"]
    assert collected["replayed_gpus"] == {"node02": "replay:h100", "node03": "replay:h100-xid48"}
    assert collected["host_metrics"] == nodes
    with _store(demo) as store:
        gpu = store.fleet_now(["gpu0.", "node.gpu"])
        assert {v.node for v in gpu} == {"node02", "node03"}  # the router has no GPU
        assert all(v.source and v.source.startswith("replay:") for v in gpu)
        host = store.fleet_now(["host."])
        for node in nodes:
            got = {v.series for v in host if v.node == node}
            assert {"host.cpu_util_pct", "host.mem_used_pct", "host.load1",
                    "host.disk_used_pct"} <= got, node  # fmt: skip
        assert {v.source for v in host} == {None}
        intervals = [v for v in store.fleet_now(["collect.interval_s"])]
        assert {v.node for v in intervals} == set(nodes) and all(v.value for v in intervals)


def test_the_recorded_xid_is_an_l1_failure_and_an_event_both_labelled(demo: dict) -> None:
    diag = demo["doc"]["data"]["diagnostics"]
    assert diag["l1"]["node03"] == "fail"
    with _store(demo) as store:
        (l1,) = store.list_diag(node="node03", kind="l1", limit=1)
        assert l1.data["replayed"]["set"] == "h100-xid48"
        xid = next(c for c in l1.data["checks"] if c["name"] == "gpu_xid")
        assert xid["verdict"] == "fail" and xid["reason"].startswith("Replayed GPU (h100-xid48)")
        assert "Xid 48" in xid["reason"]
        dbe = [e for e in store.list_events(node="node03", kinds=["xid"]) if e.code == 48]
        assert dbe and dbe[0].severity == "critical" and dbe[0].data["replayed"] == "h100-xid48"
        node02 = {c["name"]: c for c in store.list_diag(node="node02", kind="l1")[0].data["checks"]}
        assert node02["gpu_xid"]["verdict"] == "pass"  # a replayed H100 with a clean kernel log


def test_the_replay_comparison_is_stored_for_the_serving_page(demo: dict) -> None:
    replay = demo["doc"]["data"]["serving"]["replay"]
    assert replay["ok"] and replay["stored"]
    with _store(demo) as store:
        record = store.latest_bench("serving_replay")
        assert record is not None and record.id == replay["stored"]
        policies = {p["policy"]: p for p in record.data["policies"]}
        assert set(policies) == {"kv", "round-robin"}
        assert all(p["completed"] > 0 and 0 < p["hit_rate"] <= 1 for p in policies.values())
        for p in policies.values():  # the run over time, per worker, for the serving page
            assert sum(p["timeline"]["fleet"]["requests"]) == p["completed"]
            assert set(p["timeline"]["workers"]) == {"w0", "w1"}
        assert record.data["time_scale"] == 0.25 and record.data["fleet_time_scale"] == 0.05
