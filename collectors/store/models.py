"""ORM models: the schema as Python. Migrations in `migrations/versions/` must agree with it.

Types stay portable (any SQLAlchemy backend): JSON via `sqlalchemy.JSON`, text via `Text`, and
datetimes through `UTCDateTime`, which hides SQLite's lack of a timezone-aware type.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

#: Named constraints, so batch migrations on SQLite (table copy) can address them later.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

NAME_LEN = 255
SHORT_LEN = 64


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in, timezone-aware UTC out, on every backend.

    SQLite has no timezone-aware type, so there the value is stored as naive UTC and marked
    UTC again on read; backends with `timestamptz` get the aware value as is. Naive input is
    refused: guessing its zone would silently shift times.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} given; pass a timezone-aware one")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        list[str]: JSON(),
        str: String(NAME_LEN),
    }


class Node(Base):
    __tablename__ = "nodes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(unique=True)
    address: Mapped[str]
    port: Mapped[int | None]
    groups: Mapped[list[str]]
    roles: Mapped[list[str]]
    expected_gpus: Mapped[int | None]
    first_seen: Mapped[datetime]
    #: last time facts were recorded for the node (None: never)
    last_seen: Mapped[datetime | None]
    #: when the gpus rows were last replaced from a `gpus` fact family (None: never collected)
    gpus_collected_at: Mapped[datetime | None]
    retired: Mapped[bool] = mapped_column(Boolean, default=False)

    gpus: Mapped[list[Gpu]] = relationship(
        back_populates="node", cascade="all, delete-orphan", passive_deletes=True
    )


class Gpu(Base):
    __tablename__ = "gpus"
    __table_args__ = (UniqueConstraint("node_id", "index"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"))
    index: Mapped[int]
    uuid: Mapped[str | None] = mapped_column(String(NAME_LEN), index=True)
    name: Mapped[str | None]
    pci_bus_id: Mapped[str | None] = mapped_column(String(SHORT_LEN))
    memory_total_mib: Mapped[int | None]
    driver_version: Mapped[str | None] = mapped_column(String(SHORT_LEN))
    serial: Mapped[str | None] = mapped_column(String(SHORT_LEN))
    vbios_version: Mapped[str | None] = mapped_column(String(SHORT_LEN))
    updated_at: Mapped[datetime]

    node: Mapped[Node] = relationship(back_populates="gpus")


class FactSnapshotRow(Base):
    __tablename__ = "fact_snapshots"
    __table_args__ = (Index(None, "node_id", "collected_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"))
    collected_at: Mapped[datetime]
    facts: Mapped[dict[str, Any]]
    problems: Mapped[dict[str, Any]]


class Run(Base):
    __tablename__ = "runs"
    # AUTOINCREMENT on SQLite: run ids are never reused, even after old runs are pruned.
    __table_args__ = (Index(None, "started_at"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(SHORT_LEN))
    command: Mapped[str | None] = mapped_column(Text)
    selection: Mapped[str | None] = mapped_column(Text)
    options: Mapped[dict[str, Any]]
    #: the hosts the run was started on, so silent hosts of an interrupted run stay visible
    hosts: Mapped[list[str]]
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(16))
    recap: Mapped[dict[str, Any]]

    results: Mapped[list[RunResult]] = relationship(
        back_populates="run",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="RunResult.host",
    )


class RunResult(Base):
    __tablename__ = "run_results"
    __table_args__ = (
        UniqueConstraint("run_id", "host"),
        Index(None, "run_id", "status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    run_id: Mapped[int] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    host: Mapped[str]
    status: Mapped[str] = mapped_column(String(16))
    exit_status: Mapped[int | None]
    stdout: Mapped[str] = mapped_column(Text)
    stderr: Mapped[str] = mapped_column(Text)
    duration_s: Mapped[float] = mapped_column(Float)
    error_kind: Mapped[str | None] = mapped_column(String(SHORT_LEN))
    error_message: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    finished_at: Mapped[datetime]

    run: Mapped[Run] = relationship(back_populates="results")


# -- telemetry time series (revision 0002) -----------------------------------------------------
# Timestamps here are integer epoch milliseconds (UTC), not UTCDateTime: rows stay narrow, the
# primary keys compact, and bucket arithmetic (`ts / width * width`) is the same SQL everywhere.
# The sample and rollup tables are clustered on their primary key on SQLite (WITHOUT ROWID), so
# "one series over a time range" is one contiguous index range.


class MetricSeries(Base):
    """One (node, series key) pair, e.g. ("gpu-01", "gpu0.temperature"); samples point here."""

    __tablename__ = "metric_series"
    __table_args__ = (UniqueConstraint("node", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node: Mapped[str]
    key: Mapped[str]
    #: where its samples come from: NULL measured, `replay:<set>` a replayed GPU (revision 0005)
    source: Mapped[str | None] = mapped_column(String(SHORT_LEN))


class MetricSample(Base):
    """Raw samples. `status` 0 = value present; otherwise `value` is NULL and `status` says why
    (see timeseries.STATUS_CODES), so "not supported" never reads as a zero."""

    __tablename__ = "metric_samples"
    __table_args__ = ({"sqlite_with_rowid": False},)

    series_id: Mapped[int] = mapped_column(ForeignKey("metric_series.id"), primary_key=True)
    ts: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    value: Mapped[float | None] = mapped_column(Float)
    status: Mapped[int] = mapped_column(SmallInteger)


class MetricRollup(Base):
    """Per-bucket aggregates of raw samples; `resolution_s` 60 (1 minute) or 3600 (1 hour).

    `n` counts samples with a value (min/max/avg are over those, NULL when none), `n_other`
    samples without one (not supported, error); `vlast`/`last_status` are the newest sample's.
    """

    __tablename__ = "metric_rollups"
    __table_args__ = ({"sqlite_with_rowid": False},)

    resolution_s: Mapped[int] = mapped_column(Integer, primary_key=True)
    series_id: Mapped[int] = mapped_column(ForeignKey("metric_series.id"), primary_key=True)
    bucket: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    n: Mapped[int] = mapped_column(Integer)
    n_other: Mapped[int] = mapped_column(Integer)
    vmin: Mapped[float | None] = mapped_column(Float)
    vmax: Mapped[float | None] = mapped_column(Float)
    vavg: Mapped[float | None] = mapped_column(Float)
    vlast: Mapped[float | None] = mapped_column(Float)
    last_status: Mapped[int] = mapped_column(SmallInteger)
    last_ts: Mapped[int] = mapped_column(BigInteger)


class MetricRollupState(Base):
    """Per resolution: every bucket before `done_until` (epoch ms) is rolled up. Inserting a
    sample older than it lowers it, so the next rollup recomputes from that bucket on."""

    __tablename__ = "metric_rollup_state"

    resolution_s: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    done_until: Mapped[int] = mapped_column(BigInteger)


# -- events, collection cursors and diagnostic reports (revision 0003) ------------------------


class Event(Base):
    """Something that happened on a node (an Xid, a failed check), de-duplicated: repeats of
    the same `key` within the de-duplication window raise `count` and `last_at` on one row
    instead of adding rows, so a storm of Xid 45 stays one line with a count (DCGM#162)."""

    __tablename__ = "events"
    __table_args__ = (
        Index(None, "node", "kind", "key", "last_at"),
        Index(None, "last_at"),
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    node: Mapped[str]
    kind: Mapped[str] = mapped_column(String(SHORT_LEN))
    key: Mapped[str]
    code: Mapped[int | None]
    severity: Mapped[str] = mapped_column(String(16))
    subject: Mapped[str | None]
    message: Mapped[str] = mapped_column(Text)
    first_at: Mapped[datetime]
    last_at: Mapped[datetime]
    count: Mapped[int] = mapped_column(Integer, default=1)
    data: Mapped[dict[str, Any]]


class Cursor(Base):
    """Where an incremental read of a node's source (its kernel log) stopped; written in the
    same transaction as the events read up to it, so a crash can repeat nothing or lose
    nothing."""

    __tablename__ = "cursors"

    node: Mapped[str] = mapped_column(primary_key=True)
    source: Mapped[str] = mapped_column(String(SHORT_LEN), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime]


class DiagReport(Base):
    """One diagnostic result for one node: an L1 posture, a reboot-cause report, an L2
    bundle's manifest summary. `verdict` is the headline (worst check, or reason code)."""

    __tablename__ = "diag_reports"
    __table_args__ = (Index(None, "node", "kind", "created_at"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    node: Mapped[str]
    kind: Mapped[str] = mapped_column(String(SHORT_LEN))
    created_at: Mapped[datetime]
    verdict: Mapped[str] = mapped_column(String(SHORT_LEN))
    summary: Mapped[str] = mapped_column(Text)
    run_id: Mapped[int | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    data: Mapped[dict[str, Any]]


# -- benchmark results (revision 0005) ---------------------------------------------------------


class BenchResult(Base):
    """One stored benchmark: `kind` "serving_replay" is the demo's live replay of real Claude
    Code traces, one entry per policy in `data` (bounded by the caller)."""

    __tablename__ = "bench_results"
    __table_args__ = (Index(None, "kind", "created_at"), {"sqlite_autoincrement": True})

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(SHORT_LEN))
    created_at: Mapped[datetime]
    title: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]]


# -- dashboard users and API tokens (revision 0004) -------------------------------------------


class User(Base):
    """A dashboard login. Only a password hash is stored (argon2, computed by the dashboard)."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(SHORT_LEN), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    last_login_at: Mapped[datetime | None]
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)


class ApiToken(Base):
    """A bearer token for the JSON API (`agentctl watch --remote`); only its sha256 is kept."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(SHORT_LEN))
    token_sha256: Mapped[str] = mapped_column(String(SHORT_LEN), unique=True)
    created_at: Mapped[datetime]
    last_used_at: Mapped[datetime | None]
