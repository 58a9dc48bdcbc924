"""Plain frozen records: the store's whole vocabulary towards callers.

Callers never see ORM objects, so sessions can stay short (one per call) and nothing outside
the store can trigger a lazy load on a closed session or depend on SQLAlchemy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

#: what one host's step can end as (fan-out vocabulary)
RESULT_STATUSES: Final = frozenset({"ok", "changed", "failed", "unreachable", "skipped"})
#: what a whole run can end as; "running" until finish_run
RUN_STATUSES: Final = frozenset({"running", "ok", "failed", "partial", "interrupted"})


@dataclass(frozen=True)
class NodeRecord:
    """A node as the inventory describes it (what `upsert_nodes` takes)."""

    name: str
    address: str
    port: int | None
    groups: tuple[str, ...] = ()
    roles: tuple[str, ...] = ()
    expected_gpus: int | None = None


@dataclass(frozen=True)
class HostResult:
    """One host's outcome within a run; stdout/stderr come back bounded by the store."""

    host: str
    status: str
    exit_status: int | None
    stdout: str
    stderr: str
    duration_s: float
    error_kind: str | None = None
    error_message: str | None = None
    attempts: int = 1


@dataclass(frozen=True)
class RunRecord:
    """A run with all its host results (sorted by host).

    `hosts` is the selection the run started with, so hosts that never reported (an
    interrupted run) can be told apart from hosts that did.
    """

    id: int
    kind: str
    command: str | None
    selection: str | None
    options: dict[str, Any]
    started_at: datetime
    finished_at: datetime | None
    status: str
    recap: dict[str, Any]
    results: tuple[HostResult, ...]
    hosts: tuple[str, ...] = ()


@dataclass(frozen=True)
class NodeView:
    """One line of the fleet summary: inventory fields plus what facts last said.

    `gpu_count` is None until a `gpus` fact family was recorded for the node (0 means "looked,
    found none"); `gpu_names` holds one entry per GPU in index order.
    """

    name: str
    address: str
    port: int | None
    groups: tuple[str, ...]
    roles: tuple[str, ...]
    expected_gpus: int | None
    last_seen: datetime | None
    os: str | None
    kernel: str | None
    gpu_count: int | None
    gpu_names: tuple[str, ...]
    driver_version: str | None


@dataclass(frozen=True)
class FactSnapshot:
    """Everything one fact collection returned for one node."""

    node: str
    collected_at: datetime
    facts: dict[str, Any]
    problems: dict[str, Any]


@dataclass(frozen=True)
class EventRecord:
    """An event as a collector saw it (what `record_events` takes). `key` names what repeats
    (e.g. ``xid:0000:06:00:79``): occurrences of one key inside the window become one row."""

    node: str
    kind: str
    key: str
    at: datetime
    severity: str
    message: str
    code: int | None = None
    subject: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    count: int = 1


@dataclass(frozen=True)
class EventView:
    id: int
    node: str
    kind: str
    key: str
    code: int | None
    severity: str
    subject: str | None
    message: str
    first_at: datetime
    last_at: datetime
    count: int
    data: dict[str, Any]


@dataclass(frozen=True)
class DiagRecord:
    """A stored diagnostic result (L1 posture, reboot-cause report, L2 bundle summary)."""

    id: int
    node: str
    kind: str
    created_at: datetime
    verdict: str
    summary: str
    run_id: int | None
    data: dict[str, Any]


@dataclass(frozen=True)
class BenchRecord:
    """A stored benchmark result (`kind` "serving_replay": the demo's trace replay)."""

    id: int
    kind: str
    created_at: datetime
    title: str
    data: dict[str, Any]


#: dashboard roles, weakest first: viewers see, operators act (L1, drain), admins manage users
ROLES: Final = ("viewer", "operator", "admin")


@dataclass(frozen=True)
class UserRecord:
    id: int
    username: str
    role: str
    created_at: datetime
    last_login_at: datetime | None
    disabled: bool
    #: the argon2 hash, for the dashboard's verification only; never shown or exported
    password_hash: str = field(repr=False, default="")
