"""OCSF 1.3 records: Device Inventory Info (5001) for inventory, Detection Finding (2004) for
Xids, failed checks and health reports.

OCSF has no class for "a command's per-host result", so runs are not offered in OCSF (ECS or
HEC carry them). OCSF has no GPU object either: GPUs and our own fields go under
`unmapped.agentctl`, which is where OCSF puts what a producer could not map.

A health report's finding is identified per node and report kind (`diag/<node>/<kind>`): a
failing report creates it (activity 1, status New), a passing one closes it (activity 3,
status Resolved), so a consumer sees one finding per node and diagnostic with a lifecycle.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Final

from agentctl.ctl.export.bounds import Path
from agentctl.ctl.export.formats.base import (
    PRODUCT,
    SCHEMA,
    SEVERITY_NAME,
    Context,
    FormatSpec,
    prune,
    set_path,
    severity_id,
    verdict_severity,
)
from agentctl.ctl.export.records import (
    DiagRow,
    EventRow,
    InventoryRow,
    Row,
    epoch_ms,
    iso,
)

OCSF_VERSION: Final = "1.3.0"
INVENTORY: Final = (5001, "Device Inventory Info", 5, "Discovery")
FINDING: Final = (2004, "Detection Finding", 2, "Findings")
NOTE: Final[Path] = ("unmapped", "agentctl", "truncation")
PROTECT: Final = frozenset(
    {
        ("activity_id",),
        ("category_uid",),
        ("class_uid",),
        ("type_uid",),
        ("severity_id",),
        ("time",),
        ("metadata",),
        ("device", "type_id"),
        ("device", "name"),
        ("finding_info", "uid"),
        ("finding_info", "title"),
        ("unmapped", "agentctl", "schema"),
        NOTE,
    }
)
_SERVER: Final = {"type_id": 1, "type": "Server"}
_LINUX: Final = 200  # os.type_id


def _base(
    cls: tuple[int, str, int, str], activity: tuple[int, str], row: Row, sev: int, ctx: Context
) -> dict[str, Any]:
    class_uid, class_name, category_uid, category_name = cls
    activity_id, activity_name = activity
    return {
        "activity_id": activity_id,
        "activity_name": activity_name,
        "category_uid": category_uid,
        "category_name": category_name,
        "class_uid": class_uid,
        "class_name": class_name,
        "type_uid": class_uid * 100 + activity_id,
        "type_name": f"{class_name}: {activity_name}",
        "severity_id": sev,
        "severity": SEVERITY_NAME[sev],
        "time": epoch_ms(row.at),
        "metadata": {
            "version": OCSF_VERSION,
            "product": {"name": PRODUCT, "vendor_name": PRODUCT, "version": ctx.tool_version},
            "uid": row.uid,
            "log_name": PRODUCT,
        },
        "device": {**_SERVER, "name": row.node},
        "unmapped": {"agentctl": {"schema": SCHEMA}},
    }


def _ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _inventory(row: InventoryRow, ctx: Context) -> dict[str, Any]:
    doc = _base(INVENTORY, (2, "Collect"), row, 1, ctx)
    ips = row.ips or ((row.address,) if _ip(row.address) else ())
    doc["message"] = f"{row.node}: inventory collected"
    doc["device"].update(
        {
            "hostname": row.hostname,
            "ip": ips[0] if ips else None,
            "desc": row.os_pretty,
            "groups": [{"name": g} for g in row.groups] or None,
            "last_seen_time": epoch_ms(row.last_seen) if row.last_seen else None,
            "os": {
                "name": row.os_pretty or row.os_name or "Linux",
                "type_id": _LINUX,
                "type": "Linux",
                "version": row.os_version,
                "build": row.kernel,
            },
            "hw_info": {
                "cpu_type": row.arch,
                "cpu_count": row.cpu_sockets,
                "cpu_cores": row.cpu_cores,
                "ram_size": None if row.memory_bytes is None else row.memory_bytes // 2**20,
            },
            "network_interfaces": [
                {"name": n.name, "mac": n.mac, "ip": n.ips[0] if n.ips else None, "type_id": 0}
                for n in row.nics
            ]
            or None,
        }
    )
    gpus = row.gpus
    doc["unmapped"]["agentctl"].update(
        {
            "kind": "inventory",
            "roles": list(row.roles),
            "expected_gpus": row.expected_gpus,
            "driver_version": row.driver_version,
            "cuda_version": row.cuda_version,
            "gpu_count": None if gpus is None else len(gpus),
            "gpus": None
            if gpus is None
            else [
                {
                    "index": g.index,
                    "name": g.name,
                    "uuid": g.uuid,
                    "serial_number": g.serial,
                    "pci_bus_id": g.pci_bus_id,
                    "vbios_version": g.vbios_version,
                    "memory_total_mib": g.memory_total_mib,
                }
                for g in gpus
            ],
        }
    )
    return doc


def _event(row: EventRow, ctx: Context) -> dict[str, Any]:
    doc = _base(FINDING, (1, "Create"), row, severity_id(row.severity), ctx)
    if row.kind == "xid":
        title = f"GPU Xid {row.code} on {row.node}" + (f": {row.meaning}" if row.meaning else "")
        types, analytic = ["GPU Xid"], f"xid-{row.code}"
        if row.subject:
            doc["resources"] = [{"type": "GPU", "uid": row.subject, "name": row.subject}]
    elif row.kind == "check":
        title = f"Health check {row.subject} {row.verdict or 'failed'} on {row.node}"
        types, analytic = ["Health check"], row.subject or row.key
    else:
        title, types, analytic = f"{row.kind} on {row.node}", [row.kind], row.key
    doc.update(
        {
            "message": row.message,
            "status_id": 1,
            "status": "New",
            "count": row.count,
            "start_time": epoch_ms(row.first_at),
            "end_time": epoch_ms(row.last_at),
            "finding_info": {
                "uid": row.uid,
                "title": title,
                "desc": row.meaning or row.message,
                "types": types,
                "first_seen_time": epoch_ms(row.first_at),
                "last_seen_time": epoch_ms(row.last_at),
                "analytic": {"type_id": 1, "type": "Rule", "name": analytic, "uid": row.key},
            },
        }
    )
    doc["unmapped"]["agentctl"].update(
        {
            "kind": "events",
            "event_kind": row.kind,
            "code": row.code,
            "severity": row.severity,
            "recommended_action": row.action,
            "category": row.category,
        }
    )
    return doc


def _diagnostic(row: DiagRow, ctx: Context) -> dict[str, Any]:
    sev = verdict_severity(row.verdict)
    closed = sev == 1
    activity = (3, "Close") if closed else (1, "Create")
    doc = _base(FINDING, activity, row, sev, ctx)
    doc.update(
        {
            "message": row.summary,
            "status_id": 4 if closed else 1,
            "status": "Resolved" if closed else "New",
            "finding_info": {
                "uid": f"diag/{row.node}/{row.kind}",
                "title": f"{row.kind} diagnostic on {row.node}: {row.verdict}",
                "desc": row.summary,
                "types": [f"Diagnostic {row.kind}"],
                "created_time": epoch_ms(row.at),
                "analytic": {"type_id": 1, "type": "Rule", "name": f"diag-{row.kind}"},
            },
        }
    )
    doc["unmapped"]["agentctl"].update(
        {
            "kind": "diagnostics",
            "verdict": row.verdict,
            "run_id": row.run_id,
            "report_time": iso(row.at),
            "findings": [
                {"name": f.name, "category": f.category, "verdict": f.verdict, "reason": f.reason}
                for f in row.findings
            ],
        }
    )
    return doc


def render(row: Row, ctx: Context) -> dict[str, Any]:
    if isinstance(row, InventoryRow):
        doc = _inventory(row, ctx)
    elif isinstance(row, EventRow):
        doc = _event(row, ctx)
    elif isinstance(row, DiagRow):
        doc = _diagnostic(row, ctx)
    else:  # refused before rendering: see SPEC.kinds
        raise ValueError("OCSF has no class for run results")
    out: dict[str, Any] = prune(doc)
    return out


def mark(doc: dict[str, Any], note: dict[str, Any]) -> None:
    set_path(doc, NOTE, note)


SPEC: Final = FormatSpec(
    name="ocsf",
    kinds=frozenset({"inventory", "events", "diagnostics"}),
    render=render,
    mark=mark,
    protect=PROTECT,
    note=NOTE,
)
