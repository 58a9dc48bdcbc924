"""Benchmark of the telemetry time-series store on a temporary SQLite file (run on demand:
`python tests/bench/bench_store.py [--quick]`; not part of the test suite).

Measured:
- insert rate: `Store.insert_samples` of a fleet's samples (nodes x gpus x metrics per tick,
  ticks every 10 s), batches of --batch samples, one transaction each;
- rollup: `Store.rollup` over the inserted raw data;
- a --days history: hourly rollup rows for every day, 1-minute rows for the last
  --minute-days, raw samples for the last 10 minutes. The rollup rows are written DIRECTLY
  (executemany into metric_rollups), not computed from raw samples, to keep generation time
  sane; their shape is what `rollup` writes;
- query latency p50/p95: `fleet_now(["gpu"])`, one node's --days chart of one series, and the
  fleet's --days chart of one series (`series_over_range`).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from agentctl.collectors.store import Store
from agentctl.collectors.store.timeseries import Sample

METRICS = ("temperature", "power")


def series_keys(gpus: int) -> list[str]:
    return [f"gpu{g}.{m}" for g in range(gpus) for m in METRICS]


def ticks(nodes: int, keys: list[str], start: datetime, count: int) -> Iterator[Sample]:
    rng = random.Random(1)
    for t in range(count):
        ts = start + timedelta(seconds=10 * t)
        for n in range(nodes):
            for k in keys:
                if k.endswith("power") and n % 16 == 0:
                    yield Sample(f"node{n:03d}", k, ts, None, "not_supported")
                else:
                    yield Sample(f"node{n:03d}", k, ts, 30 + rng.random() * 50)


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(0.95 * len(times)))]


def write_rollups(store: Store, resolution: int, start_ms: int, buckets: int) -> int:
    engine = store._engine  # bench only: bulk-load rows of the shape rollup() writes
    with engine.connect() as conn:
        ids = [r[0] for r in conn.exec_driver_sql("SELECT id FROM metric_series ORDER BY id")]
    rng = random.Random(2)
    total = 0
    step = resolution * 1000
    for first in range(0, buckets, 24):
        rows = []
        for b in range(first, min(first + 24, buckets)):
            bucket = start_ms + b * step
            for sid in ids:
                v = 30 + rng.random() * 50
                rows.append(
                    (resolution, sid, bucket, 6, 0, v - 5, v + 5, v, v, 0, bucket + step - 1)
                )
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT OR REPLACE INTO metric_rollups (resolution_s, series_id, bucket, n, "
                "n_other, vmin, vmax, vavg, vlast, last_status, last_ts) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        total += len(rows)
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=64)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--minute-days", type=float, default=1.0)
    ap.add_argument("--insert-ticks", type=int, default=360, help="10 s ticks to insert raw")
    ap.add_argument("--batch", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="8 nodes, 3 days, 60 ticks")
    args = ap.parse_args()
    if args.quick:
        args.nodes, args.days, args.insert_ticks, args.repeat = 8, 3, 60, 10
    keys = series_keys(args.gpus)
    now = datetime(2026, 6, 1, tzinfo=UTC)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.db"
        store = Store.open(f"sqlite:///{path}")
        n_series = args.nodes * len(keys)
        print(f"{args.nodes} nodes x {len(keys)} series = {n_series} series; batch {args.batch}")

        raw_start = now - timedelta(seconds=10 * args.insert_ticks)
        samples = list(ticks(args.nodes, keys, raw_start, args.insert_ticks))
        t = time.perf_counter()
        store.insert_samples(samples, batch_size=args.batch)
        dt = time.perf_counter() - t
        print(f"insert: {len(samples)} samples in {dt:.2f} s = {len(samples) / dt:,.0f} samples/s")

        t = time.perf_counter()
        rows = store.rollup(now)
        print(f"rollup of that raw data: {rows} rows in {time.perf_counter() - t:.2f} s")

        t = time.perf_counter()
        hour_start = now - timedelta(days=args.days)
        first_raw = raw_start.replace(minute=0, second=0)
        hours = int((first_raw - hour_start).total_seconds() // 3600)
        h = write_rollups(store, 3600, int(hour_start.timestamp() * 1000), hours)
        minute_start = first_raw - timedelta(days=args.minute_days)
        minutes = int((first_raw - minute_start).total_seconds() // 60)
        m = write_rollups(store, 60, int(minute_start.timestamp() * 1000), minutes)
        print(
            f"history (rollup rows written directly): {h:,} 1-hour + {m:,} 1-minute rows "
            f"in {time.perf_counter() - t:.1f} s; file {path.stat().st_size / 2**20:.0f} MiB"
        )

        start = now - timedelta(days=args.days)
        results = {
            "fleet_now(['gpu'])": lambda: store.fleet_now(["gpu"]),
            f"node_series 1 node {args.days} d": lambda: store.node_series(
                "node001", "gpu0.temperature", start, now
            ),
            f"series_over_range fleet {args.days} d": lambda: store.series_over_range(
                "gpu0.temperature", start, now
            ),
            "node_series 1 node 1 h (raw)": lambda: store.node_series(
                "node001", "gpu0.temperature", now - timedelta(hours=1), now
            ),
        }
        sizes = {name: fn() for name, fn in results.items()}
        for name, fn in results.items():
            p50, p95 = timed(fn, args.repeat)
            got = sizes[name]
            n = len(got) if isinstance(got, list) else sum(len(v) for v in got.points.values())
            print(f"{name}: p50 {p50 * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms ({n} rows/points)")
        store.close()


if __name__ == "__main__":
    main()
