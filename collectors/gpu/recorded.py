"""Replayed GPUs: real recordings shipped in the package, presented by a node that has none.

A demo (or a test) node has no GPU, yet the product's GPU charts, thresholds and Xid findings
are what an operator needs to see. Rather than invent numbers, a *replay set* (inventory
`agentctl_gpu_replay: <set>`) names recordings from `recordings/` (provenance in
`recordings/SOURCES.tsv`) and the node prints them where the real tools would have printed:

- GPU samples: a *frame* of the recorded GPU. The capture holds the GPU's `nvidia-smi -q` in two
  states, idle and under load, and five `nvidia-smi dmon` rows (one a second) in each. Frame
  (phase, k) is the phase's `-q` with the dmon row `k mod 5` laid over it (power, temperatures,
  SM and memory utilisation, clocks), so every value shown was measured on that GPU. Which
  phase is the collector's choice, derived from the node's serving load (`load` when its
  workers served requests in the interval, else `idle`), and `k` is its pass count: a
  deterministic, labelled variation, never a random one.
- `nvidia-smi --query-gpu` CSV and `nvidia-smi -q` for L1: the phase's recorded text (the CSV
  projected onto the fields asked for, in `noheader,nounits` form).
- the kernel log: the set's recorded log lines (a real Xid), verbatim.

Everything produced here says `replay:<set>` as its source, so the store, the dashboards and the
exports label it; nothing here ever reads a real GPU.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import Any, NamedTuple

from agentctl.collectors.gpu.sample import NodeGpuSample, Reading, ok
from agentctl.collectors.gpu.smi import parse_nvidia_smi_q

PHASES = ("idle", "load")
SOURCE_PREFIX = "replay:"
_HEAD_RULE = re.compile(r"^#{20,}\s*$")
_SECTION = re.compile(r"^# (?P<name>[a-z]+ :: .+?)\s*$")


@dataclass(frozen=True)
class ReplaySet:
    """What one replayed node presents: a GPU capture and, optionally, a kernel log."""

    name: str
    title: str  # one line for labels: what is replayed, from where
    capture: str  # file under recordings/ (a nvidia_gpu_exporter capture)
    kernel_log: str | None = None  # file under recordings/ (journalctl / dmesg lines)
    kernel_log_note: str = ""

    @property
    def source(self) -> str:
        """The label every sample, event and report of this set carries."""
        return SOURCE_PREFIX + self.name

    def files(self) -> tuple[str, ...]:
        return (self.capture, *((self.kernel_log,) if self.kernel_log else ()))


_H100 = "linux-x86_64__nvidia-h100-80gb-hbm3__590.48.01.capture.txt"
_XID48 = "id61421322529_journal_short_xid48_171_63_154.log"
_H100_TITLE = "recorded NVIDIA H100 80GB HBM3, driver 590.48.01 (nvidia_gpu_exporter capture)"

REPLAY_SETS: dict[str, ReplaySet] = {
    s.name: s
    for s in (
        ReplaySet("h100", _H100_TITLE, _H100),
        ReplaySet(
            "h100-xid48",
            _H100_TITLE + " + a recorded kernel log with Xid 48/63/154",
            _H100,
            _XID48,
            "kernel log recorded on another machine (an RTX PRO 6000 DBE incident, "
            "'Aug 10', year not logged)",
        ),
    )
}


class ReplayError(LookupError):
    """An unknown set or a recording without what was asked (exit 4 on the node)."""


def replay_set(name: str) -> ReplaySet:
    found = REPLAY_SETS.get(name)
    if found is None:
        raise ReplayError(f"no replay set {name!r} (known: {', '.join(sorted(REPLAY_SETS))})")
    return found


def set_of_source(source: str | None) -> ReplaySet | None:
    """The set a `replay:<name>` label names (None for measured data or an unknown name)."""
    if not source or not source.startswith(SOURCE_PREFIX):
        return None
    return REPLAY_SETS.get(source[len(SOURCE_PREFIX) :])


def is_replayed(source: str | None) -> bool:
    return bool(source) and str(source).startswith(SOURCE_PREFIX)


@cache
def recording_text(file: str) -> str:
    """A shipped recording, as stored (package data: needs nothing outside the install)."""
    node = resources.files("agentctl.collectors.gpu").joinpath("recordings", file)
    return node.read_text(encoding="utf-8")


def provenance() -> dict[str, dict[str, str]]:
    """file -> its SOURCES.tsv row (repo, path, commit, sha256, note)."""
    rows = csv.DictReader(io.StringIO(recording_text("SOURCES.tsv")), delimiter="\t")
    return {r["file"]: dict(r) for r in rows}


def describe(name: str) -> dict[str, Any]:
    """What a label links to: the set's title and each recording's provenance."""
    s = replay_set(name)
    prov = provenance()
    return {
        "set": s.name,
        "title": s.title,
        "source": s.source,
        "kernel_log_note": s.kernel_log_note,
        "recordings": [
            {k: prov.get(f, {}).get(k, "") for k in ("file", "repo", "path", "commit", "note")}
            for f in s.files()
        ],
    }


# -- pure parsers of a capture ------------------------------------------------------------------


def capture_sections(text: str) -> dict[str, str]:
    """`section name` -> its body, for a nvidia_gpu_exporter capture: each section is a rule of
    `#`, `# <state> :: <what>`, `# $ <command>` lines, a rule, then the output up to the next
    rule. Bodies lose the two blank lines the capture puts between sections."""
    lines = text.splitlines(keepends=True)
    out: dict[str, str] = {}
    i = 0
    while i < len(lines):
        after_rule = i > 0 and _HEAD_RULE.match(lines[i - 1])
        m = _SECTION.match(lines[i].rstrip("\n")) if after_rule else None
        if not m:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not _HEAD_RULE.match(lines[j]):
            j += 1  # the `# $ command` lines
        k = j + 1
        while k < len(lines) and not _HEAD_RULE.match(lines[k]):
            k += 1
        out[m["name"]] = "".join(lines[j + 1 : k]).rstrip("\n") + "\n"
        i = k
    return out


class DmonRow(NamedTuple):
    """One `nvidia-smi dmon` line; None where it printed `-`."""

    gpu: int
    power_w: float | None
    gpu_temp_c: float | None
    mem_temp_c: float | None
    sm_pct: float | None
    mem_pct: float | None
    mem_clock_mhz: float | None
    sm_clock_mhz: float | None


def parse_dmon(text: str) -> list[DmonRow]:
    """Rows of `nvidia-smi dmon` with its default columns (`# gpu pwr gtemp mtemp sm mem enc
    dec jpg ofa mclk pclk`); rows that do not fit that header are left out."""
    header: list[str] = []
    rows: list[DmonRow] = []

    def num(cells: dict[str, str], key: str) -> float | None:
        raw = cells.get(key, "-")
        try:
            return float(raw)
        except ValueError:
            return None

    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "#":
            if not header and len(parts) > 1 and parts[1] == "gpu":
                header = parts[1:]
            continue
        if not header or len(parts) != len(header) or not parts[0].isdigit():
            continue
        cells = dict(zip(header, parts, strict=True))
        keys = ("pwr", "gtemp", "mtemp", "sm", "mem", "mclk", "pclk")
        rows.append(DmonRow(int(parts[0]), *(num(cells, k) for k in keys)))
    return rows


#: SMI_FIELDS names the capture's query list spells the newer way
_CSV_ALIASES = {
    "clocks.sm": "clocks.current.sm",
    "clocks.mem": "clocks.current.memory",
    "clocks.gr": "clocks.current.graphics",
    "clocks_throttle_reasons.active": "clocks_event_reasons.active",
}


def project_csv(recorded: str, fields: Sequence[str]) -> str:
    """A recorded `--query-gpu=... --format=csv` (header, units) as `--format=csv,noheader,
    nounits` output of `fields`: the cells as nvidia-smi printed them, their unit suffixes
    dropped. A field the recording lacks raises ReplayError (nvidia-smi would refuse it too)."""
    rows = [r for r in csv.reader(io.StringIO(recorded), skipinitialspace=True) if r]
    if not rows:
        raise ReplayError("empty recorded CSV")
    names, units = [], []
    for h in rows[0]:
        m = re.match(r"^(.*?)\s*(?:\[([^\]]*)\])?$", h.strip())
        names.append(m.group(1) if m else h.strip())
        units.append(m.group(2) if m and m.group(2) else "")
    col = {n: i for i, n in enumerate(names)}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for row in rows[1:]:
        cells = []
        for f in fields:
            i = col.get(_CSV_ALIASES.get(f, f), col.get(f, -1))
            if i < 0 or i >= len(row):
                raise ReplayError(f"the recording has no field {f!r}")
            cell, unit = row[i].strip(), units[i]
            if unit and unit != "%" and cell.endswith(" " + unit):
                cell = cell[: -len(unit) - 1]
            elif unit == "%" and cell.endswith(" %"):
                cell = cell[:-2]
            cells.append(cell)
        writer.writerow(cells)
    return out.getvalue().replace(",", ", ")


# -- what a replayed node prints ----------------------------------------------------------------


def _sections(s: ReplaySet) -> dict[str, str]:
    return capture_sections(recording_text(s.capture))


def _phase(phase: str) -> str:
    if phase not in PHASES:
        raise ReplayError(f"phase must be one of {PHASES}, not {phase!r}")
    return phase


def smi_q(s: ReplaySet, phase: str = "idle") -> str:
    found = _sections(s).get(f"{_phase(phase)} :: query (-q)")
    if found is None:
        raise ReplayError(f"{s.capture} has no {phase} -q section")
    return found


def smi_csv(s: ReplaySet, fields: Sequence[str], phase: str = "idle") -> str:
    name = f"{_phase(phase)} :: query-gpu (csv, what the exporter parses)"
    found = _sections(s).get(name)
    if found is None:
        raise ReplayError(f"{s.capture} has no {phase} query-gpu section")
    return project_csv(found, fields)


def dmon_rows(s: ReplaySet, phase: str) -> list[DmonRow]:
    name = f"{_phase(phase)} :: dmon (per-device monitor, incl. PCIe rx/tx)"
    return parse_dmon(_sections(s).get(name, ""))


def kernel_log(s: ReplaySet) -> str:
    """The recorded kernel log lines, verbatim; empty when the set has none (a clean log)."""
    return recording_text(s.kernel_log) if s.kernel_log else ""


def _over(r: Reading[Any], value: float | None, conv: type) -> Reading[Any]:
    return r if value is None else ok(conv(value))


def frame(s: ReplaySet, phase: str, k: int, at: datetime | None = None) -> NodeGpuSample:
    """Frame (phase, k) of the set's GPU (see the module docstring); source `replay:<set>`."""
    node = parse_nvidia_smi_q(smi_q(s, phase), at or datetime.now(UTC))
    node.source = s.source
    rows = dmon_rows(s, phase)
    for g in node.gpus:
        mine = [r for r in rows if r.gpu == g.index]
        if not mine:
            continue
        r = mine[k % len(mine)]
        g.power_draw_w = _over(g.power_draw_w, r.power_w, float)
        g.temperature_c = _over(g.temperature_c, r.gpu_temp_c, int)
        g.utilization_gpu_pct = _over(g.utilization_gpu_pct, r.sm_pct, int)
        g.utilization_memory_pct = _over(g.utilization_memory_pct, r.mem_pct, int)
        g.sm_clock_mhz = _over(g.sm_clock_mhz, r.sm_clock_mhz, int)
        g.mem_clock_mhz = _over(g.mem_clock_mhz, r.mem_clock_mhz, int)
    return node


def frame_json(s: ReplaySet, phase: str, k: int) -> dict[str, Any]:
    """The node-side sampler's JSON for a frame, with what it replays spelled out."""
    doc = frame(s, phase, k).to_json()
    rows = max(len(dmon_rows(s, phase)), 1)
    doc["replayed"] = {"set": s.name, "title": s.title, "phase": phase, "frame": k % rows,
                       "frames": rows}  # fmt: skip
    return doc


__all__ = [
    "PHASES",
    "REPLAY_SETS",
    "SOURCE_PREFIX",
    "DmonRow",
    "ReplayError",
    "ReplaySet",
    "capture_sections",
    "describe",
    "frame",
    "frame_json",
    "is_replayed",
    "kernel_log",
    "parse_dmon",
    "project_csv",
    "provenance",
    "recording_text",
    "replay_set",
    "set_of_source",
    "smi_csv",
    "smi_q",
]
