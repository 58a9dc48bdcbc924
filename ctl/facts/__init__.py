"""Registry of fact families, in the order `agentctl facts` reports them."""

from __future__ import annotations

from agentctl.ctl.errors import UsageError
from agentctl.ctl.facts import (
    cpu,
    disks,
    gpus,
    kernel,
    memory,
    nics,
    nvidia,
    os_release,
    pci,
    systemd,
)
from agentctl.ctl.facts.base import FactFamily
from agentctl.ctl.facts.gather import Gathered, gather_facts

FAMILIES: dict[str, FactFamily] = {
    fam.name: fam
    for fam in (
        os_release.FAMILY,
        kernel.FAMILY,
        cpu.FAMILY,
        memory.FAMILY,
        disks.FAMILY,
        nics.FAMILY,
        systemd.FAMILY,
        nvidia.FAMILY,
        gpus.FAMILY,
        pci.FAMILY,
    )
}


def select_families(names: list[str] | None) -> dict[str, FactFamily]:
    """The named families in registry order (stable output); None selects all of them."""
    if names is None:
        return dict(FAMILIES)
    unknown = [n for n in names if n not in FAMILIES]
    if unknown:
        valid = ", ".join(FAMILIES)
        raise UsageError(
            f"unknown fact famil{'y' if len(unknown) == 1 else 'ies'}: {', '.join(unknown)}"
            f" (valid: {valid})",
            hint=f"choose from: {valid}",
        )
    wanted = set(names)
    return {name: fam for name, fam in FAMILIES.items() if name in wanted}


__all__ = ["FAMILIES", "FactFamily", "Gathered", "gather_facts", "select_families"]
