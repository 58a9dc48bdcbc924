"""`nvidia` facts: is the NVIDIA kernel driver loaded, which version, and which CUDA it supports.

A host without the driver is ordinary data (`present: false` with a reason), never an error:
fleets mix GPU and CPU nodes. The kernel module version (/proc/driver/nvidia/version) is read
even when nvidia-smi is missing or broken, so a driver/library mismatch shows both sides.
"""

from __future__ import annotations

import re
from typing import Any

from agentctl.ctl.facts._common import TIMEOUT_PREFIX, key_values, sections
from agentctl.ctl.facts.base import FactFamily

SCRIPT = f"""\
{TIMEOUT_PREFIX}
if [ -d /sys/module/nvidia ]; then echo module=1; else echo module=0; fi
if [ -r /proc/driver/nvidia/version ]; then
  echo '@@version'
  cat /proc/driver/nvidia/version
fi
if command -v nvidia-smi >/dev/null 2>&1; then
  out=$($T nvidia-smi 2>&1); rc=$?
  echo '@@smi'
  echo "rc=$rc"
  printf '%s\\n' "$out" | head -n 8
fi
exit 0
"""

# "NVRM version: NVIDIA UNIX x86_64 Kernel Module  545.23.08  Mon Nov  6 ..." or
# "NVRM version: NVIDIA UNIX Open Kernel Module for aarch64  580.95.05  Release Build ..."
_NVRM = re.compile(r"NVRM version: .*?Kernel Module(?: for \S+)?\s+(\d+(?:\.\d+)+)")
_CUDA = re.compile(r"CUDA Version\s*:\s*(\d+(?:\.\d+)*)")
_SMI_DRIVER = re.compile(r"Driver Version\s*:\s*(\d+(?:\.\d+)+)")


def _smi_error(lines: list[str]) -> str | None:
    """nvidia-smi's own failure message, e.g. "Failed to initialize NVML: ... mismatch"."""
    text = [line.strip() for line in lines if line.strip()]
    return "; ".join(text[:3]) if text else None


def _reason(present: bool | None) -> str | None:
    if present is None:
        return "no output from nvidia snippet"
    return None if present else "no NVIDIA driver loaded"


def parse(raw: str) -> dict[str, Any]:
    sec = sections(raw)
    module = key_values(sec.get("", [])).get("module")
    module_loaded = module == "1"
    version_text = "\n".join(sec.get("version", []))
    nvrm = _NVRM.search(version_text)
    smi_found = "smi" in sec
    smi_lines = sec.get("smi", [])
    smi_rc = key_values(smi_lines[:1]).get("rc")
    smi_text = "\n".join(smi_lines[1:])
    smi_ok = smi_rc == "0"
    cuda = _CUDA.search(smi_text) if smi_ok else None
    smi_driver = _SMI_DRIVER.search(smi_text) if smi_ok else None
    driver_version = nvrm.group(1) if nvrm else (smi_driver.group(1) if smi_driver else None)
    # No `module=` line means the snippet never ran: unknown, not "no driver".
    present = None if module is None else module_loaded or nvrm is not None
    smi_error: str | None = None
    if smi_found and not smi_ok:
        smi_error = (
            "nvidia-smi timed out" if smi_rc == "124" else _smi_error(smi_lines[1:])
        ) or f"nvidia-smi exited with status {smi_rc}"
    return {
        "present": present,
        "reason": _reason(present),
        "kernel_module_loaded": module_loaded,
        "driver_version": driver_version,
        "open_kernel_module": ("Open Kernel Module" in version_text) if nvrm else None,
        "nvidia_smi_found": smi_found,
        "cuda_version": cuda.group(1) if cuda else None,
        "smi_error": smi_error,
    }


FAMILY = FactFamily(
    name="nvidia",
    script=SCRIPT,
    parse=parse,
    doc="NVIDIA driver: loaded?, kernel module version, CUDA version, nvidia-smi health",
)
