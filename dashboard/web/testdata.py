"""A realistic, deterministic fleet history written through the Store API only: the web and TUI
tests read it, and the dashboard benchmark scales it to 64 nodes x 8 GPUs x 30 days.

Cadence (why: 30 days x 64 nodes x ~100 series at one sample a minute is ~250 M rows): the node
roll-ups (`node.*`) get a sample every minute over the last `dense_hours`, per-GPU and serving
series over the last `gpu_dense_hours`; older history is one sample an hour, which the final
`store.rollup` turns into the same 1-minute and 1-hour rollup rows a collector would leave.
Static GPU fields (memory total, power limit, PCIe link...) are written hourly plus once at `now`.
Everything depends only on (nodes, gpus, hours, now, seed).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from agentctl.collectors.store import (
    EventRecord,
    HostResult,
    NodeRecord,
    Retention,
    Sample,
    Store,
)
from agentctl.dashboard.web.server import BackgroundServer

GIB = 1024**3
_DYNAMIC = ("utilization_gpu_pct", "memory_used_bytes", "temperature_c", "power_draw_w",
            "sm_clock_mhz")  # fmt: skip
_STATIC = ("memory_total_bytes", "power_limit_w", "ecc_uncorrected_volatile",
           "remapped_rows.pending", "pcie_gen_current", "pcie_width_current")  # fmt: skip
_DAY = 86_400.0


@dataclass(frozen=True)
class Populated:
    """What a test needs to know about the generated fleet."""

    now: datetime
    nodes: tuple[str, ...]
    xid_node: str  # Xid 79 on GPU 3 (0000:06:00.0), a failed L1, one GPU missing
    hot_node: str  # runs hot: temperature above the red threshold, L1 warn
    reboot_node: str  # holds a reboot-cause report
    unchecked_node: str | None  # never had an L1 (None for fewer than 4 nodes)
    run_id: int
    samples: int


@dataclass(frozen=True)
class _Node:
    name: str
    base: float  # mean utilisation, %
    phase: float
    hot: bool
    worker: bool
    no_ecc: bool  # one GPU reports ECC as not supported


def node_name(i: int) -> str:
    return f"gpu-node-{i:02d}"


def _ticks(now: datetime, hours: float, dense_hours: float) -> list[datetime]:
    """Hourly ticks before the dense window, minute ticks inside it, `now` last."""
    start = now - timedelta(hours=hours)
    dense_start = now - timedelta(hours=min(hours, dense_hours))
    out: list[datetime] = []
    t = start
    while t < dense_start:
        out.append(t)
        t += timedelta(hours=1)
    t = dense_start
    while t <= now:
        out.append(t)
        t += timedelta(minutes=1)
    return out


def _util(n: _Node, ts: datetime, rng: random.Random) -> float:
    day = 2 * math.pi * (ts.timestamp() % _DAY) / _DAY
    return min(100.0, max(0.0, n.base + 30 * math.sin(day + n.phase) + rng.uniform(-6, 6)))


def _hot(util: float, rng: random.Random) -> float:
    """A GPU running hot: above the red threshold (85 C) at any hour, whatever the load's
    daily curve does (a fixture whose alert depends on the time of day fails at random)."""
    return 86.5 + 0.04 * util + rng.uniform(0, 1.5)


def _node_samples(
    n: _Node, ticks: list[datetime], gpus: int, rng: random.Random
) -> Iterator[Sample]:
    for ts in ticks:
        u = _util(n, ts, rng)
        yield Sample(n.name, "node.gpu_util_avg", ts, u)
        yield Sample(n.name, "node.gpu_mem_used_pct", ts, min(100.0, 25 + 0.6 * u))
        temp = _hot(u, rng) if n.hot else 42 + 0.35 * u + rng.uniform(-1.5, 1.5)
        yield Sample(n.name, "node.gpu_temp_max", ts, temp)
        yield Sample(n.name, "node.gpu_power_w", ts, gpus * (90 + 5.5 * u))
        yield Sample(n.name, "host.cpu_util_pct", ts, min(100.0, 8 + 0.3 * u))
        yield Sample(n.name, "host.mem_used_pct", ts, 30 + 0.2 * u)
        yield Sample(n.name, "host.load1", ts, round(0.5 + u / 10, 2))
        yield Sample(n.name, "host.disk_used_pct", ts, 61.0)
    yield Sample(n.name, "collect.interval_s", ticks[-1], 60.0)


def _serving_samples(n: _Node, ticks: list[datetime], rng: random.Random) -> Iterator[Sample]:
    prefix = f"serving.{n.name}-w0."
    for ts in ticks:
        u = _util(n, ts, rng)
        p50 = 0.06 + 0.002 * u + rng.uniform(0, 0.01)
        values = {
            "running": float(round(u / 6)),
            "waiting": float(max(0, round((u - 70) / 4))),
            "kv_usage": min(1.0, 0.15 + 0.007 * u),
            "kv_hit_rate": min(
                1.0, max(0.0, 0.62 + 0.2 * math.sin(n.phase) + rng.uniform(-0.05, 0.05))
            ),
            "ttft_p50_s": p50,
            "ttft_p90_s": p50 * 2.2,
            "ttft_p99_s": p50 * 3.8,
            "itl_p50_s": 0.018 + 0.0001 * u,
        }
        for key, value in values.items():
            yield Sample(n.name, prefix + key, ts, value)


def _gpu_samples(
    n: _Node, ticks: list[datetime], gpus: int, rng: random.Random, *, fallen: datetime | None
) -> Iterator[Sample]:
    for ts in ticks:
        u = _util(n, ts, rng)
        for g in range(gpus):
            p = f"gpu{g}."
            if fallen is not None and g == 3 and ts >= fallen:
                for f in _DYNAMIC:
                    yield Sample(n.name, p + f, ts, None, "error")
                continue
            gu = min(100.0, max(0.0, u + (g - (gpus - 1) / 2) * 2.5 + rng.uniform(-3, 3)))
            yield Sample(n.name, p + "utilization_gpu_pct", ts, gu)
            yield Sample(n.name, p + "memory_used_bytes", ts, float(int((20 + 0.55 * gu) * GIB)))
            hot = n.hot and g == 0
            temp = _hot(gu, rng) if hot else 40 + 0.35 * gu + rng.uniform(-1, 1)
            yield Sample(n.name, p + "temperature_c", ts, round(temp))
            yield Sample(n.name, p + "power_draw_w", ts, round(90 + 5.5 * gu, 1))
            yield Sample(n.name, p + "sm_clock_mhz", ts, 1980.0 if gu > 5 else 345.0)


def _static_samples(n: _Node, ticks: list[datetime], gpus: int, xid: bool) -> Iterator[Sample]:
    hourly = [t for t in ticks if t.minute == ticks[-1].minute] or ticks[-1:]
    if hourly[-1] != ticks[-1]:
        hourly.append(ticks[-1])
    for ts in hourly:
        for g in range(gpus):
            p = f"gpu{g}."
            yield Sample(n.name, p + "memory_total_bytes", ts, 80.0 * GIB)
            yield Sample(n.name, p + "power_limit_w", ts, 700.0)
            if g == 1 and n.no_ecc:
                yield Sample(n.name, p + "ecc_uncorrected_volatile", ts, None, "not_supported")
            else:
                yield Sample(
                    n.name, p + "ecc_uncorrected_volatile", ts, 2.0 if xid and g == 3 else 0.0
                )
            yield Sample(n.name, p + "remapped_rows.pending", ts, 1.0 if xid and g == 3 else 0.0)
            yield Sample(n.name, p + "pcie_gen_current", ts, 5.0)
            yield Sample(n.name, p + "pcie_width_current", ts, 16.0)


def _samples(
    nodes: list[_Node], now: datetime, hours: float, gpus: int, seed: int, xid_node: str,
    dense_hours: float, gpu_dense_hours: float,
) -> Iterator[Sample]:  # fmt: skip
    dense = _ticks(now, hours, dense_hours)
    gpu_ticks = _ticks(now, hours, gpu_dense_hours)
    fallen = now - timedelta(minutes=25)
    for i, n in enumerate(nodes):
        xid = n.name == xid_node
        yield from _node_samples(n, dense, gpus, random.Random(f"{seed}:{i}:node"))
        yield from _gpu_samples(n, gpu_ticks, gpus, random.Random(f"{seed}:{i}:gpu"),
                                fallen=fallen if xid else None)  # fmt: skip
        yield from _static_samples(n, gpu_ticks, gpus, xid)
        if n.worker:
            yield from _serving_samples(n, gpu_ticks, random.Random(f"{seed}:{i}:serving"))


def _facts(name: str, index: int, gpus: int, missing: int | None) -> dict[str, object]:
    items = [
        {
            "index": g,
            "uuid": f"GPU-{index:04x}{g:04x}-5eed-4000-8000-{index * 100 + g:012d}",
            "name": "NVIDIA H100 80GB HBM3",
            "pci_bus_id": f"0000:{0x06 + g * 0x10:02x}:00.0",
            "memory_total_mib": 81559,
            "driver_version": "550.54.15",
        }
        for g in range(gpus)
        if g != missing
    ]
    return {"gpus": {"gpus": items}, "os_release": {"pretty_name": "Ubuntu 22.04.4 LTS"}}


def _l1(name: str, verdict: str, summary: str, at: datetime) -> dict[str, object]:
    checks = [{"name": "gpu_count", "verdict": "pass", "reason": "8 of 8 GPUs"}]
    if verdict == "fail":
        checks = [
            {"name": "gpu_count", "verdict": "fail", "reason": "expected 8 GPUs, found 7"},
            {"name": "xid", "verdict": "fail", "reason": "Xid 79 on 0000:06:00.0"},
        ]
    elif verdict == "warn":
        checks.append({"name": "temperature", "verdict": "warn", "reason": "GPU 0 at 88 C"})
    return {"schema": "agentctl.diag.l1/1", "host": name, "verdict": verdict,
            "summary": summary, "collected_at": at.isoformat(), "checks": checks}  # fmt: skip


def populate(
    store: Store,
    *,
    nodes: int = 4,
    gpus: int = 8,
    hours: float = 2,
    now: datetime | None = None,
    seed: int = 0,
    dense_hours: float = 48,
    gpu_dense_hours: float = 2,
    batch_size: int = 50_000,
) -> Populated:
    """Write `nodes` nodes with `hours` of history ending at `now` (default: this minute),
    their facts, events, diagnostics and one provisioning run; then roll everything up."""
    if nodes < 1 or gpus < 4 or hours <= 0:
        raise ValueError("populate needs at least 1 node, 4 GPUs and some history")
    now = (now or datetime.now(UTC)).astimezone(UTC).replace(second=0, microsecond=0)
    rng = random.Random(seed)
    fleet = [
        _Node(node_name(i), base=rng.uniform(35, 65), phase=rng.uniform(0, 2 * math.pi),
              hot=(i == 2 % nodes), worker=(i != 0 or nodes == 1), no_ecc=(i == 3))
        for i in range(nodes)
    ]  # fmt: skip
    names = tuple(n.name for n in fleet)
    xid_node, hot_node = names[1 % nodes], names[2 % nodes]
    reboot_node = names[3 % nodes]
    unchecked = names[-1] if nodes >= 5 else None
    store.upsert_nodes(
        NodeRecord(n.name, f"10.0.{i // 200}.{10 + i % 200}", 22, groups=(f"rack-{i // 16}",),
                   roles=("router",) if i == 0 and nodes > 1 else ("worker",),
                   expected_gpus=gpus)
        for i, n in enumerate(fleet)
    )  # fmt: skip
    for i, n in enumerate(fleet):
        missing = 3 if n.name == xid_node else None
        store.record_facts(n.name, _facts(n.name, i, gpus, missing), {}, collected_at=now)
    count = store.insert_samples(
        _samples(fleet, now, hours, gpus, seed, xid_node, dense_hours, gpu_dense_hours),
        batch_size=batch_size,
    )
    store.rollup(now, retention=Retention(raw=timedelta(hours=hours + 2)))
    _events(store, now, xid_node, hot_node)
    _diagnostics(store, fleet, now, xid_node, hot_node, reboot_node, unchecked)
    run_id = _run(store, names, xid_node)
    return Populated(now, names, xid_node, hot_node, reboot_node, unchecked, run_id, count)


def _events(store: Store, now: datetime, xid_node: str, hot_node: str) -> None:
    store.record_events([
        EventRecord(xid_node, "xid", "xid:0000:06:00:79", now - timedelta(minutes=25),
                    "critical", "NVRM: Xid (PCI:0000:06:00): 79, GPU has fallen off the bus.",
                    code=79, subject="0000:06:00.0",
                    data={"meaning": "GPU has fallen off the bus",
                          "action": "RESTART_BM (reboot) / CONTACT_SUPPORT"}),
        EventRecord(hot_node, "xid", "xid:0000:16:00:31", now - timedelta(hours=1, minutes=5),
                    "warn", "NVRM: Xid (PCI:0000:16:00): 31, pid=4242, Ch 00000010, MMU Fault",
                    code=31, subject="0000:16:00.0", data={"meaning": "GPU memory page fault"}),
        EventRecord(xid_node, "check", "check:gpu_count", now - timedelta(minutes=20),
                    "critical", "expected 8 GPUs, found 7", subject="gpu_count",
                    data={"verdict": "fail", "category": "gpu"}),
        EventRecord(hot_node, "check", "check:temperature", now - timedelta(minutes=10),
                    "warn", "GPU 0 at 88 C", subject="temperature",
                    data={"verdict": "warn", "category": "thermal"}),
    ])  # fmt: skip


def _diagnostics(
    store: Store, fleet: list[_Node], now: datetime, xid_node: str, hot_node: str,
    reboot_node: str, unchecked: str | None,
) -> None:  # fmt: skip
    for n in fleet:
        if n.name == unchecked:
            continue
        verdict, summary = "pass", "pass: all 14 checks pass or do not apply"
        if n.name == xid_node:
            verdict = "fail"
            summary = "fail: gpu_count: expected 8 GPUs, found 7; xid: Xid 79 on 0000:06:00.0"
        elif n.name == hot_node:
            verdict, summary = "warn", "warn: temperature: GPU 0 at 88 C"
        at = now - timedelta(minutes=15)
        store.save_diag(n.name, "l1", verdict=verdict, summary=summary,
                        data=_l1(n.name, verdict, summary, at), created_at=at)  # fmt: skip
    boot = now - timedelta(hours=1, minutes=40)
    summary = "kernel panic: NVRM fault on 0000:06:00.0 just before the last entry (high)"
    store.save_diag(
        reboot_node, "reboot_cause", verdict="kernel_panic", summary=summary, created_at=boot,
        data={"schema": "agentctl.diag.reboot_cause/1", "host": reboot_node,
              "reason_code": "kernel_panic", "confidence": "high", "summary": summary,
              "window": {"prev_boot_id": "4f2a", "prev_last_entry": (boot - timedelta(minutes=2))
                         .isoformat(), "current_boot_start": boot.isoformat()},
              "evidence": [{"source": "journal", "ref": "-1", "excerpt": "Kernel panic - not "
                            "syncing: Fatal exception", "supports": "kernel_panic",
                            "strength": "strong", "observed_at": None}],
              "missing_sources": [{"source": "sel", "status": "not_collected", "detail": ""}]},
    )  # fmt: skip
    stamp = (now - timedelta(minutes=5)).strftime("%Y%m%dT%H%M%SZ")
    bundle = f"agentctl-l2-{xid_node}-{stamp}.tar.gz"
    store.save_diag(xid_node, "l2", verdict="fail", summary=f"bundle {bundle} sha256 " + "ab" * 32,
                    data={"path": f"/var/lib/agentctl/bundles/{bundle}", "sha256": "ab" * 32,
                          "bytes": 123_456, "items": 42, "truncated_items": 0},
                    created_at=now - timedelta(minutes=5))  # fmt: skip


def _run(store: Store, names: tuple[str, ...], xid_node: str) -> int:
    run_id = store.start_run("provision", command="provision --batch 1,100%", selection="all",
                             hosts=list(names), options={"batch": "1,100%"})  # fmt: skip
    counts = {"ok": 0, "changed": 0, "failed": 0}
    for name in names:
        if name == xid_node:
            err = "nvidia-smi: No devices were found"
            result = HostResult(name, "failed", 1, "", err, 4.2, error_kind="command_failed",
                                error_message="step gpu-check failed")  # fmt: skip
        else:
            result = HostResult(name, "changed", 0, "driver 550.54.15 pinned", "", 12.5)
        counts[result.status] += 1
        store.record_result(run_id, result)
    store.finish_run(run_id, status="partial" if counts["failed"] else "ok", recap=counts)
    return run_id


@contextmanager
def live_server(app: Any, *, timeout_s: float = 10.0) -> Iterator[str]:
    """Serve `app` with uvicorn on 127.0.0.1 (a free port) in a thread; yields the base URL."""
    server = BackgroundServer(app)
    url = server.start(timeout_s)
    try:
        yield url
    finally:
        server.stop(timeout_s)
