"""`pci` facts: NVIDIA PCI functions (GPUs, NVSwitches, audio) as the bus sees them.

This is the view that survives a broken driver: a GPU that fell off the bus or lost its driver
still shows here while nvidia-smi does not, so comparing counts is a cheap health check.
lspci is preferred for its names; without it the snippet scans sysfs (ids only).
"""

from __future__ import annotations

import re
from typing import Any

from agentctl.ctl.facts._common import TIMEOUT_PREFIX, sections
from agentctl.ctl.facts.base import FactFamily

NVIDIA_VENDOR_ID = "10de"
#: PCI class 0x0680 "Other bridge": how NVSwitch (and nothing else from NVIDIA) enumerates.
NVSWITCH_CLASS = "0680"

SCRIPT = f"""\
{TIMEOUT_PREFIX}
if command -v lspci >/dev/null 2>&1; then
  echo '@@lspci'
  $T lspci -Dnn -d {NVIDIA_VENDOR_ID}:
else
  echo '@@sysfs'
  for f in $(grep -l '^0x{NVIDIA_VENDOR_ID}$' /sys/bus/pci/devices/*/vendor 2>/dev/null); do
    d=${{f%/vendor}}
    echo "${{d##*/}} $(cat "$d/class" 2>/dev/null) $(cat "$d/device" 2>/dev/null)"
  done
fi
exit 0
"""

# 0000:19:00.0 3D controller [0302]: NVIDIA Corporation GH100 [H100 SXM5 80GB] [10de:2330] (rev a1)
_LSPCI = re.compile(
    r"^(?P<slot>[0-9a-fA-F]{4,}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7])\s+"
    r"(?P<class_name>.*?)\s*\[(?P<class>[0-9a-fA-F]{4})\]:\s+"
    r"(?P<desc>.*?)\s*\[(?P<vendor>[0-9a-fA-F]{4}):(?P<device>[0-9a-fA-F]{4})\]"
    r"(?:\s+\(rev (?P<rev>[0-9a-fA-F]+)\))?"
)
# 0000:19:00.0 0x030200 0x2330
_SYSFS = re.compile(
    r"^(?P<slot>\S+)\s+0x(?P<class>[0-9a-fA-F]{4})[0-9a-fA-F]*\s+0x(?P<device>\S+)$"
)


def _lspci_device(line: str) -> dict[str, Any] | None:
    m = _LSPCI.match(line.strip())
    if not m:
        return None
    return {
        "slot": m.group("slot").lower(),
        "class": m.group("class").lower(),
        "class_name": m.group("class_name") or None,
        "vendor_id": m.group("vendor").lower(),
        "device_id": m.group("device").lower(),
        "description": m.group("desc") or None,
        "revision": m.group("rev"),
    }


def _sysfs_device(line: str) -> dict[str, Any] | None:
    m = _SYSFS.match(line.strip())
    if not m:
        return None
    return {
        "slot": m.group("slot").lower(),
        "class": m.group("class").lower(),
        "class_name": None,
        "vendor_id": NVIDIA_VENDOR_ID,
        "device_id": m.group("device").lower(),
        "description": None,
        "revision": None,
    }


def parse(raw: str) -> dict[str, Any]:
    sec = sections(raw)
    source = "lspci" if "lspci" in sec else "sysfs" if "sysfs" in sec else None
    reader = _lspci_device if source == "lspci" else _sysfs_device
    devices = [
        d
        for d in (reader(line) for line in sec.get(source or "", []) if source)
        if d and d["vendor_id"] == NVIDIA_VENDOR_ID
    ]
    return {
        "source": source,
        "devices": devices,
        "gpu_count": sum(1 for d in devices if d["class"].startswith("03")),
        "nvswitch_count": sum(1 for d in devices if d["class"] == NVSWITCH_CLASS),
    }


FAMILY = FactFamily(
    name="pci",
    script=SCRIPT,
    parse=parse,
    doc="NVIDIA PCI devices (lspci, else sysfs): GPUs and NVSwitch bridges",
)
