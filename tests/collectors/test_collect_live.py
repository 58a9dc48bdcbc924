"""`agentctl collect` against a real sshd node: GPUs from a recorded `nvidia-smi -q` of a real
H100 host (the only replaced part), serving metrics from a real worker read through an SSH
port forward, samples in a real SQLite store."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from agentctl.collectors.store import Store
from agentctl.ctl.fleet import LocalFleet, find_sshd
from agentctl.serving.cluster import ClusterSpec, LocalCluster

pytestmark = pytest.mark.timeout(180)
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "gpu"
SMI_Q = FIXTURE / "h100x8_smi_q_565.57.01_first2.txt"


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFleet]:
    if find_sshd() is None:
        pytest.skip("sshd not installed")
    fl = LocalFleet(tmp_path_factory.mktemp("collect") / "fleet", 1, prefix="co", first_address=160)
    fl.start()
    yield fl
    fl.stop()


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(ClusterSpec(workers=1, time_scale=0.01)) as c:
        yield c


def _inventory(fl: LocalFleet, tmp: Path, port: int, **extra: Any) -> Path:
    smi = tmp / "nvidia-smi"
    smi.write_text(
        f'#!/bin/sh\n[ "$1" = -q ] && exec cat {SMI_Q}\necho "no such query" >&2\nexit 9\n'
    )
    smi.chmod(0o755)
    doc: dict[str, Any] = fl.inventory()
    hv = doc["all"]["hosts"]["co01"]
    hv.update(
        {
            "agentctl_roles": ["worker"],
            "agentctl_expected_gpus": 2,
            "agentctl_nvidia_smi": str(smi),
            "agentctl_gpu_query": "q",
            "agentctl_listen_address": "127.0.0.1",
            "agentctl_worker_base_port": port,
        }
    )
    hv.update(extra)
    path = tmp / "inv.yml"
    path.write_text(yaml.safe_dump(doc))
    return path


def test_collect_once_stores_gpu_and_serving_series(
    cli: Any,
    node: LocalFleet,
    cluster: LocalCluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENTCTL_KNOWN_HOSTS", str(node.write_known_hosts(tmp_path / "kh")))
    db = tmp_path / "a.db"
    monkeypatch.setenv("AGENTCTL_DATABASE_URL", f"sqlite:///{db}")
    port = int(cluster.worker_urls["w0"].rsplit(":", 1)[1])
    inv = str(_inventory(node, tmp_path, port))

    first = cli("-i", inv, "--json", "collect", "--once")
    assert first.code == 0, first.stdout + first.stderr
    host = first.json["data"]["hosts"][0]
    assert (host["gpus"], host["endpoints"], host["problems"]) == (2, 1, [])

    prompt = "shared agent system prompt " * 120
    for _ in range(4):
        r = httpx.post(cluster.router_url + "/v1/completions",
                       json={"prompt": prompt, "max_tokens": 3}, timeout=30)  # fmt: skip
        assert r.status_code == 200
    second = cli("-i", inv, "--json", "collect", "--once")
    assert second.code == 0

    store = Store.open(f"sqlite:///{db}")
    latest = {(v.series): v for v in store.fleet_now(["gpu", "serving"])}
    assert latest["gpu0.temperature_c"].value == 30.0  # the recorded H100's value
    assert "gpu1.temperature_c" in latest and "gpu2.temperature_c" not in latest  # 2 GPUs
    assert latest["gpu0.fan_speed_pct"].status == "not_supported"
    assert latest["gpu0.fan_speed_pct"].value is None
    assert latest["gpu0.remapped_rows.pending"].value == 0.0
    hit = latest["serving.co01-w0.kv_hit_rate"].value
    assert hit is not None and 0.5 < hit <= 1.0  # 3 of 4 identical prompts hit
    assert latest["serving.co01-w0.ttft_p50_s"].value is not None


def test_unreachable_and_missing_nvidia_smi_are_reported(
    cli: Any,
    node: LocalFleet,
    cluster: LocalCluster,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENTCTL_KNOWN_HOSTS", str(node.write_known_hosts(tmp_path / "kh")))
    monkeypatch.setenv("AGENTCTL_DATABASE_URL", f"sqlite:///{tmp_path / 'b.db'}")
    port = int(cluster.worker_urls["w0"].rsplit(":", 1)[1])
    inv = _inventory(node, tmp_path, port, agentctl_nvidia_smi="/nonexistent/nvidia-smi")
    res = cli("-i", str(inv), "--json", "collect", "--once")
    assert res.code == 0
    problems = res.json["data"]["hosts"][0]["problems"]
    assert any("nvidia-smi: not found" in p for p in problems), problems
    doc = yaml.safe_load(inv.read_text())
    doc["all"]["hosts"]["co01"]["ansible_port"] = 1  # nothing listens there
    inv.write_text(yaml.safe_dump(doc))
    down = cli("-i", str(inv), "--json", "collect", "--once")
    assert down.code == 4
    assert down.json["data"]["hosts"][0]["status"] == "unreachable"
    assert os.path.exists(tmp_path / "b.db")
