"""`cpu` facts: model, sockets, cores and threads.

x86 /proc/cpuinfo names the model and topology; aarch64 lists only implementer/part ids and
no topology, so the snippet also prints sysfs topology and the parser names known Arm parts.
`nproc` is kept apart from `threads` because it honours the affinity mask (containers, cgroups).
"""

from __future__ import annotations

from typing import Any

from agentctl.ctl.facts._common import sections, to_int
from agentctl.ctl.facts.base import FactFamily

#: the cpuinfo keys the parser reads ("Processor" and "Hardware": old 32-bit Arm kernels)
CPUINFO_KEYS = (
    "processor",
    "vendor_id",
    "model name",
    "physical id",
    "core id",
    "CPU implementer",
    "CPU part",
    "Hardware",
    "Processor",
)

# Only those keys and the blank lines between CPUs: x86 flag lines would make this ~350 KB on
# a 224-thread host. One grep reads all topology files.
SCRIPT = f"""\
echo '@@cpuinfo'
grep -E '^($|{"|".join(CPUINFO_KEYS)})' /proc/cpuinfo 2>/dev/null
echo '@@nproc'
nproc 2>/dev/null
echo '@@topology'
grep -H '' /sys/devices/system/cpu/cpu[0-9]*/topology/physical_package_id \
  /sys/devices/system/cpu/cpu[0-9]*/topology/core_id 2>/dev/null
"""

ARM_IMPLEMENTERS: dict[int, str] = {0x41: "ARM", 0x4E: "NVIDIA", 0x51: "Qualcomm", 0xC0: "Ampere"}
#: (implementer, part) -> core name; GPU hosts: Grace = Neoverse-V2, GB10 = X925 + A725.
ARM_PARTS: dict[tuple[int, int], str] = {
    (0x41, 0xD08): "Cortex-A72",
    (0x41, 0xD0C): "Neoverse-N1",
    (0x41, 0xD40): "Neoverse-V1",
    (0x41, 0xD42): "Cortex-A78AE",
    (0x41, 0xD49): "Neoverse-N2",
    (0x41, 0xD4F): "Neoverse-V2",
    (0x41, 0xD84): "Neoverse-V3",
    (0x41, 0xD85): "Cortex-X925",
    (0x41, 0xD87): "Cortex-A725",
    (0xC0, 0xAC3): "AmpereOne",
}


def _blocks(lines: list[str]) -> list[dict[str, str]]:
    """cpuinfo into one dict per blank-line separated block (one per logical CPU, plus trailers)."""
    blocks: list[dict[str, str]] = [{}]
    for line in lines:
        if not line.strip():
            if blocks[-1]:
                blocks.append({})
            continue
        key, found, value = line.partition(":")
        if found:
            blocks[-1][key.strip()] = value.strip()
    return [b for b in blocks if b]


def _arm_name(block: dict[str, str]) -> str | None:
    impl, part = to_int(block.get("CPU implementer")), to_int(block.get("CPU part"))
    if impl is None or part is None:
        return None
    vendor = ARM_IMPLEMENTERS.get(impl, f"implementer {impl:#x}")
    return f"{vendor} {ARM_PARTS.get((impl, part), f'part {part:#x}')}"


def _vendor(block: dict[str, str]) -> str | None:
    if "vendor_id" in block:
        return block["vendor_id"]
    impl = to_int(block.get("CPU implementer"))
    return None if impl is None else ARM_IMPLEMENTERS.get(impl, f"{impl:#x}")


def _topology(lines: list[str]) -> tuple[int | None, int | None]:
    """(sockets, cores) from `path:value` lines of sysfs topology files."""
    per_cpu: dict[str, dict[str, str]] = {}
    for line in lines:
        path, found, value = line.rpartition(":")
        parts = path.split("/")
        if found and len(parts) >= 3:
            per_cpu.setdefault(parts[-3], {})[parts[-1]] = value.strip()
    pairs = {(c.get("physical_package_id"), c.get("core_id")) for c in per_cpu.values()}
    if not pairs:
        return None, None
    return len({p for p, _ in pairs}), len(pairs)


def parse(raw: str) -> dict[str, Any]:
    sec = sections(raw)
    all_blocks = _blocks(sec.get("cpuinfo", []))
    blocks = [b for b in all_blocks if "processor" in b]
    trailer = {k: v for b in all_blocks for k, v in b.items()}
    names: list[str] = []
    for b in blocks:
        name = b.get("model name") or _arm_name(b) or b.get("Processor")
        if name and name not in names:
            names.append(name)
    if not names and trailer.get("Hardware"):
        names.append(trailer["Hardware"])
    sockets: int | None = None
    cores: int | None = None
    if any("physical id" in b for b in blocks):
        sockets = len({b.get("physical id") for b in blocks})
        cores = len({(b.get("physical id"), b.get("core id")) for b in blocks})
    else:
        sockets, cores = _topology(sec.get("topology", []))
    nproc = [to_int(x) for x in sec.get("nproc", []) if x.strip()]
    return {
        "model_name": " / ".join(names) if names else None,
        "vendor": _vendor(blocks[0]) if blocks else None,
        "sockets": sockets,
        "cores": cores,
        "threads": len(blocks) or None,
        "nproc": nproc[0] if nproc else None,
    }


FAMILY = FactFamily(
    name="cpu",
    script=SCRIPT,
    parse=parse,
    doc="CPU model, sockets, physical cores, logical threads, usable CPUs (nproc)",
)
