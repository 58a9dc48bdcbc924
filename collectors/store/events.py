"""Events, cursors and diagnostic reports: the session-level SQL behind `Store`'s methods."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from .models import NAME_LEN, BenchResult, Cursor, DiagReport, Event
from .records import BenchRecord, DiagRecord, EventRecord, EventView

#: message and JSON-string bound per event row (an Xid line is ~300 bytes)
MESSAGE_CAP = 2048


def _clip(text: str | None, cap: int) -> str | None:
    if text is None:
        return None
    clean = text.replace("\x00", "\ufffd")
    return clean if len(clean) <= cap else clean[: cap - 1] + "…"


def merge_events(session: Session, events: Iterable[EventRecord], window: timedelta) -> int:
    """Insert events, folding each into an existing row of the same node/kind/key whose span
    is within `window` of it; returns how many rows were added."""
    added = 0
    for ev in sorted(events, key=lambda e: e.at):
        row = session.scalars(
            select(Event)
            .where(
                Event.node == ev.node,
                Event.kind == ev.kind,
                Event.key == ev.key,
                Event.last_at >= ev.at - window,
                Event.first_at <= ev.at + window,
            )
            .order_by(Event.last_at.desc())
            .limit(1)
        ).first()
        if row is not None:
            row.count += ev.count
            if ev.at > row.last_at:
                row.last_at = ev.at
                row.message = _clip(ev.message, MESSAGE_CAP) or ""
            row.first_at = min(row.first_at, ev.at)
            continue
        session.add(
            Event(
                node=ev.node,
                kind=ev.kind,
                key=_clip(ev.key, NAME_LEN) or "",
                code=ev.code,
                severity=ev.severity,
                subject=_clip(ev.subject, NAME_LEN),
                message=_clip(ev.message, MESSAGE_CAP) or "",
                first_at=ev.at,
                last_at=ev.at,
                count=ev.count,
                data=dict(ev.data),
            )
        )
        session.flush()  # the next event of the same key must see this row
        added += 1
    return added


def set_cursor(session: Session, node: str, source: str, value: str, now: datetime) -> None:
    row = session.get(Cursor, (node, source))
    if row is None:
        session.add(Cursor(node=node, source=source, value=value, updated_at=now))
    else:
        row.value, row.updated_at = value, now


def get_cursor(session: Session, node: str, source: str) -> str | None:
    row = session.get(Cursor, (node, source))
    return None if row is None else row.value


def event_view(row: Event) -> EventView:
    return EventView(
        id=row.id,
        node=row.node,
        kind=row.kind,
        key=row.key,
        code=row.code,
        severity=row.severity,
        subject=row.subject,
        message=row.message,
        first_at=row.first_at,
        last_at=row.last_at,
        count=row.count,
        data=dict(row.data or {}),
    )


def list_events(
    session: Session,
    *,
    node: str | None,
    kinds: Sequence[str],
    severities: Sequence[str],
    since: datetime | None,
    limit: int,
) -> list[EventView]:
    q = select(Event)
    if node is not None:
        q = q.where(Event.node == node)
    if kinds:
        q = q.where(Event.kind.in_(list(kinds)))
    if severities:
        q = q.where(Event.severity.in_(list(severities)))
    if since is not None:
        q = q.where(Event.last_at >= since)
    q = q.order_by(Event.last_at.desc(), Event.id.desc()).limit(limit)
    return [event_view(r) for r in session.scalars(q)]


def diag_record(row: DiagReport) -> DiagRecord:
    return DiagRecord(
        id=row.id,
        node=row.node,
        kind=row.kind,
        created_at=row.created_at,
        verdict=row.verdict,
        summary=row.summary,
        run_id=row.run_id,
        data=dict(row.data or {}),
    )


def list_diag(
    session: Session, *, node: str | None, kind: str | None, limit: int
) -> list[DiagRecord]:
    q = select(DiagReport)
    if node is not None:
        q = q.where(DiagReport.node == node)
    if kind is not None:
        q = q.where(DiagReport.kind == kind)
    q = q.order_by(DiagReport.created_at.desc(), DiagReport.id.desc()).limit(limit)
    return [diag_record(r) for r in session.scalars(q)]


def latest_diag(session: Session, kind: str) -> dict[str, DiagRecord]:
    """The newest report of `kind` per node (the fleet overview's health column)."""
    newest = (
        select(func.max(DiagReport.id)).where(DiagReport.kind == kind).group_by(DiagReport.node)
    )
    rows = session.scalars(select(DiagReport).where(DiagReport.id.in_(newest.scalar_subquery())))
    return {r.node: diag_record(r) for r in rows}


def bench_record(row: BenchResult) -> BenchRecord:
    return BenchRecord(row.id, row.kind, row.created_at, row.title, dict(row.data or {}))


def list_bench(session: Session, kind: str, limit: int) -> list[BenchRecord]:
    q = select(BenchResult).where(BenchResult.kind == kind)
    q = q.order_by(BenchResult.created_at.desc(), BenchResult.id.desc()).limit(limit)
    return [bench_record(r) for r in session.scalars(q)]


def delete_older(session: Session, table: str, cutoff: datetime, batch: int) -> int:
    """At most `batch` rows of `table` ("events" by last occurrence, "diag_reports" and
    "bench_results" by creation) older than `cutoff`; returns how many went."""
    model: type[Event] | type[DiagReport] | type[BenchResult]
    if table == "events":
        model, column = Event, Event.last_at
    elif table == "bench_results":
        model, column = BenchResult, BenchResult.created_at
    else:
        model, column = DiagReport, DiagReport.created_at
    ids = list(session.scalars(select(model.id).where(column < cutoff).limit(batch)))
    if ids:
        session.execute(delete(model).where(model.id.in_(ids)))
    return len(ids)
