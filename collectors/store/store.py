"""The store: fleet inventory, fact snapshots and run history behind one small typed API.

Every public method opens one short session and returns plain records, so the fan-out can call
`record_result` from many threads and nothing ORM-shaped leaks out. Every database or
migration failure leaves as `StoreError` naming the (password-masked) URL, never a traceback.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from types import TracebackType
from typing import Any, Final

from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from agentctl.ctl.errors import StoreError  # type: ignore[import-not-found, unused-ignore]

from . import events as _events
from . import users as _users
from .engine import (
    BEGIN_MODE_OPTION,
    ForeignKeyViolation,
    MigrationError,
    create_store_engine,
    current_revision,
    display_url,
    ensure_sqlite_dir,
    is_sqlite_memory,
    sqlite_file,
    upgrade_to_head,
)
from .models import (
    NAME_LEN,
    SHORT_LEN,
    ApiToken,
    BenchResult,
    DiagReport,
    FactSnapshotRow,
    Gpu,
    Node,
    Run,
    RunResult,
    User,
)
from .records import (
    RESULT_STATUSES,
    RUN_STATUSES,
    BenchRecord,
    DiagRecord,
    EventRecord,
    EventView,
    FactSnapshot,
    HostResult,
    NodeRecord,
    NodeView,
    RunRecord,
    UserRecord,
)
from .timeseries import (
    DEFAULT_RETENTION,
    RAW,
    RESOLUTIONS,
    LatestValue,
    Point,
    Retention,
    Sample,
    SeriesRange,
)
from .timeseries import all_series_ids as _all_series_ids
from .timeseries import bucket_averages as _bucket_averages
from .timeseries import delete_old as _delete_old
from .timeseries import encode_samples as _encode_samples
from .timeseries import fleet_now as _fleet_now
from .timeseries import insert_batch as _insert_batch
from .timeseries import label_series as _label_series
from .timeseries import rollup_step as _rollup_step
from .timeseries import series_range as _series_range
from .timeseries import to_ms as _to_ms
from .timeseries import watermark_ms as _watermark_ms

DEFAULT_OUTPUT_CAP: Final = 64 * 1024
#: samples per insert transaction (`insert_samples`)
DEFAULT_SAMPLE_BATCH: Final = 10_000
#: rows per delete statement (`purge`)
DEFAULT_PURGE_BATCH: Final = 5_000
#: repeats of one event key closer than this fold into one row (`record_events`)
DEFAULT_EVENT_WINDOW: Final = timedelta(minutes=10)
#: how long events and diagnostic reports are kept (`purge_events`), like 1-hour rollups
DEFAULT_EVENT_RETENTION: Final = timedelta(days=365)
CUT_MARKER: Final = "\n[... {n} bytes cut ...]\n"
REDACTED: Final = "***"

#: option keys (split on non-alphanumerics) that name a secret; values are never stored
_SECRET_WORDS: Final = frozenset(
    {"password", "passwd", "pass", "passphrase", "secret", "token", "credential", "credentials"}
)
_SECRET_PAIRS: Final = frozenset({("api", "key"), ("private", "key"), ("access", "key")})

_DB_ERRORS: Final = (SQLAlchemyError, MigrationError, ForeignKeyViolation)


def utcnow() -> datetime:
    return datetime.now(UTC)


def bound_text(text: str, cap: int) -> str:
    """`text` cut to at most `cap` UTF-8 bytes, keeping head and tail around a marker.

    Both ends matter for command output: the head says what ran, the tail how it ended. Also
    makes the text storable anywhere: NUL (refused by PostgreSQL) and lone surrogates (from
    undecodable bytes) are replaced.
    """
    data = text.replace("\x00", "\ufffd").encode("utf-8", errors="replace")
    if len(data) <= cap:
        return data.decode("utf-8")
    budget = cap - len(CUT_MARKER.format(n=len(data)).encode())
    if budget <= 0:  # no room for a marker: keep what fits of the head
        return data[:cap].decode("utf-8", errors="ignore")
    head_len = budget // 2
    # "ignore" drops only the character split by each cut
    head = data[:head_len].decode("utf-8", errors="ignore")
    tail = data[len(data) - (budget - head_len) :].decode("utf-8", errors="ignore")
    cut = len(data) - len(head.encode()) - len(tail.encode())
    return head + CUT_MARKER.format(n=cut) + tail


def storable(value: Any) -> Any:
    """A copy of a JSON document whose strings (keys too) are storable anywhere, as in
    `bound_text`: NUL and lone surrogates replaced.

    PostgreSQL accepts a NUL escape in `json` but then fails every query that looks inside
    the document, and refuses NUL outright in text columns (the GPU rows).
    """
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd").encode("utf-8", errors="replace").decode("utf-8")
    if isinstance(value, Mapping):
        return {storable(k) if isinstance(k, str) else k: storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    return value


def _is_secret_key(key: str) -> bool:
    words = [w for w in re.split(r"[^a-z0-9]+", key.lower()) if w]
    return any(w in _SECRET_WORDS for w in words) or any(
        pair in _SECRET_PAIRS for pair in pairwise(words)
    )


def redact(value: Any) -> Any:
    """A copy of `value` with the values of secret-looking keys replaced, at any depth."""
    if isinstance(value, Mapping):
        return {str(k): REDACTED if _is_secret_key(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


_HINTS: Final = (
    ("file is not a database", "the file is not an agentctl database or is corrupt; move it aside"),
    ("unable to open database file", "check that the directory exists and is writable"),
    ("readonly database", "the database file or its directory is read-only"),
    ("database is locked", "another process held the write lock too long; retry"),
    ("can't locate revision", "the database was migrated by a newer agentctl; upgrade agentctl"),
    ("no module named", "install the database driver this URL names"),
    ("can't load plugin", "the URL names an unknown database backend"),
)


def _reason(exc: BaseException) -> str:
    """The underlying cause in one line, without SQL text or row values."""
    orig = getattr(exc, "orig", None)
    source = orig if isinstance(orig, BaseException) else exc
    text = str(source).strip().split("\n", 1)[0]
    return text or type(source).__name__


def store_error(display: str, action: str, exc: BaseException) -> StoreError:
    reason = _reason(exc)
    lowered = reason.lower()
    hint = next((h for needle, h in _HINTS if needle in lowered), None)
    return StoreError(f"store {display}: {action} failed: {reason}", hint=hint)


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    match = re.match(r"\s*(-?\d+)", str(value))
    return int(match.group(1)) if match else None


def _as_str(value: Any, max_len: int) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text[:max_len] or None


def gpu_rows(facts: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """Rows for the gpus table from facts["gpus"]["gpus"], or None if GPUs were not collected.

    Tolerant by design (facts come from many driver versions): a missing key becomes NULL, a
    missing index becomes the list position, and a repeated index keeps the last entry.
    """
    family = facts.get("gpus")
    if not isinstance(family, Mapping):
        return None
    items = family.get("gpus")
    if not isinstance(items, list):
        return None
    rows: dict[int, dict[str, Any]] = {}
    for position, item in enumerate(items):
        if not isinstance(item, Mapping):
            continue
        index = _as_int(item.get("index"))
        index = position if index is None else index
        rows[index] = {
            "index": index,
            "uuid": _as_str(item.get("uuid"), NAME_LEN),
            "name": _as_str(item.get("name"), NAME_LEN),
            "pci_bus_id": _as_str(item.get("pci_bus_id"), SHORT_LEN),
            "memory_total_mib": _as_int(item.get("memory_total_mib")),
            "driver_version": _as_str(item.get("driver_version"), SHORT_LEN),
            "serial": _as_str(item.get("serial"), SHORT_LEN),
            "vbios_version": _as_str(item.get("vbios_version"), SHORT_LEN),
        }
    return [rows[i] for i in sorted(rows)]


def _require_aware(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware, got naive {value.isoformat()}")
    return value.astimezone(UTC)


def _host_result(row: RunResult) -> HostResult:
    return HostResult(
        host=row.host,
        status=row.status,
        exit_status=row.exit_status,
        stdout=row.stdout,
        stderr=row.stderr,
        duration_s=row.duration_s,
        error_kind=row.error_kind,
        error_message=row.error_message,
        attempts=row.attempts,
    )


def _run_record(run: Run) -> RunRecord:
    return RunRecord(
        id=run.id,
        kind=run.kind,
        command=run.command,
        selection=run.selection,
        options=dict(run.options or {}),
        started_at=run.started_at,
        finished_at=run.finished_at,
        status=run.status,
        recap=dict(run.recap or {}),
        results=tuple(_host_result(r) for r in run.results),
        hosts=tuple(run.hosts or ()),
    )


class Store:
    """Handle on one database; thread-safe, cheap per call. Build it with `Store.open`."""

    def __init__(self, engine: Engine, *, display: str, output_cap: int) -> None:
        self._engine = engine
        self._display = display
        self.output_cap = output_cap
        sqlite = engine.dialect.name == "sqlite"
        self._readers = sessionmaker(bind=engine)
        # writers take SQLite's write lock at BEGIN (see engine.py); a no-op option elsewhere
        self._writers = sessionmaker(
            bind=engine.execution_options(**{BEGIN_MODE_OPTION: "IMMEDIATE"})
        )
        # One process, one writer at a time: threads queue here instead of in busy_timeout.
        self._write_lock: AbstractContextManager[Any] = (
            threading.Lock() if sqlite else nullcontext()
        )
        # An in-memory database is a single shared connection: everything must queue.
        self._read_lock = self._write_lock if is_sqlite_memory(engine.url) else nullcontext()
        self._closed = False
        #: (node, series key) -> metric_series.id, filled only after a commit
        self._series_ids: dict[tuple[str, str], int] = {}
        #: metric_series.id -> its source label as last committed
        self._series_sources: dict[int, str | None] = {}

    # -- lifecycle -------------------------------------------------------------------------

    @classmethod
    def open(cls, url: str, *, output_cap: int = DEFAULT_OUTPUT_CAP) -> Store:
        """Connect, create a SQLite file's directory if needed, and migrate to head."""
        if output_cap < 1:
            raise ValueError("output_cap must be at least 1 byte")
        display = display_url(url)
        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError):
            # no chaining: the parser's message would echo the URL, password included
            raise StoreError(
                f"not a valid database URL: {display}",
                hint="use e.g. sqlite:////path/to/agentctl.db or postgresql+psycopg://...",
            ) from None
        try:
            ensure_sqlite_dir(parsed)
        except OSError as exc:
            path = sqlite_file(parsed)
            where = f" {path.parent}" if path is not None else ""
            raise StoreError(
                f"store {display}: cannot create directory{where}: {exc.strerror or exc}",
                hint="choose a data directory you can write to",
            ) from exc
        engine: Engine | None = None
        try:
            engine = create_store_engine(parsed)
            upgrade_to_head(engine)
        except (*_DB_ERRORS, ImportError, OSError) as exc:
            if engine is not None:
                engine.dispose()
            raise store_error(display, "opening the database", exc) from exc
        return cls(engine, display=display, output_cap=output_cap)

    def close(self) -> None:
        """Close pooled connections; the store is unusable afterwards."""
        self._closed = True
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self._display!r})"

    @contextmanager
    def _session(self, action: str, *, write: bool = False) -> Iterator[Session]:
        """One transaction, committed on success; database errors become StoreError."""
        if self._closed:
            raise StoreError(f"store {self._display}: {action} failed: the store is closed")
        lock = self._write_lock if write else self._read_lock
        maker = self._writers if write else self._readers
        try:
            with lock, maker.begin() as session:
                yield session
        except _DB_ERRORS as exc:
            raise store_error(self._display, action, exc) from exc

    def schema_revision(self) -> str | None:
        """The Alembic revision the database is at."""
        with self._session("reading the schema revision") as session:
            return current_revision(session.connection())

    # -- nodes and facts -------------------------------------------------------------------

    def upsert_nodes(self, nodes: Iterable[NodeRecord]) -> None:
        """Insert or update nodes by name (idempotent); an upserted node is un-retired."""
        wanted = {n.name: n for n in nodes}
        if not wanted:
            return
        now = utcnow()
        with self._session("saving nodes", write=True) as session:
            # all rows, not IN (...): one bind per name would hit old SQLite's 999-variable cap
            existing = {n.name: n for n in session.scalars(select(Node))}
            for name, rec in wanted.items():
                node = existing.get(name)
                if node is None:
                    node = Node(name=name, first_seen=now, last_seen=None, retired=False)
                    session.add(node)
                node.address = rec.address
                node.port = rec.port
                node.groups = list(rec.groups)
                node.roles = list(rec.roles)
                node.expected_gpus = rec.expected_gpus
                node.retired = False

    def retire_nodes(self, names: Iterable[str]) -> list[str]:
        """Mark nodes retired (decommissioned): gone from fleet views, history kept. Returns
        the names that were known; an upsert (the node back in an inventory run) un-retires."""
        wanted = set(names)
        done: list[str] = []
        with self._session("retiring nodes", write=True) as session:
            for node in session.scalars(select(Node)):
                if node.name in wanted:
                    node.retired = True
                    done.append(node.name)
        return sorted(done)

    def record_facts(
        self,
        node: str,
        facts: dict[str, Any],
        problems: dict[str, Any],
        collected_at: datetime | None = None,
    ) -> int:
        """Store one fact snapshot and refresh the node's GPU rows; returns the snapshot id.

        An unknown node is created (address = name) so ad-hoc targets keep their history.
        GPU rows are replaced only when the snapshot carries a `gpus` family and is not older
        than the one they came from, so a partial or late collection never erases newer data.
        """
        when = utcnow() if collected_at is None else _require_aware(collected_at, "collected_at")
        facts, problems = storable(facts), storable(problems or {})
        gpus = gpu_rows(facts)
        with self._session(f"recording facts for {node}", write=True) as session:
            row = session.scalars(select(Node).where(Node.name == node)).one_or_none()
            if row is None:
                row = Node(
                    name=node,
                    address=node,
                    port=None,
                    groups=[],
                    roles=[],
                    expected_gpus=None,
                    first_seen=when,
                    retired=False,
                )
                session.add(row)
                session.flush()
            snapshot = FactSnapshotRow(
                node_id=row.id, collected_at=when, facts=facts, problems=problems
            )
            session.add(snapshot)
            if row.last_seen is None or when > row.last_seen:
                row.last_seen = when
            if gpus is not None and (
                row.gpus_collected_at is None or when >= row.gpus_collected_at
            ):
                session.execute(delete(Gpu).where(Gpu.node_id == row.id))
                session.add_all(Gpu(node_id=row.id, updated_at=when, **g) for g in gpus)
                row.gpus_collected_at = when
            session.flush()
            return snapshot.id

    def latest_facts(self, node: str) -> FactSnapshot | None:
        """The newest snapshot for `node` (by collection time), or None."""
        with self._session(f"reading facts for {node}") as session:
            snap = session.scalars(
                select(FactSnapshotRow)
                .join(Node, Node.id == FactSnapshotRow.node_id)
                .where(Node.name == node)
                .order_by(FactSnapshotRow.collected_at.desc(), FactSnapshotRow.id.desc())
                .limit(1)
            ).one_or_none()
            if snap is None:
                return None
            return FactSnapshot(
                node=node,
                collected_at=snap.collected_at,
                facts=dict(snap.facts or {}),
                problems=dict(snap.problems or {}),
            )

    def list_nodes(self) -> list[NodeView]:
        """Every non-retired node, by name, with a summary of its latest facts and GPUs."""
        latest_id = (
            select(FactSnapshotRow.id)
            .where(FactSnapshotRow.node_id == Node.id)
            .order_by(FactSnapshotRow.collected_at.desc(), FactSnapshotRow.id.desc())
            .limit(1)
            .correlate(Node)
            .scalar_subquery()
        )
        # extracted in SQL: whole fact documents can be large, the summary needs two strings
        os_name = FactSnapshotRow.facts[("os", "pretty_name")].as_string()
        kernel = FactSnapshotRow.facts[("kernel", "release")].as_string()
        with self._session("listing nodes") as session:
            rows = session.execute(
                select(Node, os_name, kernel)
                .outerjoin(FactSnapshotRow, FactSnapshotRow.id == latest_id)
                .where(Node.retired.is_(False))
                .order_by(Node.name)
            ).all()
            gpus: dict[int, list[tuple[str | None, str | None]]] = {}
            for node_id, name, driver in session.execute(
                select(Gpu.node_id, Gpu.name, Gpu.driver_version).order_by(Gpu.node_id, Gpu.index)
            ):
                gpus.setdefault(node_id, []).append((name, driver))
            views = []
            for node, os_value, kernel_value in rows:
                node_gpus = gpus.get(node.id, [])
                collected = node.gpus_collected_at is not None
                views.append(
                    NodeView(
                        name=node.name,
                        address=node.address,
                        port=node.port,
                        groups=tuple(node.groups or ()),
                        roles=tuple(node.roles or ()),
                        expected_gpus=node.expected_gpus,
                        last_seen=node.last_seen,
                        os=None if os_value is None else str(os_value),
                        kernel=None if kernel_value is None else str(kernel_value),
                        gpu_count=len(node_gpus) if collected else None,
                        gpu_names=tuple(n for n, _ in node_gpus if n),
                        driver_version=next((d for _, d in node_gpus if d), None),
                    )
                )
            return views

    # -- runs ------------------------------------------------------------------------------

    def start_run(
        self,
        kind: str,
        *,
        command: str | None,
        selection: str | None,
        hosts: Sequence[str],
        options: dict[str, Any],
    ) -> int:
        """Open a run in status "running"; secret-looking option values are not stored."""
        if not kind:
            raise ValueError("run kind must not be empty")
        with self._session("starting a run", write=True) as session:
            run = Run(
                kind=kind,
                command=command,
                selection=selection,
                options=redact(options),
                hosts=list(hosts),
                started_at=utcnow(),
                finished_at=None,
                status="running",
                recap={},
            )
            session.add(run)
            session.flush()
            return run.id

    def record_result(self, run_id: int, result: HostResult) -> None:
        """Save one host's result; a later call for the same host (a retry) replaces it."""
        if result.status not in RESULT_STATUSES:
            raise ValueError(
                f"result status {result.status!r} is not one of {sorted(RESULT_STATUSES)}"
            )
        values: dict[str, Any] = {
            "status": result.status,
            "exit_status": result.exit_status,
            "stdout": bound_text(result.stdout, self.output_cap),
            "stderr": bound_text(result.stderr, self.output_cap),
            "duration_s": float(result.duration_s),
            "error_kind": result.error_kind,
            "error_message": None
            if result.error_message is None
            else bound_text(result.error_message, self.output_cap),
            "attempts": result.attempts,
            "finished_at": utcnow(),
        }
        action = f"recording the result of {result.host} in run {run_id}"
        # Two tries: on servers without our SQLite lock, a concurrent insert of the same host
        # loses the unique race once, then finds the row and updates it.
        for attempt in (1, 2):
            try:
                with self._session(action, write=True) as session:
                    if session.get(Run, run_id) is None:
                        raise StoreError(f"store {self._display}: {action} failed: no such run")
                    row = session.scalars(
                        select(RunResult).where(
                            RunResult.run_id == run_id, RunResult.host == result.host
                        )
                    ).one_or_none()
                    if row is None:
                        session.add(RunResult(run_id=run_id, host=result.host, **values))
                    else:
                        for key, value in values.items():
                            setattr(row, key, value)
                return
            except StoreError as exc:
                if attempt == 2 or not isinstance(exc.__cause__, IntegrityError):
                    raise

    def finish_run(self, run_id: int, *, status: str, recap: dict[str, Any]) -> None:
        """Close a run with its final status and recap (counts per status, timings...)."""
        if status not in RUN_STATUSES:
            raise ValueError(f"run status {status!r} is not one of {sorted(RUN_STATUSES)}")
        action = f"finishing run {run_id}"
        with self._session(action, write=True) as session:
            run = session.get(Run, run_id)
            if run is None:
                raise StoreError(f"store {self._display}: {action} failed: no such run")
            run.status = status
            run.recap = recap
            run.finished_at = utcnow()

    def get_run(self, run_id: int) -> RunRecord | None:
        with self._session(f"reading run {run_id}") as session:
            run = session.get(Run, run_id, options=[selectinload(Run.results)])
            return None if run is None else _run_record(run)

    def last_run_id(self) -> int | None:
        with self._session("reading the last run") as session:
            return session.scalar(select(func.max(Run.id)))

    def list_runs(self, limit: int = 20) -> list[RunRecord]:
        """The `limit` newest runs, newest first, each with its results."""
        if limit <= 0:
            return []
        with self._session("listing runs") as session:
            runs = session.scalars(
                select(Run).order_by(Run.id.desc()).limit(limit).options(selectinload(Run.results))
            ).all()
            return [_run_record(r) for r in runs]

    def hosts_with_status(
        self, run_id: int, statuses: Collection[str] = ("failed", "unreachable")
    ) -> list[str]:
        """Hosts of a run whose result is in `statuses`, sorted (e.g. to retry the failed)."""
        wanted = [statuses] if isinstance(statuses, str) else list(statuses)
        if not wanted:
            return []
        with self._session(f"reading hosts of run {run_id}") as session:
            return list(
                session.scalars(
                    select(RunResult.host)
                    .where(RunResult.run_id == run_id, RunResult.status.in_(wanted))
                    .order_by(RunResult.host)
                )
            )

    # -- telemetry time series (see timeseries.py) -----------------------------------------

    def insert_samples(
        self, samples: Iterable[Sample], *, batch_size: int = DEFAULT_SAMPLE_BATCH
    ) -> int:
        """Store samples, `batch_size` per transaction (one executemany each); returns the count.

        A batch is all-or-nothing; batches committed before a failure stay. A sample for a
        (node, series, ts) already stored replaces it. Invalid samples (naive ts, unknown
        status, a value on a non-"ok" sample or none on an "ok" one) raise ValueError before
        their batch is written.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        total = 0
        batch: list[Sample] = []
        for sample in samples:
            batch.append(sample)
            if len(batch) >= batch_size:
                total += self._insert_batch(batch)
                batch = []
        if batch:
            total += self._insert_batch(batch)
        return total

    def _insert_batch(self, batch: Sequence[Sample]) -> int:
        rows = _encode_samples(batch)
        sources = {(s.node, s.series): s.source for s in batch}
        with self._session("inserting samples", write=True) as session:
            conn = session.connection()
            ids = _insert_batch(conn, rows, self._series_ids)
            wanted = {ids[pair]: src for pair, src in sources.items()}
            labels = _label_series(conn, wanted, self._series_sources)
        self._series_ids.update(ids)
        self._series_sources.update(labels)
        return len(rows)

    def rollup(self, now: datetime, *, retention: Retention = DEFAULT_RETENTION) -> int:
        """(Re)compute the 1-minute and 1-hour buckets completed since the last rollup.

        Idempotent: each bucket is recomputed from raw samples by delete + insert, so running
        it twice leaves the same rows. Late samples (older than a resolution's watermark) lower
        that watermark when inserted, so the buckets from theirs on are recomputed here.
        Buckets reaching back past `retention.raw` (raw data possibly purged) are left alone.
        Works in transactions of at most an hour of buckets; returns the rows written.
        """
        now_ms = _to_ms(now, "now")
        raw_keep_ms = int(retention.raw.total_seconds() * 1000)
        written = 0
        for width in RESOLUTIONS:
            while True:
                with self._session(f"rolling up {width}s buckets", write=True) as session:
                    step = _rollup_step(session.connection(), width, now_ms, raw_keep_ms)
                if step is None:
                    break
                written += step
        return written

    def purge(
        self,
        now: datetime,
        *,
        retention: Retention = DEFAULT_RETENTION,
        batch: int = DEFAULT_PURGE_BATCH,
    ) -> dict[str, int]:
        """Delete data past its retention; returns the rows deleted per table
        ({"raw": n, "1m": n, "1h": n}).

        Deletes run per series, at most `batch` rows per statement and per transaction, so the
        write lock is never held for one giant DELETE. Raw samples not yet rolled up into both
        resolutions are kept whatever their age (run `rollup` first).
        """
        if batch < 1:
            raise ValueError("batch must be at least 1")
        now_ms = _to_ms(now, "now")
        with self._session("reading series for purge") as session:
            sids = _all_series_ids(session.connection())
            mark = _watermark_ms(session.connection())
        raw_cutoff = now_ms - int(retention.raw.total_seconds() * 1000)
        raw_cutoff = min(raw_cutoff, mark) if mark is not None else None  # type: ignore[assignment]
        plan: list[tuple[str, int, int | None]] = [
            ("raw", RAW, raw_cutoff),
            ("1m", 60, now_ms - int(retention.minute.total_seconds() * 1000)),
            ("1h", 3600, now_ms - int(retention.hour.total_seconds() * 1000)),
        ]
        counts: dict[str, int] = {}
        for name, resolution, cutoff in plan:
            counts[name] = 0
            if cutoff is None:
                continue
            for sid in sids:
                while True:
                    with self._session(f"purging {name} data", write=True) as session:
                        n = _delete_old(session.connection(), resolution, sid, cutoff, batch)
                    counts[name] += n
                    if n < batch:
                        break
        return counts

    def fleet_now(
        self,
        series_prefixes: Sequence[str] = (),
        *,
        nodes: Sequence[str] | None = None,
        max_age: timedelta | None = None,
        now: datetime | None = None,
    ) -> list[LatestValue]:
        """The newest raw sample of every series whose key starts with one of
        `series_prefixes` (all series when empty), by node then series. `max_age` drops
        series silent for longer than that before `now` (default: the current time)."""
        since = None
        if max_age is not None:
            since = _to_ms(utcnow() if now is None else now, "now") - int(
                max_age.total_seconds() * 1000
            )
        with self._session("reading latest samples") as session:
            return _fleet_now(session.connection(), list(series_prefixes), nodes, since)

    def node_series(
        self, node: str, series: str, start: datetime, end: datetime, *, max_points: int = 1000
    ) -> list[Point]:
        """One node's series over [start, end) as at most `max_points` points; the resolution
        is chosen as in `series_over_range`."""
        found = self.series_over_range(series, start, end, max_points=max_points, nodes=[node])
        return found.points.get(node, [])

    def series_over_range(
        self,
        series: str,
        start: datetime,
        end: datetime,
        *,
        max_points: int = 1000,
        nodes: Sequence[str] | None = None,
    ) -> SeriesRange:
        """A series for every node (or `nodes`) over [start, end), at most `max_points` points
        per node: raw samples for ranges up to 1 hour, 1-minute rollups up to 3 days, 1-hour
        rollups beyond, merged into wider steps when there would be more points."""
        with self._session(f"reading series {series}") as session:
            return _series_range(session.connection(), series, nodes, start, end, max_points)

    def sparklines(
        self, keys: Sequence[str], start: datetime, end: datetime, *, points: int = 30
    ) -> dict[str, dict[str, list[float | None]]]:
        """key -> node -> `points` averages on one time grid over [start, end) (None: no
        sample in that step), for every node, from raw samples in one query."""
        s, e = _to_ms(start, "start"), _to_ms(end, "end")
        with self._session("reading sparklines") as session:
            return _bucket_averages(session.connection(), list(keys), s, e, points)

    # -- events, cursors, diagnostic reports (see events.py) ---------------------------------

    def record_events(
        self,
        events: Iterable[EventRecord],
        *,
        window: timedelta = DEFAULT_EVENT_WINDOW,
        cursor: tuple[str, str, str] | None = None,
    ) -> int:
        """Store events de-duplicated over `window` (see `models.Event`); returns the rows
        added. `cursor` (node, source, value) is saved in the same transaction, so a read is
        recorded together with where it stopped, or not at all."""
        batch = list(events)
        for ev in batch:
            _require_aware(ev.at, "event time")
        with self._session("recording events", write=True) as session:
            added = _events.merge_events(session, storable_events(batch), window)
            if cursor is not None:
                _events.set_cursor(session, *cursor, utcnow())
        return added

    def purge_events(
        self, now: datetime, *, keep: timedelta = DEFAULT_EVENT_RETENTION, batch: int = 1000
    ) -> dict[str, int]:
        """Delete events, diagnostic reports and benchmark results older than `keep`, `batch`
        rows per transaction; returns the rows deleted per table."""
        cutoff = _require_aware(now, "now") - keep
        counts = {"events": 0, "diag_reports": 0, "bench_results": 0}
        for table in counts:
            while True:
                with self._session(f"purging old {table}", write=True) as session:
                    n = _events.delete_older(session, table, cutoff, batch)
                counts[table] += n
                if n < batch:
                    break
        return counts

    def get_cursor(self, node: str, source: str) -> str | None:
        with self._session("reading a cursor") as session:
            return _events.get_cursor(session, node, source)

    def list_events(
        self,
        *,
        node: str | None = None,
        kinds: Sequence[str] = (),
        severities: Sequence[str] = (),
        since: datetime | None = None,
        limit: int = 200,
    ) -> list[EventView]:
        """Newest first (by last occurrence)."""
        with self._session("reading events") as session:
            return _events.list_events(
                session, node=node, kinds=kinds, severities=severities, since=since, limit=limit
            )

    def save_diag(
        self,
        node: str,
        kind: str,
        *,
        verdict: str,
        summary: str,
        data: Mapping[str, Any],
        run_id: int | None = None,
        created_at: datetime | None = None,
    ) -> int:
        """Store one diagnostic report (bounded: `data` is the caller's bounded envelope)."""
        at = _require_aware(created_at, "report time") if created_at else utcnow()
        with self._session("saving a diagnostic report", write=True) as session:
            row = DiagReport(
                node=node,
                kind=kind,
                created_at=at,
                verdict=verdict[:SHORT_LEN],
                summary=bound_text(summary, 4096),
                run_id=run_id,
                data=storable(dict(data)),
            )
            session.add(row)
            session.flush()
            return row.id

    def list_diag(
        self, *, node: str | None = None, kind: str | None = None, limit: int = 50
    ) -> list[DiagRecord]:
        """Newest first."""
        with self._session("reading diagnostic reports") as session:
            return _events.list_diag(session, node=node, kind=kind, limit=limit)

    def latest_diag(self, kind: str) -> dict[str, DiagRecord]:
        """The newest report of `kind` for each node."""
        with self._session("reading diagnostic reports") as session:
            return _events.latest_diag(session, kind)

    # -- benchmark results ----------------------------------------------------------------

    def save_bench(
        self,
        kind: str,
        *,
        title: str,
        data: Mapping[str, Any],
        created_at: datetime | None = None,
    ) -> int:
        """Store one benchmark result (`data` is the caller's bounded document)."""
        at = _require_aware(created_at, "result time") if created_at else utcnow()
        with self._session("saving a benchmark result", write=True) as session:
            row = BenchResult(kind=kind[:SHORT_LEN], created_at=at, title=bound_text(title, 4096),
                              data=storable(dict(data)))  # fmt: skip
            session.add(row)
            session.flush()
            return row.id

    def list_bench(self, kind: str, limit: int = 20) -> list[BenchRecord]:
        """Newest first."""
        with self._session("reading benchmark results") as session:
            return _events.list_bench(session, kind, limit)

    def latest_bench(self, kind: str) -> BenchRecord | None:
        found = self.list_bench(kind, 1)
        return found[0] if found else None

    # -- dashboard users and API tokens (see users.py) -------------------------------------

    def put_user(self, username: str, password_hash: str, role: str) -> tuple[UserRecord, bool]:
        """Add a user or replace its password hash and role; returns (user, created)."""
        if not username or len(username) > SHORT_LEN:
            raise ValueError(f"a username has 1 to {SHORT_LEN} characters")
        with self._session("saving a user", write=True) as session:
            return _users.put_user(session, username, password_hash, role, utcnow())

    def get_user(self, username: str) -> UserRecord | None:
        with self._session("reading a user") as session:
            row = session.scalars(select(User).where(User.username == username)).first()
            return None if row is None else _users.user_record(row)

    def list_users(self) -> list[UserRecord]:
        with self._session("listing users") as session:
            return [
                _users.user_record(u) for u in session.scalars(select(User).order_by(User.username))
            ]

    def remove_user(self, username: str) -> bool:
        with self._session("removing a user", write=True) as session:
            row = session.scalars(select(User).where(User.username == username)).first()
            if row is None:
                return False
            session.execute(delete(ApiToken).where(ApiToken.user_id == row.id))
            session.delete(row)
            return True

    def swap_password_hash(self, username: str, expected: str, new: str) -> bool:
        """Replace the user's hash only if it still is `expected` (compare-and-swap, one
        UPDATE): of two logins racing to use a one-time password, exactly one wins."""
        with self._session("consuming a one-time password", write=True) as session:
            done = session.execute(
                update(User)
                .where(User.username == username, User.password_hash == expected)
                .values(password_hash=new)
            )
            return bool(getattr(done, "rowcount", 0) == 1)

    def touch_login(self, username: str) -> None:
        with self._session("recording a login", write=True) as session:
            row = session.scalars(select(User).where(User.username == username)).first()
            if row is not None:
                row.last_login_at = utcnow()

    def add_token(self, username: str, name: str, token: str) -> None:
        """Keep a token's sha256 for `username` (the token itself is shown once, never stored)."""
        with self._session("saving an API token", write=True) as session:
            row = session.scalars(select(User).where(User.username == username)).first()
            if row is None:
                raise ValueError(f"no user {username!r}")
            digest = _users.token_digest(token)
            session.add(
                ApiToken(user_id=row.id, name=name[:SHORT_LEN], token_sha256=digest,
                         created_at=utcnow())
            )  # fmt: skip

    def user_by_token(self, token: str) -> UserRecord | None:
        with self._session("checking an API token", write=True) as session:
            return _users.user_by_token(session, token, utcnow())


def storable_events(events: Sequence[EventRecord]) -> list[EventRecord]:
    return [
        dataclasses.replace(e, message=storable(e.message), data=storable(dict(e.data)))
        for e in events
    ]
