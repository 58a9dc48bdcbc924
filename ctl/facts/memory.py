"""`memory` facts from /proc/meminfo, in bytes (meminfo's "kB" is KiB).

On GB10-class unified-memory hosts NVML reports no GPU memory, so this is also the GPU's pool.
"""

from __future__ import annotations

from typing import Any

from agentctl.ctl.facts._common import to_int
from agentctl.ctl.facts.base import FactFamily

SCRIPT = "cat /proc/meminfo 2>/dev/null"


def _meminfo(raw: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in raw.splitlines():
        key, found, rest = line.partition(":")
        fields = rest.split()
        value = to_int(fields[0]) if found and fields else None
        if value is not None:
            unit = fields[1].lower() if len(fields) > 1 else ""
            out[key.strip()] = value * 1024 if unit == "kb" else value
    return out


def parse(raw: str) -> dict[str, Any]:
    mi = _meminfo(raw)
    return {
        "total_bytes": mi.get("MemTotal"),
        # MemAvailable exists since Linux 3.14; older kernels get None rather than a guess.
        "available_bytes": mi.get("MemAvailable"),
        "swap_total_bytes": mi.get("SwapTotal"),
        "swap_free_bytes": mi.get("SwapFree"),
        "hugepages_total": mi.get("HugePages_Total"),
        "hugepage_size_bytes": mi.get("Hugepagesize"),
    }


FAMILY = FactFamily(
    name="memory",
    script=SCRIPT,
    parse=parse,
    doc="RAM and swap totals and availability, huge pages (from /proc/meminfo)",
)
