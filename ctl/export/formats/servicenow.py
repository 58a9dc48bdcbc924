"""ServiceNow Identification and Reconciliation (IRE) payloads: one per node, a Linux server
with its GPUs, shaped like ServiceNow's own "Discover Nvidia GPU" pattern so the IRE matches
(reconciles) the CIs that Discovery already created instead of adding duplicates.

That pattern (Linux Server pattern extension, `nvidia-smi -q` over SSH) fills `cmdb_ci_gpu`
with name, manufacturer, model_id and serial_number, and relates each GPU to its server with
`Used by::Uses` (GPU is parent, server child). We send the same classes, fields and relation:

* the server: `name` is the host's own short hostname (what Discovery records; the FQDN goes
  to `fqdn`), plus ip/mac, OS and CPU/RAM; its network adapters go in `lookup`, which the
  hardware identification rule can match on (mac_address + name) when a name differs.
* each GPU: identified by `serial_number` (the hardware rule). A GPU without a serial (nvidia-smi
  says N/A, common on non-datacenter boards) is not sent as a CI: identified by name alone, all
  eight GPUs of a node would collapse into one. It is listed under `agentctl.gpus_not_sent`.
* `gpu_details` (uuid, bus id, driver/CUDA/VBIOS, memory) is a non-CMDB table that the IRE does
  not write; the same fields ride along under `agentctl.gpu_details` for a script to load.

A line is `{"items", "relations", "agentctl"}`: POST `items` and `relations` to
`/api/now/identifyreconcile?sysparm_data_source=<choice>`; the IRE answers 200 even when it
committed nothing, so check `hasError` and each item's `errors`.
"""

from __future__ import annotations

from typing import Any, Final

from agentctl.ctl.export.bounds import Path, cut_text
from agentctl.ctl.export.formats.base import SCHEMA, Context, FormatSpec, prune, set_path
from agentctl.ctl.export.records import Gpu, InventoryRow, Row, iso

SERVER_CLASS: Final = "cmdb_ci_linux_server"
GPU_CLASS: Final = "cmdb_ci_gpu"
ADAPTER_CLASS: Final = "cmdb_ci_network_adapter"
RELATION: Final = "Used by::Uses"  # GPU (parent) Used by::Uses Linux Server (child)
MANUFACTURER: Final = "NVIDIA"
#: most CMDB string columns hold 40-255 characters; longer values are cut here, marked
VALUE_CAP: Final = 255
NOTE: Final[Path] = ("agentctl", "truncation")
PROTECT: Final = frozenset({("items",), ("relations",), ("agentctl", "schema"), NOTE})


class _Values:
    """IRE `values`: strings only, cut to VALUE_CAP with a marker, cuts remembered."""

    def __init__(self) -> None:
        self.cut: list[str] = []

    def __call__(self, where: str, **fields: Any) -> dict[str, str]:
        out = {}
        for key, value in fields.items():
            if value is None or value == "":
                continue
            text, cut = cut_text(str(value), VALUE_CAP)
            if cut:
                self.cut.append(f"{where}.{key}")
            out[key] = text
        return out


def _server(row: InventoryRow, values: _Values) -> dict[str, Any]:
    hostname = row.hostname or row.node
    short, dot, _domain = hostname.partition(".")
    ips = row.ips
    server: dict[str, Any] = {
        "className": SERVER_CLASS,
        "internal_id": f"agentctl:{row.node}",
        "values": values(
            "server",
            name=short or hostname,
            host_name=short or hostname,
            fqdn=hostname if dot else None,
            ip_address=ips[0] if ips else None,
            mac_address=row.macs[0] if row.macs else None,
            os=row.os_name,
            os_version=row.os_version,
            cpu_name=row.cpu_model,
            cpu_count=row.cpu_sockets,
            ram=None if row.memory_bytes is None else row.memory_bytes // 2**20,
            short_description=f"agentctl node {row.node}",
        ),
    }
    lookup = [
        {
            "className": ADAPTER_CLASS,
            "values": values(
                "lookup", name=n.name, mac_address=n.mac, ip_address=n.ips[0] if n.ips else None
            ),
        }
        for n in row.nics
        if n.mac
    ]
    if lookup:
        server["lookup"] = lookup
    return server


def _gpu(row: InventoryRow, g: Gpu, values: _Values) -> dict[str, Any]:
    return {
        "className": GPU_CLASS,
        "internal_id": f"agentctl:{row.node}:gpu{g.index}",
        "values": values(
            f"gpu{g.index}",
            name=g.name,
            manufacturer=MANUFACTURER,
            model_id=g.name,
            serial_number=g.serial,
        ),
    }


def _details(row: InventoryRow, g: Gpu) -> dict[str, Any]:
    """Discovery's `gpu_details` columns that agentctl's facts carry."""
    return {
        "index": g.index,
        "name": g.name,
        "serial_number": g.serial,
        "uuid": g.uuid,
        "bus_id": g.pci_bus_id,
        "driver_version": g.driver_version or row.driver_version,
        "cuda_version": row.cuda_version,
        "vbios_version": g.vbios_version,
        "memory_total_usage": None if g.memory_total_mib is None else f"{g.memory_total_mib} MiB",
    }


def render(row: Row, ctx: Context) -> dict[str, Any]:
    if not isinstance(row, InventoryRow):  # refused before rendering: see SPEC.kinds
        raise ValueError("ServiceNow IRE payloads describe inventory only")
    values = _Values()
    items = [_server(row, values)]
    relations = []
    not_sent = []
    for g in row.gpus or ():
        if not g.serial:
            not_sent.append({"index": g.index, "uuid": g.uuid, "reason": "no serial number"})
            continue
        items.append(_gpu(row, g, values))
        relations.append({"parent": len(items) - 1, "child": 0, "type": RELATION})
    doc: dict[str, Any] = {
        "items": items,
        "relations": relations,
        "agentctl": {
            "schema": SCHEMA,
            "kind": "inventory",
            "node": row.node,
            "collected_at": iso(row.collected_at) if row.collected_at else None,
            "tool_version": ctx.tool_version,
            "gpu_details": [_details(row, g) for g in row.gpus or ()],
            "gpus_not_sent": not_sent or None,
            "gpus_collected": row.gpus is not None,
        },
    }
    if values.cut:
        doc["agentctl"]["truncation"] = {"truncated": True, "fields": values.cut}
    out: dict[str, Any] = prune(doc)
    return out


def mark(doc: dict[str, Any], note: dict[str, Any]) -> None:
    earlier = doc.get("agentctl", {}).get("truncation", {})
    if isinstance(earlier, dict) and earlier.get("fields") and "fields" in note:
        note = {**note, "fields": [*earlier["fields"], *note["fields"]]}
    set_path(doc, NOTE, note)


SPEC: Final = FormatSpec(
    name="servicenow",
    kinds=frozenset({"inventory"}),
    render=render,
    mark=mark,
    protect=PROTECT,
    note=NOTE,
)
