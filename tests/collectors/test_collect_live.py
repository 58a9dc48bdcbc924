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
    try:  # start() may fail half-way, with some nodes up
        fl.start()
        yield fl
    finally:
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


def _fake_journalctl(tmp: Path) -> Path:
    """Stands for journald: the first read gives one recorded file and cursor c1, a read after
    c1 the next file and c2, a read after c2 nothing (real journalctl then prints no cursor)."""
    script = tmp / "journalctl"
    first, nxt = FIXTURE / "xid_journal_iso.txt", FIXTURE / "xid_journal_iso_next.txt"
    script.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do case "$a" in\n'
        f"  --after-cursor=c1) cat {nxt}; echo '-- cursor: c2'; exit 0;;\n"
        "  --after-cursor=c2) echo '-- No entries --'; exit 0;;\n"
        "esac; done\n"
        f"cat {first}; echo '-- cursor: c1'\n"
    )
    script.chmod(0o755)
    return script


def test_xid_events_are_read_incrementally_and_deduplicated(
    cli: Any, node: LocalFleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTCTL_KNOWN_HOSTS", str(node.write_known_hosts(tmp_path / "kh")))
    db = tmp_path / "x.db"
    monkeypatch.setenv("AGENTCTL_DATABASE_URL", f"sqlite:///{db}")
    inv = str(
        _inventory(node, tmp_path, 1, agentctl_roles=[],
                   agentctl_journalctl=str(_fake_journalctl(tmp_path)))
    )  # fmt: skip

    first = cli("-i", inv, "--json", "collect", "--once")
    assert first.code == 0, first.stdout + first.stderr
    assert first.json["data"]["hosts"][0]["xid_events"] == 4
    store = Store.open(f"sqlite:///{db}")
    by_code = {e.code: e for e in store.list_events(node="co01", kinds=["xid"])}
    assert set(by_code) == {79, 13}
    fell = by_code[79]
    assert (fell.count, fell.severity, fell.subject) == (3, "critical", "0000:06:00")
    assert fell.first_at.isoformat() == "2026-11-20T03:10:01+00:00"
    assert fell.last_at.isoformat() == "2026-11-20T03:11:05+00:00"
    assert "RESTART_BM" in fell.data["action"]
    assert by_code[13].severity == "app"
    assert store.get_cursor("co01", "xid") is not None

    # A new process (new Collector) resumes from the stored cursor: only the new lines come.
    second = cli("-i", inv, "--json", "collect", "--once")
    assert second.json["data"]["hosts"][0]["xid_events"] == 2
    rows = store.list_events(node="co01", kinds=["xid"])
    seventy_nine = sorted((e for e in rows if e.code == 79), key=lambda e: e.first_at)
    # 03:13 folds into the burst (within 10 min of it); 05:00 is a new occurrence.
    assert [(e.count, e.last_at.hour, e.last_at.minute) for e in seventy_nine] == [
        (4, 3, 13),
        (1, 5, 0),
    ]
    third = cli("-i", inv, "--json", "collect", "--once")
    assert third.json["data"]["hosts"][0]["xid_events"] == 0
    assert sum(e.count for e in store.list_events(node="co01")) == 6
    store.close()


def test_xid_events_fall_back_to_dmesg_without_journald(
    cli: Any, node: LocalFleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTCTL_KNOWN_HOSTS", str(node.write_known_hosts(tmp_path / "kh")))
    db = tmp_path / "d.db"
    monkeypatch.setenv("AGENTCTL_DATABASE_URL", f"sqlite:///{db}")
    dmesg = tmp_path / "dmesg"
    dmesg.write_text(f"#!/bin/sh\ncat {FIXTURE / 'xid_dmesg_raw.txt'}\n")
    dmesg.chmod(0o755)
    inv = str(
        _inventory(node, tmp_path, 1, agentctl_roles=[],
                   agentctl_journalctl="/nonexistent/journalctl", agentctl_dmesg=str(dmesg))
    )  # fmt: skip
    first = cli("-i", inv, "--json", "collect", "--once")
    assert first.code == 0, first.stdout + first.stderr
    assert first.json["data"]["hosts"][0]["problems"] == []
    store = Store.open(f"sqlite:///{db}")
    events = store.list_events(node="co01")
    assert sorted(e.code for e in events if e.code is not None) == [31, 79, 154]
    boot = Path("/proc/stat").read_text().split("btime ")[1].split()[0]
    fell = next(e for e in events if e.code == 79)
    assert abs(fell.first_at.timestamp() - (int(boot) + 155044.078590)) < 1
    assert next(e for e in events if e.code == 154).data["action"] == "Drain and Reset"
    # dmesg is whole again on every read: nothing seen before is stored twice
    again = cli("-i", inv, "--json", "collect", "--once")
    assert again.json["data"]["hosts"][0]["xid_events"] == 0
    assert sum(e.count for e in store.list_events(node="co01")) == 3
    store.close()


def test_nvml_path_samples_on_the_node_through_its_python(
    cli: Any, node: LocalFleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`agentctl_gpu_query: nvml` runs `python -m agentctl.collectors.gpu sample` on the node;
    NVML itself is the recorded H100 replay (the only replaced part)."""
    import sys

    monkeypatch.setenv("AGENTCTL_KNOWN_HOSTS", str(node.write_known_hosts(tmp_path / "kh")))
    db = tmp_path / "n.db"
    monkeypatch.setenv("AGENTCTL_DATABASE_URL", f"sqlite:///{db}")
    replay = FIXTURE / "nvml_h100x2_565.57.01.json"
    inv = str(
        _inventory(node, tmp_path, 1, agentctl_roles=[], agentctl_gpu_query="nvml",
                   agentctl_python=sys.executable, agentctl_nvml_replay=str(replay),
                   agentctl_journalctl=str(_fake_journalctl(tmp_path)))
    )  # fmt: skip
    res = cli("-i", inv, "--json", "collect", "--once")
    assert res.code == 0, res.stdout + res.stderr
    host = res.json["data"]["hosts"][0]
    assert (host["gpus"], host["problems"]) == (2, [])
    with Store.open(f"sqlite:///{db}") as store:
        latest = {v.series: v for v in store.fleet_now(["gpu"])}
    assert latest["gpu1.temperature_c"].value is not None
    assert latest["gpu0.fan_speed_pct"].status == "not_supported"
    assert latest["gpu0.nvlinks.up"].value == 18.0

    broken = _inventory(node, tmp_path, 1, agentctl_roles=[], agentctl_gpu_query="nvml",
                        agentctl_python=sys.executable,
                        agentctl_journalctl=str(_fake_journalctl(tmp_path)))  # fmt: skip
    res = cli("-i", str(broken), "--json", "collect", "--once")  # no GPU here: NVML cannot load
    problems = res.json["data"]["hosts"][0]["problems"]
    assert any(p.startswith("nvml: library_not_found") for p in problems), problems
