"""The export formats, by the name `--format` takes."""

from __future__ import annotations

from typing import Final

from agentctl.ctl.errors import UsageError
from agentctl.ctl.export.formats import ecs, hec, ocsf, servicenow
from agentctl.ctl.export.formats.base import SCHEMA, Context, FormatSpec

FORMATS: Final[dict[str, FormatSpec]] = {
    spec.name: spec for spec in (ecs.SPEC, ocsf.SPEC, hec.SPEC, servicenow.SPEC)
}


def get_format(name: str, kind: str) -> FormatSpec:
    """The format `name`, checked to express `kind` (a usage error names what would)."""
    spec = FORMATS.get(name)
    if spec is None:
        raise UsageError(f"unknown export format {name!r}", hint=f"one of {', '.join(FORMATS)}")
    if not spec.supports(kind):
        able = ", ".join(sorted(spec.kinds))
        others = ", ".join(n for n, s in FORMATS.items() if s.supports(kind))
        raise UsageError(
            f"format {name} cannot express {kind!r} (it takes {able})",
            hint=f"for {kind} use {others}" if others else None,
        )
    return spec


__all__ = ["FORMATS", "SCHEMA", "Context", "FormatSpec", "get_format"]
