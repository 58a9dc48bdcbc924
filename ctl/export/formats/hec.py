"""Splunk HTTP Event Collector envelopes around the ECS record.

`{"time", "host", "source", "sourcetype", "index"?, "event": <ECS record>, "fields"}`: Splunk
takes ECS unchanged inside `event` (sourcetype `agentctl:ecs`); `fields` (indexed, /event
endpoint only) repeat the schema, the kind, a content id for de-duplication searches
(`| dedup agentctl_id`: HEC itself never de-duplicates) and the truncation flag.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final

from agentctl.ctl.export.bounds import json_line
from agentctl.ctl.export.formats import ecs
from agentctl.ctl.export.formats.base import SCHEMA, Context, FormatSpec, set_path
from agentctl.ctl.export.records import Row, epoch_ms

SOURCETYPE: Final = "agentctl:ecs"
PROTECT: Final = frozenset(
    {
        ("time",),
        ("host",),
        ("source",),
        ("sourcetype",),
        ("index",),
        ("fields",),
        *(("event", *p) for p in ecs.PROTECT),
    }
)


def content_id(doc: dict[str, Any]) -> str:
    """A stable id of a record's content: identical records, identical id."""
    return hashlib.sha256(json_line(doc).encode()).hexdigest()[:32]


def wrap(event: dict[str, Any], ctx: Context, *, host: str, time_ms: int) -> dict[str, Any]:
    """The HEC envelope around an (ECS or OCSF) record."""
    agentctl = event.get("agentctl")
    unmapped = event.get("unmapped")
    if not isinstance(agentctl, dict) and isinstance(unmapped, dict):
        agentctl = unmapped.get("agentctl")
    kind = agentctl.get("kind", "") if isinstance(agentctl, dict) else ""
    doc: dict[str, Any] = {
        "time": round(time_ms / 1000, 3),
        "host": host,
        "source": ctx.hec_source,
        "sourcetype": SOURCETYPE if "ecs" in event else "agentctl:ocsf",
        "event": event,
        "fields": {
            "agentctl_schema": SCHEMA,
            "agentctl_kind": str(kind),
            "agentctl_id": content_id(event),
        },
    }
    if ctx.hec_index:
        doc["index"] = ctx.hec_index
    return doc


def render(row: Row, ctx: Context) -> dict[str, Any]:
    return wrap(ecs.render(row, ctx), ctx, host=row.node, time_ms=epoch_ms(row.at))


def mark(doc: dict[str, Any], note: dict[str, Any]) -> None:
    event = doc.get("event")
    if isinstance(event, dict):
        ecs.mark(event, note)
    set_path(doc, ("fields", "agentctl_truncated"), "true")


SPEC: Final = FormatSpec(
    name="hec",
    kinds=ecs.SPEC.kinds,
    render=render,
    mark=mark,
    protect=PROTECT,
    note=("event", *ecs.NOTE),
)
