"""Telemetry time series on a real PostgreSQL server (the harness of test_store_postgres.py):
insert, rollup (twice, then with a late sample), fleet_now, range queries and purge.

Skipped when no PostgreSQL server binaries are installed, as test_store_postgres.py is.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from test_store_postgres import db_name, pg, url  # noqa: F401  (fixtures)

from agentctl.collectors.store import Store
from agentctl.collectors.store.engine import HEAD_REVISION
from agentctl.collectors.store.timeseries import Retention, Sample

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def test_insert_rollup_query_and_purge_on_postgres(url: str) -> None:  # noqa: F811
    with Store.open(url) as store:
        assert store.schema_revision() == HEAD_REVISION
        samples = [
            Sample(node, "gpu0.temperature", T0 + timedelta(seconds=10 * i), float(i))
            for node in ("a", "b")
            for i in range(6 * 120)  # two hours, every 10 s
        ]
        samples.append(Sample("a", "gpu0.power", T0, None, "not_supported"))
        assert store.insert_samples(samples, batch_size=500) == 1441
        now = T0 + timedelta(hours=2)
        written = store.rollup(now)
        assert written == 2 * (120 + 2) + 2
        assert store.rollup(now) == 0

        latest = store.fleet_now(["gpu0."])
        assert [(v.node, v.series, v.value, v.status) for v in latest] == [
            ("a", "gpu0.power", None, "not_supported"),
            ("a", "gpu0.temperature", 719.0, "ok"),
            ("b", "gpu0.temperature", 719.0, "ok"),
        ]

        minute = store.series_over_range("gpu0.temperature", T0, now)
        assert minute.resolution_s == 60 and set(minute.points) == {"a", "b"}
        p = minute.points["b"][3]
        assert (p.ts, p.min, p.max, p.avg, p.count, p.last) == (
            T0 + timedelta(minutes=3),
            18.0,
            23.0,
            20.5,
            6,
            23.0,
        )

        # a late sample in minute 3: the next rollup recomputes that bucket
        store.insert_samples(
            [Sample("b", "gpu0.temperature", T0 + timedelta(minutes=3, seconds=5), 1000.0)]
        )
        store.rollup(now)
        p = store.node_series("b", "gpu0.temperature", T0, now)[3]
        assert (p.max, p.count, p.last) == (1000.0, 7, 23.0)

        hourly = store.node_series("a", "gpu0.temperature", T0, T0 + timedelta(days=30))
        assert [(h.ts, h.count) for h in hourly] == [(T0, 360), (T0 + timedelta(hours=1), 360)]

        raw = store.node_series("a", "gpu0.temperature", now - timedelta(minutes=5), now)
        assert len(raw) == 30 and raw[-1].last == 719.0

        counts = store.purge(now, retention=Retention(raw=timedelta(hours=1)), batch=100)
        assert counts == {"raw": 2 * 360 + 1 + 1, "1m": 0, "1h": 0}
