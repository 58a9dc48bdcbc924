"""`kernel` facts: release, build, taint, uptime, and the boot id that ties evidence to a boot."""

from __future__ import annotations

from typing import Any

from agentctl.ctl.facts._common import key_values, to_float, to_int
from agentctl.ctl.facts.base import FactFamily

SCRIPT = """\
echo "release=$(uname -r)"
echo "version=$(uname -v)"
echo "tainted=$(cat /proc/sys/kernel/tainted 2>/dev/null)"
echo "uptime=$(cat /proc/uptime 2>/dev/null)"
echo "boot_id=$(cat /proc/sys/kernel/random/boot_id 2>/dev/null)"
"""

#: bit -> letter, from Documentation/admin-guide/tainted-kernels.rst (bit 0 is "P" when set).
TAINT_LETTERS: dict[int, str] = {
    0: "P",  # proprietary module loaded (e.g. the closed NVIDIA driver)
    1: "F",  # module force-loaded
    2: "S",  # out-of-spec system / SMP unsafe
    3: "R",  # module force-unloaded
    4: "M",  # machine check exception
    5: "B",  # bad page referenced
    6: "U",  # taint requested by userspace
    7: "D",  # kernel died (oops or BUG)
    8: "A",  # ACPI table overridden
    9: "W",  # kernel issued a warning
    10: "C",  # staging driver loaded
    11: "I",  # platform firmware bug workaround
    12: "O",  # out-of-tree module loaded
    13: "E",  # unsigned module loaded
    14: "L",  # soft lockup occurred
    15: "K",  # kernel live patched
    16: "X",  # auxiliary (distribution-defined)
    17: "T",  # built with struct randomisation
    18: "N",  # in-kernel test ran
    19: "J",  # userspace used a mutating fwctl debug operation
}


def decode_taint(value: int) -> list[str]:
    """Letters for the set bits, lowest first; unknown bits come out as `bitN`."""
    return [
        TAINT_LETTERS.get(bit, f"bit{bit}") for bit in range(value.bit_length()) if value >> bit & 1
    ]


def parse(raw: str) -> dict[str, Any]:
    kv = key_values(raw.splitlines())
    tainted = to_int(kv.get("tainted"))
    uptime = kv.get("uptime", "").split()
    return {
        "release": kv.get("release") or None,
        "version": kv.get("version") or None,
        "tainted": tainted,
        "taint_flags": decode_taint(tainted) if tainted is not None else [],
        "uptime_seconds": to_float(uptime[0]) if uptime else None,
        "boot_id": kv.get("boot_id") or None,
    }


FAMILY = FactFamily(
    name="kernel",
    script=SCRIPT,
    parse=parse,
    doc="kernel release and build, taint flags, uptime, boot id",
)
