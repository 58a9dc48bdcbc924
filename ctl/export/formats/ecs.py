"""Elastic Common Schema (ECS) records: the default export, and what Splunk gets inside HEC.

ECS has no GPU field set, so GPU data and everything else of ours lives under `agentctl.*`
(a custom top-level field, as ECS recommends); `event.kind` follows the ECS guidance: inventory
is `asset`, an Xid or failed check is `alert` (its rule ran outside Elastic), a health report
is `alert` when it found trouble and `state` when it did not, a run result is `event`.
"""

from __future__ import annotations

from typing import Any, Final

from agentctl.ctl.export.bounds import Path
from agentctl.ctl.export.formats.base import (
    PRODUCT,
    SCHEMA,
    Context,
    FormatSpec,
    prune,
    run_outcome,
    set_path,
    severity_id,
    verdict_outcome,
    verdict_severity,
)
from agentctl.ctl.export.records import (
    DiagRow,
    EventRow,
    InventoryRow,
    Row,
    RunRow,
    iso,
)

ECS_VERSION: Final = "8.17.0"
FLAG: Final[Path] = ("labels", "agentctl_truncated")
NOTE: Final[Path] = ("agentctl", "truncation")
PROTECT: Final = frozenset(
    {
        ("@timestamp",),
        ("ecs",),
        ("event", "kind"),
        ("event", "category"),
        ("event", "type"),
        ("event", "dataset"),
        ("event", "id"),
        ("host", "name"),
        ("agentctl", "schema"),
        ("agentctl", "kind"),
        FLAG,
        NOTE,
    }
)


def _base(
    row: Row, ctx: Context, dataset: str, kind: str, cats: list[str], types: list[str]
) -> dict[str, Any]:
    return {
        "@timestamp": iso(row.at),
        "ecs": {"version": ECS_VERSION},
        "event": {
            "kind": kind,
            "category": cats,
            "type": types,
            "dataset": f"{PRODUCT}.{dataset}",
            "module": PRODUCT,
            "id": row.uid,
        },
        "observer": {"vendor": PRODUCT, "product": PRODUCT, "version": ctx.tool_version},
        "host": {"name": row.node},
        "agentctl": {"schema": SCHEMA, "kind": dataset},
    }


def _mac(mac: str) -> str:
    """ECS writes MACs upper case with hyphens: 00-00-5E-00-53-23."""
    return mac.upper().replace(":", "-")


def _inventory(row: InventoryRow, ctx: Context) -> dict[str, Any]:
    doc = _base(row, ctx, "inventory", "asset", ["host"], ["info"])
    doc["event"]["severity"] = 1
    gpus = row.gpus
    names = sorted({g.name for g in gpus or () if g.name})
    if gpus is None:
        gpu_text = "GPUs not collected"
    else:
        gpu_text = f"{len(gpus)} GPU(s)" + (f" {', '.join(names)}" if names else "")
    driver = f", driver {row.driver_version}" if row.driver_version else ""
    doc["message"] = f"{row.node}: {gpu_text}{driver}"
    doc["host"].update(
        {
            "hostname": row.hostname,
            "ip": list(row.ips) or None,
            "mac": [_mac(m) for m in row.macs] or None,
            "architecture": row.arch,
            "os": {
                "type": "linux",
                "platform": row.os_id,
                "name": row.os_name,
                "version": row.os_version,
                "full": row.os_pretty,
                "kernel": row.kernel,
            },
        }
    )
    doc["agentctl"].update(
        {
            "node": {
                "address": row.address,
                "groups": list(row.groups),
                "roles": list(row.roles),
                "expected_gpus": row.expected_gpus,
                "last_seen": iso(row.last_seen) if row.last_seen else None,
                "facts_collected_at": iso(row.collected_at) if row.collected_at else None,
            },
            "host": {
                "cpu": {
                    "model": row.cpu_model,
                    "sockets": row.cpu_sockets,
                    "cores": row.cpu_cores,
                    "threads": row.cpu_threads,
                },
                "memory_total_bytes": row.memory_bytes,
            },
            "gpu": {
                "count": None if gpus is None else len(gpus),
                "driver_version": row.driver_version,
                "cuda_version": row.cuda_version,
                "devices": None
                if gpus is None
                else [
                    {
                        "index": g.index,
                        "name": g.name,
                        "uuid": g.uuid,
                        "serial": g.serial,
                        "pci_bus_id": g.pci_bus_id,
                        "driver_version": g.driver_version,
                        "vbios_version": g.vbios_version,
                        "memory_total_mib": g.memory_total_mib,
                    }
                    for g in gpus
                ],
            },
        }
    )
    return doc


def _event(row: EventRow, ctx: Context) -> dict[str, Any]:
    if row.kind == "xid":
        doc = _base(row, ctx, "events", "alert", ["host", "driver"], ["error"])
        doc["event"].update({"action": "gpu-xid", "reason": row.meaning})
        doc["rule"] = {"name": f"xid-{row.code}", "category": "gpu", "id": row.key}
        doc["agentctl"]["gpu"] = {"pci_bus_id": row.subject}
    elif row.kind == "check":
        doc = _base(row, ctx, "events", "alert", ["host"], ["info"])
        doc["event"]["action"] = "health-check"
        doc["rule"] = {"name": row.subject, "category": row.category, "id": row.key}
    else:
        doc = _base(row, ctx, "events", "event", ["host"], ["info"])
        doc["event"]["action"] = row.kind
    doc["event"].update(
        {
            "code": None if row.code is None else str(row.code),
            "severity": severity_id(row.severity),
            "start": iso(row.first_at),
            "end": iso(row.last_at),
        }
    )
    doc["log"] = {"level": row.severity}
    doc["message"] = row.message
    doc["agentctl"]["event"] = {
        "kind": row.kind,
        "key": row.key,
        "count": row.count,
        "subject": row.subject,
        "meaning": row.meaning,
        "recommended_action": row.action,
        "verdict": row.verdict,
        "category": row.category,
    }
    return doc


def _diagnostic(row: DiagRow, ctx: Context) -> dict[str, Any]:
    severity = verdict_severity(row.verdict)
    kind = "alert" if severity >= 3 else "state"
    doc = _base(row, ctx, "diagnostics", kind, ["host"], ["info"])
    doc["event"].update(
        {
            "action": f"diag-{row.kind}",
            "outcome": verdict_outcome(row.verdict),
            "severity": severity,
        }
    )
    doc["message"] = row.summary
    doc["agentctl"]["diag"] = {
        "kind": row.kind,
        "verdict": row.verdict,
        "run_id": row.run_id,
        "findings": [
            {"name": f.name, "category": f.category, "verdict": f.verdict, "reason": f.reason}
            for f in row.findings
        ],
    }
    return doc


def _run(row: RunRow, ctx: Context) -> dict[str, Any]:
    install = any(w in row.run_kind for w in ("playbook", "provision", "bundle"))
    cats = ["host", "package"] if install else ["host"]
    types = ["change"] if row.status == "changed" else ["info"]
    doc = _base(row, ctx, "runs", "event", cats, types)
    failed = row.status in ("failed", "unreachable")
    doc["event"].update(
        {
            "action": row.run_kind,
            "outcome": run_outcome(row.status),
            "severity": 3 if failed else 1,
            "duration": int(row.duration_s * 1e9),
            "start": iso(row.started_at),
            "end": iso(row.finished_at) if row.finished_at else None,
        }
    )
    what = row.command or row.run_kind
    error = f": {row.error_message}" if row.error_message else ""
    doc["message"] = f"{row.host}: {row.status} ({what}){error}"
    if row.exit_status is not None:
        doc["process"] = {"exit_code": row.exit_status}
    if row.error_kind or row.error_message:
        doc["error"] = {"type": row.error_kind, "message": row.error_message}
    doc["agentctl"]["run"] = {
        "id": row.run_id,
        "kind": row.run_kind,
        "command": row.command,
        "selection": row.selection,
        "status": row.run_status,
        "host_status": row.status,
        "attempts": row.attempts,
        "stdout": row.stdout or None,
        "stderr": row.stderr or None,
    }
    return doc


def render(row: Row, ctx: Context) -> dict[str, Any]:
    if isinstance(row, InventoryRow):
        doc = _inventory(row, ctx)
    elif isinstance(row, EventRow):
        doc = _event(row, ctx)
    elif isinstance(row, DiagRow):
        doc = _diagnostic(row, ctx)
    else:
        doc = _run(row, ctx)
    out: dict[str, Any] = prune(doc)
    return out


def mark(doc: dict[str, Any], note: dict[str, Any]) -> None:
    set_path(doc, FLAG, "true")  # labels are keywords: a string, not a boolean
    set_path(doc, NOTE, note)


SPEC: Final = FormatSpec(
    name="ecs",
    kinds=frozenset({"inventory", "events", "diagnostics", "runs"}),
    render=render,
    mark=mark,
    protect=PROTECT,
    note=NOTE,
)
