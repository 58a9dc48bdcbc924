"""`agentctl metrics`: the store's latest values as dcgm-exporter / vLLM Prometheus metrics,
rendered from a real SQLite store, once (`show`) and live over HTTP (`serve`)."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import children
import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from agentctl.collectors.exporter import (
    GpuInfo,
    gpu_info_from_facts,
    render_exposition,
    split_series,
)
from agentctl.collectors.store import Store
from agentctl.collectors.store.timeseries import Sample
from agentctl.ctl.cli import metrics_cmd

# the module (the package re-exports a function of the same name)
cli_main = importlib.import_module("agentctl.ctl.cli.main")
GIB = 1024**3
MIB = 1024.0**2
UUID = "GPU-8f3c1a2e-0000-1111-2222-333344445555"

Labels = tuple[tuple[str, str], ...]


def _register() -> None:
    """Until main.py registers `metrics` itself (idempotent once it does)."""
    if not any(g.name == "metrics" for g in cli_main.app.registered_groups):
        cli_main.app.add_typer(metrics_cmd.app, name="metrics")


# For the subprocess: the real entry point, with `metrics` registered if main.py does not yet.
SHIM = (
    "import importlib\n"
    "m = importlib.import_module('agentctl.ctl.cli.main')\n"
    "from agentctl.ctl.cli import metrics_cmd as c\n"
    "if not any(g.name == 'metrics' for g in m.app.registered_groups):\n"
    "    m.app.add_typer(c.app, name='metrics')\n"
    "m.run()\n"
)


def fill(store: Store, now: datetime) -> None:
    fresh, stale = now - timedelta(seconds=10), now - timedelta(minutes=10)
    s = [
        Sample("n1", "gpu0.utilization_gpu_pct", fresh, 87.0),
        Sample("n1", "gpu0.memory_used_bytes", fresh, 2.0 * GIB),
        Sample("n1", "gpu0.memory_total_bytes", fresh, 80.0 * GIB),
        Sample("n1", "gpu0.temperature_c", fresh, 55.0),
        Sample("n1", "gpu0.power_draw_w", fresh, 312.5),
        Sample("n1", "gpu0.sm_clock_mhz", fresh, 1980.0),
        Sample("n1", "gpu0.pcie_replay_counter", fresh, 3.0),
        Sample("n1", "gpu0.ecc_uncorrected_volatile", fresh, 0.0),
        Sample("n1", "gpu0.fan_speed_pct", fresh, None, "not_supported"),
        Sample("n1", "gpu0.power_limit_w", fresh, None, "error"),
        # older ok sample, newest not supported: the newest wins, nothing exported
        Sample("n1", "gpu0.mem_clock_mhz", fresh - timedelta(seconds=5), 2619.0),
        Sample("n1", "gpu0.mem_clock_mhz", fresh, None, "not_supported"),
        Sample("n1", "gpu1.temperature_c", stale, 40.0),  # stale
        Sample("n1", "gpu1.utilization_gpu_pct", fresh, 5.0),
        Sample("n2", "gpu0.memory_used_bytes", fresh, 1.0 * GIB),  # no total: no FB_FREE
        Sample("n2", "os.load1", fresh, 3.0),  # unknown series: not exported
        Sample("n1", "serving.10.0.0.5:8000.running", fresh, 4.0),
        Sample("n1", "serving.10.0.0.5:8000.waiting", fresh, 2.0),
        Sample("n1", "serving.10.0.0.5:8000.kv_usage", fresh, 0.25),
        Sample("n1", "serving.10.0.0.5:8000.kv_hit_rate", fresh, 0.75),
        Sample("n1", "serving.10.0.0.5:8000.ttft_p50_s", fresh, 0.12),
        Sample("n1", "serving.10.0.0.5:8000.ttft_p99_s", fresh, 0.9),
        Sample("n1", "serving.10.0.0.5:8000.itl_p50_s", stale, 0.02),  # stale
        Sample("n1", "serving.w2.kv_hit_rate", fresh, None, "not_supported"),
    ]
    store.insert_samples(s)


def parse(text: str) -> dict[str, dict[Labels, float]]:
    out: dict[str, dict[Labels, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            out.setdefault(sample.name, {})[labels] = sample.value
    return out


def gpu_labels(node: str, index: int, uuid: str = "", model: str = "", bus: str = "") -> Labels:
    d = {
        "gpu": str(index),
        "UUID": uuid,
        "device": f"nvidia{index}",
        "modelName": model,
        "pci_bus_id": bus,
        "Hostname": node,
    }
    return tuple(sorted(d.items()))


W1: Labels = (("node", "n1"), ("worker", "10.0.0.5:8000"))


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[str, Store]]:
    url = f"sqlite:///{tmp_path / 'agentctl.db'}"
    store = Store.open(url)
    yield url, store
    store.close()


def test_render_from_a_real_store(db: tuple[str, Store]) -> None:
    _, store = db
    now = datetime.now(UTC)
    fill(store, now)
    # everything, stale included: render_exposition itself drops what is too old
    text = render_exposition(store.fleet_now(), now, gpu_info={"n1": {0: GpuInfo(UUID, "H100")}})
    m = parse(text)
    g0, g1 = gpu_labels("n1", 0, UUID, "H100"), gpu_labels("n1", 1)
    assert m["DCGM_FI_DEV_GPU_UTIL"] == {g0: 87.0, g1: 5.0}
    assert m["DCGM_FI_DEV_FB_USED"] == {g0: 2048.0, gpu_labels("n2", 0): 1024.0}  # MiB
    assert m["DCGM_FI_DEV_FB_FREE"] == {g0: 78 * 1024.0}
    assert m["DCGM_FI_DEV_GPU_TEMP"] == {g0: 55.0}  # gpu1's is stale
    assert m["DCGM_FI_DEV_POWER_USAGE"] == {g0: 312.5}
    assert m["DCGM_FI_DEV_SM_CLOCK"] == {g0: 1980.0}
    assert m["DCGM_FI_DEV_PCIE_REPLAY_COUNTER"] == {g0: 3.0}
    assert m["DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"] == {g0: 0.0}
    for absent in (
        "DCGM_FI_DEV_FAN_SPEED",
        "DCGM_FI_DEV_POWER_MGMT_LIMIT",
        "DCGM_FI_DEV_MEM_CLOCK",
    ):
        assert absent not in m, absent  # not supported / error: no number
    assert m["vllm:num_requests_running"] == {W1: 4.0}
    assert m["vllm:num_requests_waiting"] == {W1: 2.0}
    assert m["vllm:kv_cache_usage_perc"] == {W1: 0.25}
    assert m["agentctl_kv_hit_rate"] == {W1: 0.75}  # w2's is not supported
    assert m["agentctl_time_to_first_token_seconds"] == {
        (*W1[:1], ("quantile", "0.5"), *W1[1:]): 0.12,
        (*W1[:1], ("quantile", "0.99"), *W1[1:]): 0.9,
    }
    assert "agentctl_inter_token_latency_seconds" not in m  # stale
    assert "load1" not in text
    assert set(m) == {
        "DCGM_FI_DEV_GPU_UTIL",
        "DCGM_FI_DEV_FB_USED",
        "DCGM_FI_DEV_FB_FREE",
        "DCGM_FI_DEV_GPU_TEMP",
        "DCGM_FI_DEV_POWER_USAGE",
        "DCGM_FI_DEV_SM_CLOCK",
        "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL",
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "agentctl_kv_hit_rate",
        "agentctl_time_to_first_token_seconds",
    }
    assert "# TYPE DCGM_FI_DEV_GPU_UTIL gauge" in text
    # max_age=None exports the stale ones too
    m_all = parse(render_exposition(store.fleet_now(), now, max_age=None))
    assert m_all["DCGM_FI_DEV_GPU_TEMP"][gpu_labels("n1", 1)] == 40.0


def test_a_replayed_gpu_carries_its_source_label_and_measured_ones_none(
    db: tuple[str, Store],
) -> None:
    _, store = db
    now = datetime.now(UTC)
    store.insert_samples([
        Sample("demo", "gpu0.temperature_c", now, 41.0, source="replay:h100"),
        Sample("demo", "gpu0.memory_used_bytes", now, 1024 * MIB, source="replay:h100"),
        Sample("demo", "gpu0.memory_total_bytes", now, 4096 * MIB, source="replay:h100"),
        Sample("real", "gpu0.temperature_c", now, 50.0),
    ])  # fmt: skip
    m = parse(render_exposition(store.fleet_now(), now))
    replayed = tuple(sorted((*gpu_labels("demo", 0), ("agentctl_source", "replay:h100"))))
    assert m["DCGM_FI_DEV_GPU_TEMP"] == {replayed: 41.0, gpu_labels("real", 0): 50.0}
    assert m["DCGM_FI_DEV_FB_FREE"] == {replayed: 3072.0}


def test_render_is_deterministic_and_rejects_naive_now(db: tuple[str, Store]) -> None:
    _, store = db
    now = datetime.now(UTC)
    fill(store, now)
    latest = store.fleet_now()
    assert render_exposition(latest, now) == render_exposition(list(reversed(latest)), now)
    assert render_exposition([], now) == ""
    with pytest.raises(ValueError, match="aware"):
        render_exposition(latest, now.replace(tzinfo=None))


def test_split_series_and_facts() -> None:
    assert split_series("gpu12.temperature_c") == ("gpu", "12", "temperature_c")
    assert split_series("serving.a.b:1.running") == ("serving", "a.b:1", "running")
    for bad in ("gpu", "gpux.temp", "gpu0.a.b", "serving.running", "os.load1", "gpu0."):
        assert split_series(bad) is None, bad
    facts = {"gpus": {"gpus": [{"index": 1, "uuid": UUID, "name": "H100", "pci_bus_id": 7}, 3]}}
    assert gpu_info_from_facts(facts) == {1: GpuInfo(UUID, "H100", "")}
    assert gpu_info_from_facts(None) == {} == gpu_info_from_facts({"gpus": "x"})


def test_snapshot_takes_uuid_from_facts(db: tuple[str, Store]) -> None:
    _, store = db
    now = datetime.now(UTC)
    fill(store, now)
    gpus = [{"index": 0, "uuid": UUID, "name": "NVIDIA H100 80GB HBM3", "pci_bus_id": "0:1b:0.0"}]
    store.record_facts("n1", {"gpus": {"gpus": gpus}}, {})
    _, latest, text = metrics_cmd.snapshot(store, timedelta(minutes=5))
    assert all(lv.node in ("n1", "n2") for lv in latest)
    g0 = gpu_labels("n1", 0, UUID, "NVIDIA H100 80GB HBM3", "0:1b:0.0")
    assert parse(text)["DCGM_FI_DEV_GPU_UTIL"][g0] == 87.0


def test_metrics_show(cli: Any, db: tuple[str, Store], monkeypatch: pytest.MonkeyPatch) -> None:
    url, store = db
    fill(store, datetime.now(UTC))
    monkeypatch.setenv("AGENTCTL_DATABASE_URL", url)
    _register()
    res = cli("metrics", "show")
    assert res.code == 0, res.stderr
    assert parse(res.stdout)["vllm:num_requests_running"] == {W1: 4.0}
    res = cli("--json", "metrics", "show", "--max-age", "3600")
    assert res.code == 0, res.stderr
    env = res.json
    assert env["meta"]["schema"] == "agentctl.metrics/1"
    assert env["data"]["max_age_s"] == 3600
    assert parse(env["data"]["exposition"])["DCGM_FI_DEV_GPU_TEMP"][gpu_labels("n1", 1)] == 40.0
    fan = [v for v in env["data"]["values"] if v["series"] == "gpu0.fan_speed_pct"]
    assert fan == [
        {"node": "n1", "series": "gpu0.fan_speed_pct", "ts": fan[0]["ts"], "value": None,
         "status": "not_supported", "source": None}
    ]  # fmt: skip


@pytest.mark.timeout(60)
def test_metrics_serve_live(
    agentctl_env: Path, db: tuple[str, Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, store = db
    fill(store, datetime.now(UTC))
    env = dict(os.environ, AGENTCTL_DATABASE_URL=url)
    cmd = [sys.executable, "-c", SHIM, "metrics", "serve", "--port", "0", "--max-age", "300"]
    # children.start: SIGINT at its default even if pytest runs with it ignored (nohup)
    proc = children.start(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert "serving metrics on http://" in line, line + proc.stderr.read()
        base = line.split("http://", 1)[1].strip().removesuffix("/metrics")
        with httpx.Client(base_url=f"http://{base}", timeout=10) as client:
            health = client.get("/health")
            assert health.status_code == 200 and health.text == "ok\n"
            r = client.get("/metrics")
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
            m = parse(r.text)
            assert m["DCGM_FI_DEV_FB_USED"][gpu_labels("n1", 0)] == 2048.0
            assert m["agentctl_kv_hit_rate"] == {W1: 0.75}
            assert "DCGM_FI_DEV_FAN_SPEED" not in m
            # a new sample shows on the next scrape: nothing is cached
            store.insert_samples([Sample("n1", "gpu0.temperature_c", datetime.now(UTC), 61.0)])
            m = parse(client.get("/metrics").text)
            assert m["DCGM_FI_DEV_GPU_TEMP"][gpu_labels("n1", 0)] == 61.0
            assert client.get("/nope").status_code == 404
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=15)
        assert code == 0, proc.stderr.read()
    finally:
        children.stop(proc)


@pytest.mark.timeout(60)  # an empty store answers at once; a hang fails here
def test_json_of_show_is_one_envelope(
    cli: Any, db: tuple[str, Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _ = db
    monkeypatch.setenv("AGENTCTL_DATABASE_URL", url)
    _register()
    res = cli("--json", "metrics", "show")
    assert res.code == 0
    assert json.loads(res.stdout)["data"]["values"] == []
