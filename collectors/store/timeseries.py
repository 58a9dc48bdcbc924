"""Telemetry time series: raw samples, 1-minute and 1-hour rollups, retention, dashboard queries.

Functions here take an open `Connection` inside a transaction the `Store` manages; the Store
methods (`insert_samples`, `rollup`, `purge`, `fleet_now`, `node_series`, `series_over_range`)
are the public face. Times are aware datetimes at the API and integer epoch milliseconds in
the tables (see models.py).

Rollups: both resolutions come from `rollup_select`, ONE definition parameterised by the bucket
width, over raw samples. `rollup(now)` recomputes, per resolution, every complete bucket from
its watermark (`metric_rollup_state.done_until`) up to `now` by delete + insert, so running it
twice gives the same rows. A sample inserted with a timestamp before a watermark (a late
sample) lowers that watermark to the start of its bucket in the same transaction as the
insert, so the next rollup recomputes that bucket (and the ones after it) for all series.
Buckets whose raw samples may already be purged (older than the raw retention) are never
recomputed: their rollups stay as they were.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from sqlalchemy import Connection, bindparam, insert, or_, select, text, update

from .models import NAME_LEN, MetricRollupState, MetricSeries

#: sample status names and their stored codes; only "ok" carries a value
STATUS_CODES: Final[Mapping[str, int]] = {"ok": 0, "not_supported": 1, "error": 2}
STATUS_NAMES: Final[Mapping[int, str]] = {v: k for k, v in STATUS_CODES.items()}

MINUTE: Final = 60
HOUR: Final = 3600
#: rollup resolutions, in seconds, finest first
RESOLUTIONS: Final = (MINUTE, HOUR)
#: "resolution" of raw samples in query results
RAW: Final = 0

#: ranges up to this long are answered from raw samples, up to RAW_MINUTE_SPAN from 1-minute
RAW_SPAN: Final = timedelta(hours=1)
MINUTE_SPAN: Final = timedelta(days=3)
#: one rollup transaction covers at most this much time (a long backlog is done in steps)
ROLLUP_CHUNK_MS: Final = HOUR * 1000


@dataclass(frozen=True)
class Sample:
    """One measurement. `value` must be None exactly when `status` is not "ok".

    `source` labels the series it lands in: None for a measurement, `replay:<set>` for a
    replayed GPU (the dashboards and exports show it; see collectors/gpu/recorded.py)."""

    node: str
    series: str
    ts: datetime
    value: float | None
    status: str = "ok"
    source: str | None = None


@dataclass(frozen=True)
class Retention:
    """How long each resolution is kept (`Store.purge`)."""

    raw: timedelta = timedelta(hours=48)
    minute: timedelta = timedelta(days=30)
    hour: timedelta = timedelta(days=365)


DEFAULT_RETENTION: Final = Retention()


@dataclass(frozen=True)
class LatestValue:
    """The newest raw sample of one node's series (`source` as in `Sample`)."""

    node: str
    series: str
    ts: datetime
    value: float | None
    status: str
    source: str | None = None


@dataclass(frozen=True)
class Point:
    """One chart point: aggregates of the samples in [ts, ts + step).

    `count` samples had a value (min/max/avg over them; None when there were none),
    `count_other` had none (not supported, error); `last`/`last_status` are the newest sample's.
    """

    ts: datetime
    min: float | None
    max: float | None
    avg: float | None
    count: int
    count_other: int
    last: float | None
    last_status: str


@dataclass(frozen=True)
class SeriesRange:
    """A range query's answer: the resolution read (0 raw, 60, 3600), the point width (`step_s`,
    a multiple of it) and the points per node, in time order."""

    series: str
    resolution_s: int
    step_s: float
    points: dict[str, list[Point]] = field(default_factory=dict)


def to_ms(value: datetime, what: str = "timestamp") -> int:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {value.isoformat()}")
    return round(value.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)


def _placeholder(conn: Connection) -> str:
    return "?" if conn.dialect.paramstyle == "qmark" else "%s"


# -- series ids --------------------------------------------------------------------------------


def series_ids(
    conn: Connection, pairs: Iterable[tuple[str, str]], cache: Mapping[tuple[str, str], int]
) -> dict[tuple[str, str], int]:
    """Ids of (node, key) pairs, creating the missing ones (idempotent under races)."""
    wanted = set(pairs)
    found = {p: cache[p] for p in wanted if p in cache}
    missing = wanted - found.keys()
    if not missing:
        return found
    for node, key in missing:
        if not node or not key or len(node) > NAME_LEN or len(key) > NAME_LEN:
            raise ValueError(f"node and series must be 1..{NAME_LEN} characters: {node!r} {key!r}")
    rows = [{"node": n, "key": k} for n, k in sorted(missing)]
    if conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        conn.execute(sqlite_insert(MetricSeries).on_conflict_do_nothing(), rows)
    elif conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        conn.execute(pg_insert(MetricSeries).on_conflict_do_nothing(), rows)
    else:  # pragma: no cover - other backends: plain inserts, no concurrent writers assumed
        known = {(n, k) for n, k in conn.execute(select(MetricSeries.node, MetricSeries.key))}
        todo = [r for r in rows if (r["node"], r["key"]) not in known]
        if todo:
            conn.execute(insert(MetricSeries), todo)
    nodes = sorted({n for n, _ in missing})
    for start in range(0, len(nodes), 500):
        stmt = select(MetricSeries.node, MetricSeries.key, MetricSeries.id).where(
            MetricSeries.node.in_(nodes[start : start + 500])
        )
        for node, key, sid in conn.execute(stmt):
            if (node, key) in missing:
                found[(node, key)] = sid
    return found


def label_series(
    conn: Connection, wanted: Mapping[int, str | None], known: Mapping[int, str | None]
) -> dict[int, str | None]:
    """Set `metric_series.source` where it differs from `wanted` (series id -> label); `known`
    is what the caller last saw committed. Returns the labels now stored, for its cache."""
    todo = {sid: src for sid, src in wanted.items() if sid not in known or known[sid] != src}
    if not todo:
        return {}
    unknown = [sid for sid in todo if sid not in known]
    current: dict[int, str | None] = {}
    for i in range(0, len(unknown), 500):
        stmt = select(MetricSeries.id, MetricSeries.source).where(
            MetricSeries.id.in_(unknown[i : i + 500])
        )
        current.update({int(sid): src for sid, src in conn.execute(stmt)})
    changed = {sid: src for sid, src in todo.items() if current.get(sid, known.get(sid)) != src}
    by_label: dict[str | None, list[int]] = {}
    for sid, src in changed.items():
        by_label.setdefault(src, []).append(sid)
    for src, sids in by_label.items():
        for i in range(0, len(sids), 500):
            conn.execute(
                update(MetricSeries)
                .where(MetricSeries.id.in_(sids[i : i + 500]))
                .values(source=src)
            )
    return dict(todo)


# -- insert --------------------------------------------------------------------------------------


def encode_samples(samples: Sequence[Sample]) -> list[tuple[str, str, int, float | None, int]]:
    """Validated (node, key, ts_ms, value, status_code) tuples; raises ValueError on bad input."""
    out = []
    for s in samples:
        code = STATUS_CODES.get(s.status)
        if code is None:
            raise ValueError(f"sample status {s.status!r} is not one of {sorted(STATUS_CODES)}")
        value = s.value
        if code == 0:
            if value is None or not math.isfinite(value):
                raise ValueError(f"an 'ok' sample needs a finite value: {s!r}")
            value = float(value)
        elif value is not None:
            raise ValueError(f"a {s.status!r} sample carries no value: {s!r}")
        out.append((s.node, s.series, to_ms(s.ts, "sample ts"), value, code))
    return out


def insert_batch(
    conn: Connection,
    rows: Sequence[tuple[str, str, int, float | None, int]],
    cache: Mapping[tuple[str, str], int],
) -> dict[tuple[str, str], int]:
    """Insert one batch (the caller's transaction); a repeated (series, ts) replaces the value.

    Returns the series ids used, for the caller to cache once the transaction committed.
    """
    ids = series_ids(conn, ((n, k) for n, k, *_ in rows), cache)
    ph = _placeholder(conn)
    conn.exec_driver_sql(
        "INSERT INTO metric_samples (series_id, ts, value, status) "  # noqa: S608
        f"VALUES ({ph}, {ph}, {ph}, {ph}) ON CONFLICT (series_id, ts) "
        "DO UPDATE SET value = excluded.value, status = excluded.status",
        [(ids[(n, k)], ts, v, c) for n, k, ts, v, c in rows],
    )
    oldest = min(r[2] for r in rows)
    for width in RESOLUTIONS:
        wms = width * 1000
        # a late sample: its bucket (and all after it) must be rolled up again
        conn.execute(
            text(
                "UPDATE metric_rollup_state SET done_until = :bucket "
                "WHERE resolution_s = :res AND done_until > :oldest"
            ),
            {"bucket": oldest // wms * wms, "res": width, "oldest": oldest},
        )
    return ids


# -- rollup ------------------------------------------------------------------------------------


def rollup_select(width_ms: int, where: str = "") -> str:
    """THE rollup definition: raw samples in [:start, :end) grouped into `width_ms` buckets.

    Columns: series_id, bucket, n, n_other, vmin, vmax, vavg, vlast, last_status, last_ts.
    `where` adds a condition on the series (alias `ser`). Used to fill both rollup resolutions
    and to downsample raw samples for range queries.
    """
    w = int(width_ms)
    if w < 1:
        raise ValueError("bucket width must be at least 1 ms")
    extra = f" AND ({where})" if where else ""
    # Driving from metric_series makes every range scan a primary-key seek per series; the
    # unary `+` keeps SQLite (without ANALYZE statistics) from scanning metric_samples instead.
    return f"""
SELECT g.series_id, g.bucket, g.n, g.n_other, g.vmin, g.vmax, g.vavg,
       s.value AS vlast, s.status AS last_status, g.last_ts
FROM (
    SELECT m.series_id AS series_id, (m.ts / {w}) * {w} AS bucket,
           COUNT(m.value) AS n,
           SUM(CASE WHEN m.status <> 0 THEN 1 ELSE 0 END) AS n_other,
           MIN(m.value) AS vmin, MAX(m.value) AS vmax, AVG(m.value) AS vavg,
           MAX(m.ts) AS last_ts
    FROM metric_series ser
    JOIN metric_samples m ON m.series_id = +ser.id AND m.ts >= :start AND m.ts < :end
    WHERE 1 = 1{extra}
    GROUP BY m.series_id, (m.ts / {w})
) g
JOIN metric_samples s ON s.series_id = g.series_id AND s.ts = g.last_ts
"""  # noqa: S608 (only integers and the caller's fixed SQL are interpolated)


_ROLLUP_COLUMNS: Final = (
    "resolution_s, series_id, bucket, n, n_other, vmin, vmax, vavg, vlast, last_status, last_ts"
)


def oldest_sample_ms(conn: Connection) -> int | None:
    value = conn.execute(
        text(
            "SELECT MIN((SELECT MIN(ts) FROM metric_samples m WHERE m.series_id = ser.id)) "
            "FROM metric_series ser"
        )
    ).scalar()
    return None if value is None else int(value)


def rollup_step(conn: Connection, width: int, now_ms: int, raw_keep_ms: int) -> int | None:
    """Roll up at most ROLLUP_CHUNK_MS of complete `width`-second buckets (one transaction).

    Returns the number of buckets written, or None when this resolution is up to date.
    """
    wms = width * 1000
    end_all = now_ms // wms * wms  # buckets ending at or before now are complete
    state = conn.execute(
        select(MetricRollupState.done_until)
        .where(MetricRollupState.resolution_s == width)
        .with_for_update()
    ).scalar()
    if state is None:
        oldest = oldest_sample_ms(conn)
        if oldest is None:
            return None
        start = oldest // wms * wms
        conn.execute(insert(MetricRollupState).values(resolution_s=width, done_until=start))
    else:
        start = int(state)
    horizon = -((raw_keep_ms - now_ms) // wms) * wms  # first bucket whose raw data is all kept
    start = max(start, horizon)
    if start >= end_all:
        return None
    end = min(end_all, start + max(ROLLUP_CHUNK_MS // wms, 1) * wms)
    params = {"start": start, "end": end, "res": width}
    conn.execute(
        text(
            "DELETE FROM metric_rollups WHERE resolution_s = :res "
            "AND series_id IN (SELECT id FROM metric_series) "
            "AND bucket >= :start AND bucket < :end"
        ),
        params,
    )
    written = conn.execute(
        text(
            f"INSERT INTO metric_rollups ({_ROLLUP_COLUMNS}) "  # noqa: S608
            f"SELECT {width}, r.series_id, r.bucket, r.n, r.n_other, r.vmin, r.vmax, r.vavg, "
            f"r.vlast, r.last_status, r.last_ts FROM ({rollup_select(wms)}) r"
        ),
        {"start": start, "end": end},
    ).rowcount
    conn.execute(
        text("UPDATE metric_rollup_state SET done_until = :end WHERE resolution_s = :res"),
        params,
    )
    return max(int(written or 0), 0)


# -- purge -------------------------------------------------------------------------------------


def all_series_ids(conn: Connection) -> list[int]:
    return [int(r[0]) for r in conn.execute(select(MetricSeries.id).order_by(MetricSeries.id))]


def delete_old(
    conn: Connection, resolution: int, series_id: int, cutoff_ms: int, limit: int
) -> int:
    """Delete at most `limit` rows of one series older than `cutoff_ms` (an index range)."""
    if resolution == RAW:
        sql = (
            "DELETE FROM metric_samples WHERE series_id = :sid AND ts IN ("
            "SELECT ts FROM metric_samples WHERE series_id = :sid AND ts < :cutoff "
            "ORDER BY ts LIMIT :limit)"
        )
    else:
        sql = (
            "DELETE FROM metric_rollups WHERE resolution_s = :res AND series_id = :sid "
            "AND bucket IN (SELECT bucket FROM metric_rollups WHERE resolution_s = :res "
            "AND series_id = :sid AND bucket < :cutoff ORDER BY bucket LIMIT :limit)"
        )
    params = {"sid": series_id, "cutoff": cutoff_ms, "limit": limit, "res": resolution}
    return max(int(conn.execute(text(sql), params).rowcount or 0), 0)


def watermark_ms(conn: Connection) -> int | None:
    """The lowest rollup watermark (raw samples at or after it are not rolled up everywhere)."""
    stmt = select(MetricRollupState.resolution_s, MetricRollupState.done_until)
    rows = {int(r[0]): int(r[1]) for r in conn.execute(stmt)}
    if any(width not in rows for width in RESOLUTIONS):
        return None
    return min(int(v) for v in rows.values())


# -- queries -----------------------------------------------------------------------------------


def _prefix_filter(prefixes: Sequence[str]) -> Any:
    return or_(*(MetricSeries.key.startswith(p, autoescape=True) for p in prefixes))


def fleet_now(
    conn: Connection, prefixes: Sequence[str], nodes: Sequence[str] | None, since_ms: int | None
) -> list[LatestValue]:
    ser = select(MetricSeries.id, MetricSeries.node, MetricSeries.key, MetricSeries.source)
    if prefixes:
        ser = ser.where(_prefix_filter(prefixes))
    if nodes is not None:
        ser = ser.where(MetricSeries.node.in_(list(nodes)))
    series: dict[int, tuple[str, str]] = {}
    labels: dict[int, str | None] = {}
    for sid, node, key, source in conn.execute(ser):
        series[int(sid)] = (node, key)
        labels[int(sid)] = source
    if not series:
        return []
    # newest sample per series in one statement: a primary-key seek each (the max over the
    # (series_id, ts) key); ids come from the query above, so only integers are inlined
    newest: dict[int, tuple[int, float | None, int]] = {}
    ids = sorted(series)
    for i in range(0, len(ids), 500):
        chunk = ",".join(str(x) for x in ids[i : i + 500])
        sql = (
            "SELECT ser.id, s.ts, s.value, s.status FROM metric_series ser "  # noqa: S608
            "JOIN metric_samples s ON s.series_id = +ser.id AND s.ts = "
            "(SELECT MAX(m.ts) FROM metric_samples m WHERE m.series_id = ser.id) "
            f"WHERE ser.id IN ({chunk})"
        )
        for sid, ts, value, status in conn.exec_driver_sql(sql):
            newest[int(sid)] = (int(ts), value, int(status))
    out = []
    for sid in sorted(newest, key=lambda i: series[i]):
        ts, value, status = newest[sid]
        if since_ms is not None and ts < since_ms:
            continue
        node, key = series[sid]
        out.append(
            LatestValue(node, key, from_ms(ts), value, STATUS_NAMES[status], labels.get(sid))
        )
    return out


def choose_resolution(span: timedelta, max_points: int) -> tuple[int, int]:
    """(resolution_s, step_ms) for a range: raw for short ranges, 1-minute up to MINUTE_SPAN,
    1-hour beyond; the step is widened (in whole resolution units) to keep <= max_points."""
    if max_points < 2:
        raise ValueError("max_points must be at least 2")
    span_ms = max(int(span.total_seconds() * 1000), 1)
    if span <= RAW_SPAN:
        resolution, unit = RAW, 1000  # whole seconds
    elif span <= MINUTE_SPAN:
        resolution, unit = MINUTE, MINUTE * 1000
    else:
        resolution, unit = HOUR, HOUR * 1000
    # a range starting mid-step touches one step more than span/step: leave room for it
    slots = max(max_points - 1, 1)
    units = max(1, -(-span_ms // (unit * slots)))
    return resolution, unit * units


def _merge_select(resolution: int, step_ms: int, where: str) -> str:
    """Rollup rows of one resolution merged into `step_ms` buckets (same columns as
    `rollup_select`); the average is weighted by each bucket's count."""
    w = int(step_ms)
    return f"""
SELECT g.series_id, g.bucket, g.n, g.n_other, g.vmin, g.vmax, g.vavg,
       r.vlast, r.last_status, g.last_ts
FROM (
    SELECT m.series_id AS series_id, (m.bucket / {w}) * {w} AS bucket,
           SUM(m.n) AS n, SUM(m.n_other) AS n_other, MIN(m.vmin) AS vmin, MAX(m.vmax) AS vmax,
           SUM(m.vavg * m.n) / NULLIF(SUM(m.n), 0) AS vavg,
           MAX(m.bucket) AS last_bucket, MAX(m.last_ts) AS last_ts
    FROM metric_series ser
    JOIN metric_rollups m ON m.resolution_s = {int(resolution)} AND m.series_id = +ser.id
        AND m.bucket >= :start AND m.bucket < :end
    WHERE {where}
    GROUP BY m.series_id, (m.bucket / {w})
) g
JOIN metric_rollups r ON r.resolution_s = {int(resolution)} AND r.series_id = g.series_id
    AND r.bucket = g.last_bucket
"""  # noqa: S608 (only integers and the caller's fixed SQL are interpolated)


def series_range(
    conn: Connection,
    key: str,
    nodes: Sequence[str] | None,
    start: datetime,
    end: datetime,
    max_points: int,
) -> SeriesRange:
    start_ms, end_ms = to_ms(start, "start"), to_ms(end, "end")
    if end_ms <= start_ms:
        raise ValueError("end must be after start")
    resolution, step = choose_resolution(end - start, max_points)
    where = "ser.key = :key"
    params: dict[str, Any] = {"key": key}
    if nodes is not None:
        where += " AND ser.node IN :nodes"
        params["nodes"] = list(nodes)
    if resolution == RAW:
        sql = rollup_select(step, where)
        params.update(start=start_ms, end=end_ms)
    else:
        unit = resolution * 1000
        # whole buckets overlapping [start, end)
        sql = _merge_select(resolution, step, where)
        params.update(start=start_ms // unit * unit, end=end_ms)
    joined = (
        f"SELECT q.*, ser.node FROM ({sql}) q JOIN metric_series ser ON ser.id = q.series_id "  # noqa: S608
        "ORDER BY ser.node, q.bucket"
    )
    stmt = text(joined)
    if nodes is not None:
        stmt = stmt.bindparams(bindparam("nodes", expanding=True))
    result = SeriesRange(series=key, resolution_s=resolution, step_s=step / 1000)
    rows = conn.execute(stmt, params).all()  # one fetch: row-by-row costs more than the SQL
    points = result.points
    for _sid, bucket, n, n_other, vmin, vmax, vavg, vlast, last_status, _last_ts, node in rows:
        points.setdefault(node, []).append(
            Point(
                ts=from_ms(int(bucket)),
                min=vmin,
                max=vmax,
                avg=None if vavg is None else float(vavg),
                count=int(n),
                count_other=int(n_other),
                last=vlast,
                last_status=STATUS_NAMES[int(last_status)],
            )
        )
    return result


def bucket_averages(
    conn: Connection, keys: Sequence[str], start_ms: int, end_ms: int, buckets: int
) -> dict[str, dict[str, list[float | None]]]:
    """Raw-sample averages of `keys` for every node on a fixed grid of `buckets` equal steps
    over [start, end) (None where a step has no value): sparklines for a whole fleet in one
    statement, aligned in time across nodes."""
    if not keys or buckets < 1 or end_ms <= start_ms:
        return {}
    step = max(1, -(-(end_ms - start_ms) // buckets))
    sql = text(
        "SELECT ser.key, ser.node, (m.ts - :start) / :step AS b, AVG(m.value) "
        "FROM metric_series ser JOIN metric_samples m ON m.series_id = +ser.id "
        "AND m.ts >= :start AND m.ts < :end "
        "WHERE ser.key IN :keys GROUP BY ser.id, b"
    ).bindparams(bindparam("keys", expanding=True))
    out: dict[str, dict[str, list[float | None]]] = {}
    params = {"start": start_ms, "end": end_ms, "step": step, "keys": list(keys)}
    for key, node, b, avg in conn.execute(sql, params).all():
        grid = out.setdefault(key, {}).setdefault(node, [None] * buckets)
        if 0 <= int(b) < buckets:
            grid[int(b)] = None if avg is None else float(avg)
    return out


__all__ = [
    "DEFAULT_RETENTION",
    "HOUR",
    "MINUTE",
    "RAW",
    "RESOLUTIONS",
    "STATUS_CODES",
    "LatestValue",
    "Point",
    "Retention",
    "Sample",
    "SeriesRange",
]
