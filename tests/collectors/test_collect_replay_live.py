"""A node with replayed GPUs (`agentctl_gpu_replay`) over a real sshd on loopback: `collect`
stores frames of the recorded H100 labelled `replay:<set>` (idle, then under load once its
worker served requests), host metrics, and the recorded Xid as an event; `diag l1` judges the
recordings through the same probes and says they are replayed. The node's Python is this
test's (it has agentctl installed, as a deployed venv would)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from agentctl.collectors.store import Store
from agentctl.ctl.fleet import LocalFleet, find_sshd
from agentctl.serving.cluster import ClusterSpec, LocalCluster

pytestmark = pytest.mark.timeout(240)
SET = "h100-xid48"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFleet]:
    if find_sshd() is None:
        pytest.skip("sshd not installed")
    fl = LocalFleet(tmp_path_factory.mktemp("replay") / "fleet", 1, prefix="rp", first_address=180)
    fl.start()
    yield fl
    fl.stop()


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(ClusterSpec(workers=1, time_scale=0.01)) as c:
        yield c


def _inventory(fl: LocalFleet, tmp: Path, port: int) -> str:
    doc: dict[str, Any] = fl.inventory()
    doc["all"]["hosts"]["rp01"].update(
        {
            "agentctl_roles": ["worker"],
            "agentctl_gpu_replay": SET,
            "agentctl_python": sys.executable,
            "agentctl_listen_address": "127.0.0.1",
            "agentctl_worker_base_port": port,
            "agentctl_workers": 1,
        }
    )
    path = tmp / "inv.yml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_replayed_gpu_collection_follows_serving_load_and_is_labelled(
    cli: Any, node: LocalFleet, cluster: LocalCluster, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("AGENTCTL_KNOWN_HOSTS", str(node.write_known_hosts(tmp_path / "kh")))
    db = tmp_path / "r.db"
    monkeypatch.setenv("AGENTCTL_DATABASE_URL", f"sqlite:///{db}")
    port = int(cluster.worker_urls["w0"].rsplit(":", 1)[1])
    inv = _inventory(node, tmp_path, port)

    idle = cli("-i", inv, "--json", "collect", "--once")
    assert idle.code == 0, idle.stdout + idle.stderr
    host = idle.json["data"]["hosts"][0]
    assert host["gpus"] == 1 and host["gpu_source"] == f"replay:{SET}", host
    assert host["problems"] == [] and host["xid_events"] == 5 and host["host_metrics"] >= 8
    store = Store.open(f"sqlite:///{db}")
    latest = {v.series: v for v in store.fleet_now(["gpu0.", "node.", "host."])}
    assert latest["gpu0.power_draw_w"].value == 69.0  # the recorded H100, idle
    assert latest["gpu0.utilization_gpu_pct"].value == 0.0
    assert {v.source for k, v in latest.items() if not k.startswith("host.")} == {f"replay:{SET}"}
    assert {v.source for k, v in latest.items() if k.startswith("host.")} == {None}
    cpu = latest["host.cpu_util_pct"].value  # 0.0 is a real reading: no tick between samples
    assert cpu is not None and 0 <= cpu <= 100
    xids = store.list_events(node="rp01", kinds=["xid"])
    assert {e.code for e in xids} == {48, 171, 63, 154}
    dbe = next(e for e in xids if e.code == 48)
    assert dbe.severity == "critical" and dbe.data["replayed"] == SET

    for _ in range(3):
        r = httpx.post(
            cluster.router_url + "/v1/completions",
            json={"prompt": "an agent's prompt " * 50, "max_tokens": 3},
            timeout=30,
        )
        assert r.status_code == 200
    busy = cli("-i", inv, "--json", "collect", "--once")
    assert busy.code == 0 and busy.json["data"]["hosts"][0]["xid_events"] == 0  # cursor held
    latest = {v.series: v for v in store.fleet_now(["gpu0."])}
    assert latest["gpu0.utilization_gpu_pct"].value == 100.0  # the load phase
    assert latest["gpu0.power_draw_w"].value == 631.0 and latest["gpu0.temperature_c"].value == 63
    assert len(store.list_events(node="rp01", kinds=["xid"])) == len(xids)
    store.close()


def test_l1_judges_the_recordings_and_labels_them_replayed(
    cli: Any, node: LocalFleet, cluster: LocalCluster, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.setenv("AGENTCTL_KNOWN_HOSTS", str(node.write_known_hosts(tmp_path / "kh")))
    monkeypatch.setenv("AGENTCTL_DATABASE_URL", f"sqlite:///{tmp_path / 'l1.db'}")
    port = int(cluster.worker_urls["w0"].rsplit(":", 1)[1])
    res = cli("-i", _inventory(node, tmp_path, port), "--json", "diag", "l1")
    assert res.code == 3, res.stdout + res.stderr  # the recorded Xid 48 fails the node
    (host,) = res.json["data"]["hosts"]
    d = host["data"]
    assert d["replayed"]["set"] == SET
    assert {r["repo"] for r in d["replayed"]["recordings"]} >= {"utkuozdemir/nvidia_gpu_exporter"}
    checks = {c["name"]: c for c in d["checks"]}
    xid = checks["gpu_xid"]
    assert xid["verdict"] == "fail" and xid["reason"].startswith(f"Replayed GPU ({SET}): ")
    assert "Xid 48" in xid["reason"] and "another machine" in xid["reason"]
    assert checks["gpu_count"]["verdict"] == "pass"  # 1 GPU from the replayed nvidia-smi
    assert checks["nvidia_driver"]["verdict"] == "pass"
    assert "590.48.01" in checks["nvidia_driver"]["reason"]
    assert checks["gpu_temperature"]["verdict"] == "pass"
    for name in ("gpu_count", "nvidia_driver", "gpu_temperature", "gpu_power"):
        assert checks[name]["evidence"]["replayed"] == SET, name
    assert "replayed" not in checks["disk_space"]["evidence"]  # a real check of the real host
    assert d["probes"]["modules"] == "not_supported"  # not in the recording, not this machine's
