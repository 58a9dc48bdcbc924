"""`gpus` facts: one record per GPU from `nvidia-smi --query-gpu` CSV.

Outcomes, told apart so diagnostics can act on them:

* nvidia-smi absent: `present: false`, `reason: "nvidia-smi not found"`, `error: false`. A CPU
  node is not broken.
* nvidia-smi ran and listed GPUs: `present: true`, `error: false`.
* nvidia-smi failed (driver not loaded, "Driver/library version mismatch", "No devices were
  found", timeout): `present: null` (unknown, not "no GPU"), `error: true` and nvidia-smi's own
  message in `reason`. If some rows still came out (one GPU lost among eight), they are kept
  and `present` is true.

`[N/A]` / `[Not Supported]` values become None and their keys are listed in `not_supported`:
on GB10 (unified memory, C2C) memory, power limit and PCIe are legitimately unavailable.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable
from typing import Any, NamedTuple

from agentctl.ctl.facts._common import TIMEOUT_PREFIX, sections, to_int
from agentctl.ctl.facts.base import FactFamily


class Column(NamedTuple):
    field: str  # nvidia-smi --query-gpu name
    key: str  # key in our output
    kind: str  # "str" | "int" | "float" | "bool"


COLUMNS: tuple[Column, ...] = (
    Column("index", "index", "int"),
    Column("uuid", "uuid", "str"),
    Column("name", "name", "str"),
    Column("pci.bus_id", "pci_bus_id", "str"),
    Column("driver_version", "driver_version", "str"),
    Column("memory.total", "memory_total_mib", "int"),
    Column("memory.used", "memory_used_mib", "int"),
    Column("temperature.gpu", "temperature_c", "int"),
    Column("power.draw", "power_draw_w", "float"),
    Column("power.limit", "power_limit_w", "float"),
    Column("utilization.gpu", "utilization_gpu_pct", "int"),
    Column("pcie.link.gen.current", "pcie_link_gen_current", "int"),
    Column("pcie.link.gen.max", "pcie_link_gen_max", "int"),
    Column("pcie.link.width.current", "pcie_link_width_current", "int"),
    Column("pcie.link.width.max", "pcie_link_width_max", "int"),
    Column("persistence_mode", "persistence_mode", "bool"),
    Column("serial", "serial", "str"),
    Column("vbios_version", "vbios_version", "str"),
)
QUERY_FIELDS: tuple[str, ...] = tuple(c.field for c in COLUMNS)

NO_SMI_SENTINEL = "@@no-nvidia-smi"

SCRIPT = f"""\
if ! command -v nvidia-smi >/dev/null 2>&1; then echo '{NO_SMI_SENTINEL}'; exit 0; fi
{TIMEOUT_PREFIX}
out=$($T nvidia-smi --query-gpu={",".join(QUERY_FIELDS)} --format=csv,noheader,nounits 2>&1)
echo "@@rc=$?"
printf '%s\\n' "$out"
"""

_UNAVAILABLE = frozenset({"n/a", "[n/a]", "not supported", "[not supported]", ""})
# With units (a query run without "nounits"): "81559 MiB", "72.02 W", "0 %".
_NUMBER = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*(?:[A-Za-z%]+)?\s*$")
_BOOL = {"enabled": True, "disabled": False}


def _number(text: str, conv: Callable[[str], Any]) -> Any:
    match = _NUMBER.match(text)
    if not match:
        return None
    try:
        return conv(match.group(1))
    except ValueError:  # "12.5" for an int column: keep the information
        return float(match.group(1))


def _convert(kind: str, text: str) -> Any:
    if kind == "int":
        return _number(text, int)
    if kind == "float":
        return _number(text, float)
    if kind == "bool":
        return _BOOL.get(text.lower())
    return text


def parse_row(values: list[str]) -> tuple[dict[str, Any], list[str]]:
    """One CSV row -> (gpu record, keys whose value was N/A or Not Supported)."""
    gpu: dict[str, Any] = {}
    unavailable: list[str] = []
    for col, value in zip(COLUMNS, values, strict=True):
        value = value.strip()
        if value.lower() in _UNAVAILABLE:
            gpu[col.key] = None
            unavailable.append(col.key)
        else:
            gpu[col.key] = _convert(col.kind, value)
    return gpu, unavailable


def _shape(
    present: bool | None, gpus: list[dict[str, Any]], unsupported: set[str], reason: str | None
) -> dict[str, Any]:
    return {
        "present": present,
        "count": len(gpus),
        "gpus": gpus,
        "not_supported": [c.key for c in COLUMNS if c.key in unsupported],
        "reason": reason,
        "error": present is None or (bool(gpus) and reason is not None),
    }


def parse(raw: str) -> dict[str, Any]:
    if NO_SMI_SENTINEL in raw.splitlines():
        return _shape(False, [], set(), "nvidia-smi not found")
    sec = sections(raw)
    rc_line = next((k for k in sec if k.startswith("rc=")), None)
    if rc_line is None:
        return _shape(None, [], set(), "no output from nvidia-smi snippet")
    rc = to_int(rc_line[3:])
    gpus: list[dict[str, Any]] = []
    unsupported: set[str] = set()
    messages: list[str] = []
    for line in sec[rc_line]:
        if not line.strip():
            continue
        values = next(csv.reader([line], skipinitialspace=True), [])
        if len(values) == len(COLUMNS):
            gpu, unavailable = parse_row(values)
            gpus.append(gpu)
            unsupported.update(unavailable)
        else:
            messages.append(line.strip())
    if rc == 0 and not messages:
        if gpus:
            return _shape(True, gpus, unsupported, None)
        return _shape(None, gpus, unsupported, "nvidia-smi listed no GPUs")
    if rc == 124:
        reason = "nvidia-smi timed out after 5 s"
    else:
        reason = "; ".join(messages[:3]) or f"nvidia-smi exited with status {rc}"
    return _shape(True if gpus else None, gpus, unsupported, reason)


FAMILY = FactFamily(
    name="gpus",
    script=SCRIPT,
    parse=parse,
    doc="per-GPU inventory and state from nvidia-smi --query-gpu (N/A -> null)",
)
