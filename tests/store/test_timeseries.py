"""Telemetry time series on real SQLite files: insert, rollup, purge, queries, migration, crash."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect

from agentctl.collectors.store import NodeRecord, Store
from agentctl.collectors.store.engine import HEAD_REVISION, alembic_config
from agentctl.collectors.store.timeseries import Retention, Sample, choose_resolution

T0 = datetime(2026, 3, 1, tzinfo=UTC)
TS_TABLES = {"metric_series", "metric_samples", "metric_rollups", "metric_rollup_state"}


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'agentctl.db'}"


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    s = Store.open(url)
    yield s
    s.close()


def minute_of_samples(node: str, key: str, start: datetime, values: list[float]) -> list[Sample]:
    step = timedelta(seconds=60 / len(values))
    return [Sample(node, key, start + i * step, v) for i, v in enumerate(values)]


def rollup_rows(url: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
        return conn.execute("SELECT * FROM metric_rollups ORDER BY 1, 2, 3").fetchall()


def test_insert_rollup_and_query_minute_and_hour(store: Store) -> None:
    samples = []
    for minute in range(120):  # two full hours, 6 samples a minute
        values = [float(minute * 10 + i) for i in range(6)]
        samples += minute_of_samples(
            "gpu-01", "gpu0.temperature", T0 + timedelta(minutes=minute), values
        )
    assert store.insert_samples(samples, batch_size=100) == 720
    assert store.rollup(T0 + timedelta(hours=2)) == 120 + 2

    minute = store.series_over_range("gpu0.temperature", T0, T0 + timedelta(hours=2))
    assert minute.resolution_s == 60 and minute.step_s == 60
    points = minute.points["gpu-01"]
    assert len(points) == 120
    p = points[7]
    assert p.ts == T0 + timedelta(minutes=7)
    assert (p.min, p.max, p.avg, p.count, p.last) == (70.0, 75.0, 72.5, 6, 75.0)

    day = store.node_series("gpu-01", "gpu0.temperature", T0, T0 + timedelta(days=5))
    assert [pt.ts for pt in day] == [T0, T0 + timedelta(hours=1)]
    assert (day[1].min, day[1].max, day[1].count, day[1].last) == (600.0, 1195.0, 360, 1195.0)
    assert day[1].avg == pytest.approx(
        sum(600 + 10 * m + i for m in range(60) for i in range(6)) / 360
    )


def test_rollup_twice_is_identical_and_late_sample_recomputes_its_bucket(
    store: Store, url: str
) -> None:
    for minute in range(10):
        store.insert_samples(
            minute_of_samples("n", "s", T0 + timedelta(minutes=minute), [1.0, 2.0, 3.0])
        )
    now = T0 + timedelta(minutes=10)
    store.rollup(now)
    first = rollup_rows(url)
    assert store.rollup(now) == 0
    assert rollup_rows(url) == first
    # a late sample into minute 3, already rolled up
    store.insert_samples([Sample("n", "s", T0 + timedelta(minutes=3, seconds=59), 100.0)])
    store.rollup(now)
    after = {(r[0], r[2]): r for r in rollup_rows(url)}
    bucket3 = after[(60, int((T0 + timedelta(minutes=3)).timestamp() * 1000))]
    assert bucket3[3:9] == (4, 0, 1.0, 100.0, 26.5, 100.0)  # n, n_other, min, max, avg, last
    others = [r for r in first if r[2] != bucket3[2]]
    assert [r for r in rollup_rows(url) if r[2] != bucket3[2]] == others


def test_incomplete_buckets_wait(store: Store) -> None:
    store.insert_samples(minute_of_samples("n", "s", T0, [1.0, 2.0]))
    assert store.rollup(T0 + timedelta(seconds=59)) == 0
    assert store.rollup(T0 + timedelta(seconds=60)) == 1  # the minute; the hour is not done


def test_not_supported_is_distinct_from_values(store: Store) -> None:
    store.insert_samples(
        [
            Sample("n", "gpu0.power", T0, None, "not_supported"),
            Sample("n", "gpu0.power", T0 + timedelta(seconds=10), 0.0),
            Sample("n", "gpu0.power", T0 + timedelta(seconds=20), None, "not_supported"),
        ]
    )
    (latest,) = store.fleet_now(["gpu0."])
    assert (latest.value, latest.status) == (None, "not_supported")
    store.rollup(T0 + timedelta(minutes=1))
    (p,) = store.node_series("n", "gpu0.power", T0, T0 + timedelta(hours=2))
    assert (p.count, p.count_other, p.min, p.max, p.avg) == (1, 2, 0.0, 0.0, 0.0)
    assert (p.last, p.last_status) == (None, "not_supported")


@pytest.mark.parametrize(
    "bad",
    [
        Sample("n", "s", T0, None),
        Sample("n", "s", T0, 1.0, "not_supported"),
        Sample("n", "s", T0, float("nan")),
        Sample("n", "s", T0, 1.0, "bogus"),
        Sample("n", "s", T0.replace(tzinfo=None), 1.0),
        Sample("", "s", T0, 1.0),
    ],
)
def test_invalid_samples_are_refused_and_write_nothing(store: Store, bad: Sample) -> None:
    with pytest.raises(ValueError):
        store.insert_samples([Sample("n", "s", T0 - timedelta(seconds=1), 1.0), bad])
    assert store.fleet_now() == []


def test_same_timestamp_replaces(store: Store) -> None:
    store.insert_samples([Sample("n", "s", T0, 1.0)])
    store.insert_samples([Sample("n", "s", T0, 2.0)])
    (latest,) = store.fleet_now()
    assert latest.value == 2.0


def test_fleet_now_latest_per_node_and_prefix_filter(store: Store) -> None:
    samples = [
        Sample(node, key, T0 + timedelta(seconds=s), float(s * 100 + i))
        for i, node in enumerate(["a", "b"])
        for key in ["gpu0.temperature", "gpu1.temperature", "serving.w0.ttft_p99", "gpu_%x"]
        for s in range(3)
    ]
    store.insert_samples(samples, batch_size=5)
    got = store.fleet_now(["gpu0.", "serving."])
    assert [(v.node, v.series, v.value, v.ts) for v in got] == [
        ("a", "gpu0.temperature", 200.0, T0 + timedelta(seconds=2)),
        ("a", "serving.w0.ttft_p99", 200.0, T0 + timedelta(seconds=2)),
        ("b", "gpu0.temperature", 201.0, T0 + timedelta(seconds=2)),
        ("b", "serving.w0.ttft_p99", 201.0, T0 + timedelta(seconds=2)),
    ]
    # LIKE wildcards in a prefix are literal
    assert [v.series for v in store.fleet_now(["gpu_%"])] == ["gpu_%x", "gpu_%x"]
    assert store.fleet_now(["gpu0."], nodes=["b"])[0].node == "b"
    stale = store.fleet_now(max_age=timedelta(minutes=1), now=T0 + timedelta(hours=1))
    assert stale == []


def test_series_carry_their_source_label_across_processes(url: str, store: Store) -> None:
    """A replayed GPU's series say so (`replay:<set>`), measured ones carry no label, and a
    label that changes is rewritten, also when another Store (process) wrote it first."""
    replay = "replay:h100"
    store.insert_samples([
        Sample("n1", "gpu0.temperature_c", T0, 41.0, source=replay),
        Sample("n1", "host.load1", T0, 0.5),
        Sample("n2", "gpu0.temperature_c", T0, 60.0),
    ])  # fmt: skip
    got = {(v.node, v.series): v.source for v in store.fleet_now()}
    assert got == {("n1", "gpu0.temperature_c"): replay, ("n1", "host.load1"): None,
                   ("n2", "gpu0.temperature_c"): None}  # fmt: skip
    with Store.open(url) as other:  # a cold cache: reads the stored label before writing
        other.insert_samples([Sample("n1", "gpu0.temperature_c", T0 + timedelta(seconds=5),
                                     63.0)])  # fmt: skip
    assert store.fleet_now(["gpu0."], nodes=["n1"])[0].source is None
    store.insert_samples([Sample("n2", "gpu0.temperature_c", T0 + timedelta(seconds=5), 61.0,
                                 source=replay)])  # fmt: skip
    assert store.fleet_now(["gpu0."], nodes=["n2"])[0].source == replay


def test_resolution_choice_bounds_points() -> None:
    assert choose_resolution(timedelta(minutes=30), 1000)[0] == 0
    assert choose_resolution(timedelta(days=2), 1000)[0] == 60
    assert choose_resolution(timedelta(days=30), 1000) == (3600, 3600 * 1000)
    res, step = choose_resolution(timedelta(days=365), 500)
    assert res == 3600 and step % 3_600_000 == 0 and 365 * 86_400_000 / step <= 499


def test_thirty_day_chart_is_bounded(store: Store) -> None:
    # one sample an hour for 30 days, rolled up; then a chart capped at 100 points
    samples = [Sample("n", "s", T0 + timedelta(hours=h), float(h)) for h in range(30 * 24)]
    store.insert_samples(samples)
    end = T0 + timedelta(days=30)
    store.rollup(end, retention=Retention(raw=timedelta(days=31)))
    full = store.node_series("n", "s", T0, end)
    assert len(full) == 720
    capped = store.series_over_range("s", T0, end, max_points=100)
    pts = capped.points["n"]
    assert capped.resolution_s == 3600 and len(pts) <= 100
    assert sum(p.count for p in pts) == 720
    assert min(p.min or 0 for p in pts) == 0 and max(p.max or 0 for p in pts) == 719
    assert pts[-1].last == 719


def test_rollup_ignores_buckets_past_raw_retention(store: Store) -> None:
    store.insert_samples([Sample("n", "s", T0, 1.0), Sample("n", "s", T0 + timedelta(days=3), 2.0)])
    store.rollup(T0 + timedelta(days=3, minutes=1))  # default raw retention 48 h: T0 is out
    pts = store.node_series("n", "s", T0, T0 + timedelta(days=4))
    assert [p.ts for p in pts] == []  # the 1-hour bucket of day 3 is not complete yet
    minute = store.series_over_range("s", T0 + timedelta(days=1), T0 + timedelta(days=3, minutes=1))
    assert minute.resolution_s == 60
    assert [p.ts for p in minute.points["n"]] == [T0 + timedelta(days=3)]


def test_purge_in_batches_keeps_recent_and_unrolled(store: Store) -> None:
    samples = [
        Sample("n", f"k{k}", T0 + timedelta(minutes=m), 1.0) for k in range(3) for m in range(600)
    ]
    store.insert_samples(samples)
    now = T0 + timedelta(hours=10)
    # nothing rolled up yet: raw data is kept whatever its age
    assert store.purge(now, retention=Retention(raw=timedelta(hours=1)), batch=7)["raw"] == 0
    store.rollup(now)
    counts = store.purge(
        now,
        retention=Retention(
            raw=timedelta(hours=1), minute=timedelta(hours=2), hour=timedelta(hours=5)
        ),
        batch=7,
    )
    assert counts == {"raw": 3 * 540, "1m": 3 * 480, "1h": 3 * 5}
    assert store.purge(now, retention=Retention(raw=timedelta(hours=1)), batch=7) == {
        "raw": 0,
        "1m": 0,
        "1h": 0,
    }
    recent = store.node_series("n", "k0", now - timedelta(minutes=30), now)
    assert len(recent) == 30


def test_database_at_0001_is_upgraded_keeping_data(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    with Store.open(url) as store:
        store.upsert_nodes([NodeRecord("gpu-01", "10.0.0.1", 22)])
        run_id = store.start_run("run", command="x", selection=None, hosts=["a"], options={})
    engine = create_engine(url)
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0001")
    assert not TS_TABLES & set(inspect(engine).get_table_names())
    engine.dispose()
    with Store.open(url) as store:
        assert store.schema_revision() == HEAD_REVISION == "0005"
        assert [n.name for n in store.list_nodes()] == ["gpu-01"]
        assert store.last_run_id() == run_id
        store.insert_samples([Sample("gpu-01", "gpu0.temperature", T0, 40.0)])
        assert store.fleet_now()[0].value == 40.0
    engine = create_engine(url)
    assert set(inspect(engine).get_table_names()) >= TS_TABLES
    engine.dispose()


_WRITER = """
import sys
from datetime import UTC, datetime, timedelta
from agentctl.collectors.store import Store
from agentctl.collectors.store.timeseries import Sample
url, size = sys.argv[1], int(sys.argv[2])
t0 = datetime(2026, 3, 1, tzinfo=UTC)
with Store.open(url) as store:
    for batch in range(10_000):
        samples = [
            Sample(f"n{i % 8}", f"gpu{i % 4}.b", t0 + timedelta(milliseconds=batch * size + i), 1.0)
            for i in range(size)
        ]
        store.insert_samples(samples, batch_size=size)
        print(batch, flush=True)
"""


def test_sigkill_mid_insert_leaves_only_whole_batches(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    url = f"sqlite:///{path}"
    size = 20_000
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, url, str(size)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    committed = -1
    try:
        for line in proc.stdout:
            committed = int(line)
            if committed >= 4:
                break
        os.kill(proc.pid, signal.SIGKILL)  # typically inside batch 5's transaction
    finally:
        proc.kill()
        proc.wait()
    assert committed >= 4, "the writer died before committing 5 batches"
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    with Store.open(url) as store:
        engine = store._engine  # white-box: count rows per batch
        with engine.connect() as conn:
            t0_ms = int(T0.timestamp() * 1000)
            rows = conn.exec_driver_sql(
                "SELECT (ts - ?) / ?, COUNT(*) FROM metric_samples GROUP BY 1", (t0_ms, size)
            ).fetchall()
    per_batch = dict(rows)
    assert set(range(committed + 1)) <= set(per_batch)
    assert set(per_batch.values()) == {size}
    assert sorted(per_batch) == list(range(len(per_batch)))


def test_downgrade_to_0001_removes_only_timeseries(url: str) -> None:
    Store.open(url).close()
    engine = create_engine(url)
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0001")
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert "nodes" in tables and not TS_TABLES & tables
