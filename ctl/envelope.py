"""The one JSON envelope every reporting command, the web API and export headers share.

`{ok, data, errors[], meta{tool, version, schema, collected_at}}`: `schema` names the shape of
`data` (for example `agentctl.facts/1`), so consumers can dispatch and version independently.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from agentctl.ctl import __version__

TOOL = "agentctl"

#: JSON Schema of the envelope itself; tests validate every `--json` output against it.
ENVELOPE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["ok", "data", "errors", "meta"],
    "additionalProperties": False,
    "properties": {
        "ok": {"type": "boolean"},
        "data": {},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["kind", "message"],
                "properties": {
                    "kind": {"type": "string"},
                    "message": {"type": "string"},
                    "host": {"type": "string"},
                    "hint": {"type": "string"},
                },
            },
        },
        "meta": {
            "type": "object",
            "required": ["tool", "version", "schema", "collected_at"],
            "properties": {
                "tool": {"const": TOOL},
                "version": {"type": "string"},
                "schema": {"type": "string", "pattern": r"^agentctl\.[a-z_.]+/\d+$"},
                "collected_at": {"type": "string", "pattern": r"Z$"},
            },
        },
    },
}


def utc_now_iso(now: datetime | None = None) -> str:
    """RFC 3339 UTC with a trailing Z, second precision: stable and sortable."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def envelope(
    data: Any,
    *,
    schema: str,
    ok: bool = True,
    errors: Sequence[Mapping[str, str]] = (),
    collected_at: datetime | None = None,
) -> dict[str, Any]:
    return {
        "ok": ok,
        "data": data,
        "errors": [dict(e) for e in errors],
        "meta": {
            "tool": TOOL,
            "version": __version__,
            "schema": schema,
            "collected_at": utc_now_iso(collected_at),
        },
    }


def dumps(doc: Mapping[str, Any]) -> str:
    """Stable key order so identical input gives byte-identical output."""
    return json.dumps(doc, sort_keys=True, default=str, ensure_ascii=False)
