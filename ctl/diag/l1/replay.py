"""L1 on a node with replayed GPUs (inventory `agentctl_gpu_replay: <set>`): the GPU probes
read the recordings shipped in agentctl's package instead of running nvidia-smi and the kernel
log reader, and every check judged from them says so.

The node's deployed venv prints the recorded outputs (`python -m agentctl.collectors.gpu
replay ...`, see collectors/gpu/recorded.py), so the probes still run on the node, over the
same runner, with the same parsers and thresholds as on a real GPU host. What a recording does
not hold (the kernel module's version file, /proc/modules' nvidia line, the PCI bus, the fabric
manager) comes back `not_supported` rather than from this machine, where it would contradict
the replayed GPU. The CSV and `-q` are the capture's idle state (L1 is a point-in-time check);
the kernel log is the set's recorded log, verbatim.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from agentctl.collectors.gpu import recorded
from agentctl.ctl.diag.probe import ProbeSpec

#: GPU probes a replay stands in for (all of gpu_probes)
REPLAYED_PROBES = frozenset(
    {"nvidia_version", "modules", "pci_nvidia", "nvidia_smi", "nvidia_smi_q", "xid_log",
     "fabricmanager"}
)  # fmt: skip
#: the ones the node's venv prints from the recordings (the others are never in one)
PRINTED_PROBES = frozenset({"nvidia_smi", "nvidia_smi_q", "xid_log"})
NOT_IN_RECORDING = 4  # replay_cli's exit code
#: python start-up and the package import, on a loaded node; these never hang like nvidia-smi
REPLAY_TIMEOUT = 20.0
L1_PHASE = "idle"


def _absent(name: str) -> ProbeSpec:
    return ProbeSpec(
        name,
        shell=f"echo 'not in the recording of this replayed GPU' >&2; exit {NOT_IN_RECORDING}\n",
        timeout=REPLAY_TIMEOUT,
        not_supported_codes=(NOT_IN_RECORDING,),
    )


def replay_probes(
    set_name: str, python: str, smi_fields: Sequence[str], q_sections: str, xid_grep: str,
    max_lines: int,
) -> list[ProbeSpec]:  # fmt: skip
    """The GPU probes of a replayed node, by the names L1's checks read."""
    rset = recorded.replay_set(set_name)
    base = (python, "-m", "agentctl.collectors.gpu", "replay")
    py, name = shlex.quote(python), shlex.quote(rset.name)
    # no venv on the node must never read as a clean kernel log: exit 127 (missing_tool)
    xid = (
        f"P={py}\n"
        '[ -x "$P" ] || { echo "replay: $P not found (agentctl not installed?)" >&2; exit 127; }\n'
        f'out=$("$P" -m agentctl.collectors.gpu replay kernel-log {name}) || exit $?\n'
        "echo '@@source journal'\n"
        f"echo '@@replayed {rset.name}'\n"
        f"printf '%s\\n' \"$out\" | {xid_grep} | tail -n {max_lines - 10}\n"
        "exit 0\n"
    )
    del q_sections  # the whole recorded -q: its other sections are not read
    common: dict[str, Any] = {"timeout": REPLAY_TIMEOUT, "keep": "head",
                              "not_supported_codes": (NOT_IN_RECORDING,)}  # fmt: skip
    return [
        _absent("nvidia_version"),
        _absent("modules"),
        _absent("pci_nvidia"),
        ProbeSpec(
            "nvidia_smi",
            argv=(
                *base,
                "smi-csv",
                rset.name,
                "--fields",
                ",".join(smi_fields),
                "--phase",
                L1_PHASE,
            ),
            **common,
        ),
        ProbeSpec("nvidia_smi_q", argv=(*base, "smi-q", rset.name, "--phase", L1_PHASE), **common),
        ProbeSpec("xid_log", shell=xid, timeout=REPLAY_TIMEOUT, max_lines=max_lines),
        _absent("fabricmanager"),
    ]


def label(
    name: str,
    reason: str,
    evidence: dict[str, Any],
    probes: Mapping[str, str],
    set_name: str,
) -> tuple[str, dict[str, Any]]:
    """A check judged from replayed probes: its reason starts with `Replayed GPU (<set>)`
    and its evidence names the set, so no report reads as a real GPU's. When none of its
    replayed probes answered (no agentctl venv on the node yet), the reason says so instead
    of passing the skip off as "no GPU here"."""
    mine = {p: st for p, st in probes.items() if p in REPLAYED_PROBES}
    if not mine:
        return reason, evidence
    ev = {**evidence, "replayed": set_name}
    read = {p: st for p, st in mine.items() if p in PRINTED_PROBES}
    if read and not any(st == "ok" for st in read.values()):
        states = ", ".join(f"{p}: {st}" for p, st in sorted(mine.items()))
        return (f"Replayed GPU ({set_name}) unreadable ({states}; is agentctl installed on the "
                f"node?): {reason}", ev)  # fmt: skip
    rset = recorded.REPLAY_SETS.get(set_name)
    note = f" [{rset.kernel_log_note}]" if rset and name == "gpu_xid" and rset.kernel_log else ""
    return f"Replayed GPU ({set_name}): {reason}{note}", ev


__all__ = ["REPLAYED_PROBES", "label", "replay_probes"]
