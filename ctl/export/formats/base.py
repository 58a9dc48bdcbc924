"""What every format shares: the export schema name, the render context, the format spec and
one severity scale (OCSF's `severity_id`, reused as ECS `event.severity` so both agree)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from agentctl.ctl.export.bounds import Mark, Path
from agentctl.ctl.export.records import Row

#: on every record; within a major version changes are additive only
SCHEMA: Final = "agentctl.export/1"
PRODUCT: Final = "agentctl"

#: store severities (events) -> OCSF severity_id: 1 Informational, 2 Low, 3 Medium, 4 High
_SEVERITY_ID: Final = {"info": 1, "app": 2, "warn": 3, "warning": 3, "critical": 4, "fatal": 6}
SEVERITY_NAME: Final = {
    0: "Unknown",
    1: "Informational",
    2: "Low",
    3: "Medium",
    4: "High",
    5: "Critical",
    6: "Fatal",
}
_CLEAN_VERDICTS: Final = frozenset({"pass", "ok", "skip"})
#: reboot-cause reason codes that are not trouble (see ctl/diag/reboot)
_BENIGN_PREFIXES: Final = ("planned_", "os_graceful", "logind_", "wtmp_shutdown")
_SEVERE_WORDS: Final = ("panic", "thermal", "power_loss", "hardware", "mce")


@dataclass(frozen=True)
class Context:
    """Per-export settings a format may need (never per-record state)."""

    tool_version: str
    hec_index: str | None = None
    hec_source: str = PRODUCT


Render = Callable[[Row, Context], dict[str, Any]]


@dataclass(frozen=True)
class FormatSpec:
    """One output format: which kinds it can express, how, and where its cut flag goes."""

    name: str
    kinds: frozenset[str]
    render: Render
    mark: Mark
    #: required fields (and where the truncation note lives): never dropped to fit the cap
    protect: frozenset[Path]
    #: where a record says it was cut
    note: Path

    def supports(self, kind: str) -> bool:
        return kind in self.kinds


def severity_id(severity: str) -> int:
    return _SEVERITY_ID.get(severity.lower(), 0)


def verdict_severity(verdict: str) -> int:
    """pass/skip -> 1, warn -> 3, fail -> 4; reboot causes by what they say."""
    v = verdict.lower()
    if v in _CLEAN_VERDICTS or v.startswith(_BENIGN_PREFIXES):
        return 1
    if v == "warn":
        return 3
    if v == "fail" or any(w in v for w in _SEVERE_WORDS):
        return 4
    return 3


def verdict_outcome(verdict: str) -> str:
    v = verdict.lower()
    if v in ("pass", "ok"):
        return "success"
    if v in ("fail", "warn"):
        return "failure"
    return "unknown"


def run_outcome(status: str) -> str:
    return {"ok": "success", "changed": "success", "failed": "failure"}.get(
        status, "failure" if status == "unreachable" else "unknown"
    )


def prune(value: Any) -> Any:
    """Drop None values and emptied objects at any depth (absent reads better than null in
    every SIEM); empty lists stay: "no GPUs" is information."""
    if isinstance(value, Mapping):
        out = {k: prune(v) for k, v in value.items() if v is not None}
        return {k: v for k, v in out.items() if v != {}}
    if isinstance(value, list | tuple):
        return [prune(v) for v in value if v is not None]
    return value


def get_path(doc: Mapping[str, Any], path: Path) -> Any:
    node: Any = doc
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def set_path(doc: dict[str, Any], path: Path, value: Any) -> None:
    node = doc
    for key in path[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[path[-1]] = value
