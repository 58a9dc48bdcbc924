"""The store: the only package in agentctl that speaks SQL.

SQLite by default (any SQLAlchemy URL works), migrated by the Alembic revisions shipped in
`migrations/`. Callers get plain frozen records and `StoreError`, never ORM objects or
SQLAlchemy exceptions.
"""

from __future__ import annotations

from .engine import default_sqlite_url, display_url
from .records import (
    RESULT_STATUSES,
    ROLES,
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
from .store import DEFAULT_OUTPUT_CAP, Store, bound_text
from .timeseries import LatestValue, Point, Retention, Sample, SeriesRange

__all__ = [
    "DEFAULT_OUTPUT_CAP",
    "RESULT_STATUSES",
    "ROLES",
    "RUN_STATUSES",
    "BenchRecord",
    "DiagRecord",
    "EventRecord",
    "EventView",
    "FactSnapshot",
    "HostResult",
    "LatestValue",
    "NodeRecord",
    "NodeView",
    "Point",
    "Retention",
    "RunRecord",
    "Sample",
    "SeriesRange",
    "Store",
    "UserRecord",
    "bound_text",
    "default_sqlite_url",
    "display_url",
]
