"""The Store API end to end on a real SQLite file: nodes, facts, runs, concurrency."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from agentctl.collectors.store import (
    HostResult,
    NodeRecord,
    Store,
    bound_text,
)
from agentctl.ctl.errors import StoreError


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'agentctl.db'}"


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    s = Store.open(url)
    yield s
    s.close()


def gpu_facts(
    n: int, name: str = "NVIDIA H100 80GB HBM3", driver: str = "550.54.15"
) -> dict[str, Any]:
    return {
        "os": {"pretty_name": "Ubuntu 22.04.4 LTS"},
        "kernel": {"release": "5.15.0-105-generic"},
        "gpus": {
            "gpus": [
                {
                    "index": i,
                    "uuid": f"GPU-{name[:4]}-{i}",
                    "name": name,
                    "pci_bus_id": f"00000000:{i:02X}:00.0",
                    "memory_total_mib": 81559,
                    "driver_version": driver,
                    "serial": f"165{i}",
                    "vbios_version": "96.00.99.00.01",
                }
                for i in range(n)
            ]
        },
    }


def assert_utc(value: datetime | None) -> None:
    assert value is not None and value.tzinfo is not None
    assert value.utcoffset() == timedelta(0)


# -- nodes -----------------------------------------------------------------------------------


def test_upsert_nodes_is_idempotent_and_updates(store: Store) -> None:
    nodes = [
        NodeRecord("gpu-02", "10.0.0.2", 22, ("h100",), ("serving",), 8),
        NodeRecord("gpu-01", "10.0.0.1", None),
    ]
    store.upsert_nodes(nodes)
    store.upsert_nodes(nodes)
    views = store.list_nodes()
    assert [v.name for v in views] == ["gpu-01", "gpu-02"]
    assert views[1].groups == ("h100",) and views[1].roles == ("serving",)
    assert views[1].expected_gpus == 8 and views[1].port == 22
    assert views[0].last_seen is None and views[0].gpu_count is None

    store.upsert_nodes([NodeRecord("gpu-01", "gpu-01.lan", 2222, ("a100",))])
    views = store.list_nodes()
    assert len(views) == 2
    assert (views[0].address, views[0].port, views[0].groups) == ("gpu-01.lan", 2222, ("a100",))
    store.upsert_nodes([])


# -- facts -----------------------------------------------------------------------------------


def test_record_facts_replaces_gpu_rows(store: Store) -> None:
    store.upsert_nodes([NodeRecord("gpu-01", "10.0.0.1", 22, expected_gpus=8)])
    store.record_facts("gpu-01", gpu_facts(8), {})
    (view,) = store.list_nodes()
    assert view.gpu_count == 8 and len(view.gpu_names) == 8
    assert view.driver_version == "550.54.15"

    store.record_facts("gpu-01", gpu_facts(4, name="NVIDIA A100-SXM4-80GB", driver="535.1"), {})
    (view,) = store.list_nodes()
    assert view.gpu_count == 4
    assert view.gpu_names == ("NVIDIA A100-SXM4-80GB",) * 4
    assert view.driver_version == "535.1"

    # a collection that found no GPUs is a real answer: zero, not unknown
    store.record_facts("gpu-01", {"gpus": {"gpus": []}}, {})
    (view,) = store.list_nodes()
    assert view.gpu_count == 0 and view.gpu_names == () and view.driver_version is None


def test_snapshot_without_gpus_family_keeps_gpu_rows(store: Store) -> None:
    store.record_facts("gpu-01", gpu_facts(2), {})
    store.record_facts("gpu-01", {"os": {"pretty_name": "Rocky Linux 9.3"}}, {"gpus": "timeout"})
    store.record_facts("gpu-01", {"gpus": {"error": "nvidia-smi not found"}}, {})
    (view,) = store.list_nodes()
    assert view.gpu_count == 2
    assert view.os is None  # the newest snapshot has no os family
    latest = store.latest_facts("gpu-01")
    assert latest is not None and latest.facts == {"gpus": {"error": "nvidia-smi not found"}}


def test_gpu_entries_with_missing_keys_are_tolerated(store: Store) -> None:
    facts = {
        "gpus": {
            "gpus": [
                {"name": "NVIDIA L4"},  # no index: its position
                {"index": "1", "memory_total_mib": "23034 MiB", "uuid": None},
                "garbage",
                {"index": 3, "memory_total_mib": True, "name": "NVIDIA L4"},
            ]
        }
    }
    store.record_facts("edge-01", facts, {})
    (view,) = store.list_nodes()
    assert view.gpu_count == 3
    assert view.gpu_names == ("NVIDIA L4", "NVIDIA L4")
    assert view.driver_version is None


def test_unknown_node_is_created_by_facts(store: Store) -> None:
    snap_id = store.record_facts("10.9.9.9", {"kernel": {"release": "6.8.0"}}, {})
    assert isinstance(snap_id, int)
    (view,) = store.list_nodes()
    assert (view.name, view.address, view.port) == ("10.9.9.9", "10.9.9.9", None)
    assert view.kernel == "6.8.0" and view.os is None and view.gpu_count is None
    assert_utc(view.last_seen)


def test_list_nodes_summarises_latest_snapshot(store: Store) -> None:
    store.upsert_nodes([NodeRecord("a", "10.0.0.1", 22), NodeRecord("b", "10.0.0.2", 22)])
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    store.record_facts("a", {"os": {"pretty_name": "Old"}}, {}, collected_at=t0)
    store.record_facts("a", gpu_facts(8), {}, collected_at=t0 + timedelta(hours=1))
    # a late-arriving older snapshot is history, not the current state
    store.record_facts(
        "a",
        {"os": {"pretty_name": "Older"}, **{"gpus": {"gpus": []}}},
        {},
        collected_at=t0 - timedelta(days=1),
    )
    a, b = store.list_nodes()
    assert a.os == "Ubuntu 22.04.4 LTS" and a.kernel == "5.15.0-105-generic"
    assert a.gpu_count == 8 and a.last_seen == t0 + timedelta(hours=1)
    assert (b.os, b.kernel, b.gpu_count, b.gpu_names, b.last_seen) == (None, None, None, (), None)
    latest = store.latest_facts("a")
    assert latest is not None and latest.collected_at == t0 + timedelta(hours=1)
    assert store.latest_facts("b") is None and store.latest_facts("nobody") is None


def test_datetimes_come_back_aware_utc(store: Store) -> None:
    cest = timezone(timedelta(hours=2))
    when = datetime(2026, 6, 1, 14, 30, 15, 123456, tzinfo=cest)
    store.record_facts("n", {"os": {"pretty_name": "x"}}, {"disk": "slow"}, collected_at=when)
    snap = store.latest_facts("n")
    assert snap is not None
    assert_utc(snap.collected_at)
    assert snap.collected_at == when
    assert snap.collected_at.hour == 12
    assert snap.problems == {"disk": "slow"}

    run_id = store.start_run("facts", command=None, selection=None, hosts=["n"], options={})
    store.record_result(run_id, HostResult("n", "ok", 0, "", "", 0.1))
    store.finish_run(run_id, status="ok", recap={})
    run = store.get_run(run_id)
    assert run is not None
    assert_utc(run.started_at)
    assert_utc(run.finished_at)


def test_naive_datetime_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        store.record_facts("n", {}, {}, collected_at=datetime(2026, 1, 1))


# -- runs ------------------------------------------------------------------------------------


def test_run_lifecycle_with_concurrent_results(store: Store) -> None:
    hosts = [f"gpu-{i:02d}" for i in range(48)]
    run_id = store.start_run(
        "run",
        command="nvidia-smi -L",
        selection="role:serving",
        hosts=hosts,
        options={"forks": 8, "timeout": 30},
    )
    running = store.get_run(run_id)
    assert running is not None and running.status == "running" and running.finished_at is None
    assert running.hosts == tuple(hosts) and running.results == ()

    statuses = ["ok", "changed", "failed", "unreachable", "skipped", "ok"]
    start = threading.Barrier(8)

    def work(worker: int) -> None:
        start.wait()
        for i in range(worker, len(hosts), 8):
            host = hosts[i]
            # first attempt always fails; the retry overwrites it
            store.record_result(run_id, HostResult(host, "failed", 1, "", "boom", 0.5))
            status = statuses[i % len(statuses)]
            store.record_result(
                run_id,
                HostResult(
                    host,
                    status,
                    0 if status in ("ok", "changed") else None,
                    f"out {host}",
                    "",
                    1.25,
                    attempts=2,
                ),
            )

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(work, range(8)))

    store.finish_run(run_id, status="partial", recap={"ok": 16, "failed": 8})
    run = store.get_run(run_id)
    assert run is not None
    assert run.status == "partial" and run.recap == {"ok": 16, "failed": 8}
    assert run.command == "nvidia-smi -L" and run.selection == "role:serving"
    assert run.options == {"forks": 8, "timeout": 30}
    assert [r.host for r in run.results] == sorted(hosts)
    assert all(r.attempts == 2 and r.stdout == f"out {r.host}" for r in run.results)
    by_host = {r.host: r for r in run.results}
    assert by_host["gpu-00"].status == "ok" and by_host["gpu-00"].exit_status == 0
    assert by_host["gpu-02"].status == "failed" and by_host["gpu-02"].exit_status is None


def test_two_store_handles_write_concurrently(url: str) -> None:
    """Two engines on one file behave like two processes: only SQLite's locking guards them."""
    first, second = Store.open(url), Store.open(url)
    try:
        run_id = first.start_run("run", command="true", selection=None, hosts=[], options={})

        def work(args: tuple[Store, int]) -> None:
            s, n = args
            for i in range(10):
                s.record_result(run_id, HostResult(f"h{n}-{i}", "ok", 0, "", "", 0.0))

        jobs = [(first if n % 2 else second, n) for n in range(8)]
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(work, jobs))
        run = second.get_run(run_id)
        assert run is not None and len(run.results) == 80
    finally:
        first.close()
        second.close()


def test_list_runs_newest_first_and_last_run_id(store: Store) -> None:
    assert store.last_run_id() is None and store.list_runs() == []
    ids = [
        store.start_run("run", command=f"echo {i}", selection="all", hosts=["a"], options={})
        for i in range(5)
    ]
    store.record_result(ids[-1], HostResult("a", "ok", 0, "hi\n", "", 0.2))
    assert store.last_run_id() == ids[-1]
    runs = store.list_runs(limit=3)
    assert [r.id for r in runs] == ids[::-1][:3]
    assert runs[0].results[0].stdout == "hi\n"
    assert store.list_runs(limit=0) == []
    assert store.get_run(12345) is None


def test_hosts_with_status(store: Store) -> None:
    run_id = store.start_run("run", command="x", selection=None, hosts=list("abcde"), options={})
    for host, status in zip(
        "abcde", ["ok", "failed", "unreachable", "failed", "skipped"], strict=True
    ):
        store.record_result(run_id, HostResult(host, status, None, "", "", 0.0))
    assert store.hosts_with_status(run_id) == ["b", "c", "d"]
    assert store.hosts_with_status(run_id, ["skipped", "ok"]) == ["a", "e"]
    assert store.hosts_with_status(run_id, "failed") == ["b", "d"]
    assert store.hosts_with_status(run_id, ()) == []
    assert store.hosts_with_status(run_id + 1) == []


def test_secret_options_are_not_stored(store: Store) -> None:
    options = {
        "become_password": "hunter2",
        "hf_token": "hf_abc",
        "ssh": {"private_key": "-----BEGIN", "key_path": "~/.ssh/id"},
        "max_tokens": 512,
    }
    run_id = store.start_run("run", command="x", selection=None, hosts=[], options=options)
    run = store.get_run(run_id)
    assert run is not None
    assert run.options == {
        "become_password": "***",
        "hf_token": "***",
        "ssh": {"private_key": "***", "key_path": "~/.ssh/id"},
        "max_tokens": 512,
    }


def test_invalid_statuses_and_unknown_runs(store: Store) -> None:
    run_id = store.start_run("run", command="x", selection=None, hosts=[], options={})
    with pytest.raises(ValueError):
        store.record_result(run_id, HostResult("a", "exploded", None, "", "", 0.0))
    with pytest.raises(ValueError):
        store.finish_run(run_id, status="done", recap={})
    with pytest.raises(StoreError, match="no such run"):
        store.record_result(run_id + 99, HostResult("a", "ok", 0, "", "", 0.0))
    with pytest.raises(StoreError, match="no such run"):
        store.finish_run(run_id + 99, status="ok", recap={})


# -- bounded output --------------------------------------------------------------------------

MARKER = re.compile(r"\n\[\.\.\. (\d+) bytes cut \.\.\.\]\n")


def test_output_is_bounded_keeping_head_and_tail(url: str, tmp_path: Path) -> None:
    cap = 1024
    with Store.open(url, output_cap=cap) as store:
        run_id = store.start_run("run", command="x", selection=None, hosts=["a"], options={})
        stdout = "HEAD-LINE\n" + "x" * 50_000 + "\nTAIL-LINE"
        stderr = "é" * 3000  # 2 bytes each: cuts must not split a character
        store.record_result(run_id, HostResult("a", "failed", 1, stdout, stderr, 1.0))
        run = store.get_run(run_id)
    assert run is not None
    (res,) = run.results
    assert len(res.stdout.encode()) <= cap
    assert res.stdout.startswith("HEAD-LINE\n") and res.stdout.endswith("\nTAIL-LINE")
    match = MARKER.search(res.stdout)
    assert match is not None
    kept = len(res.stdout.encode()) - len(match.group(0).encode())
    assert int(match.group(1)) == len(stdout.encode()) - kept

    assert len(res.stderr.encode()) <= cap
    head, tail = MARKER.split(res.stderr)[::2]
    assert set(head) == {"é"} and set(tail) == {"é"}


def test_bound_text_edge_cases() -> None:
    assert bound_text("short", 256) == "short"
    assert bound_text("a\x00b", 256) == "a\ufffdb"
    assert bound_text("bad \udcff byte", 256) == "bad ? byte"
    exact = "y" * 256
    assert bound_text(exact, 256) == exact
    assert len(bound_text("z" * 257, 256).encode()) <= 256
    # a cap too small for the marker keeps what fits of the head, never a split character
    assert bound_text("abcdef" * 10, 5) == "abcde"
    assert bound_text("é" * 10, 5) == "éé"
