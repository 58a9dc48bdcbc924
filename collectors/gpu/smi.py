"""The agentless path: parse `nvidia-smi` output taken over SSH.

`--query-gpu` field names follow `nvidia-smi --help-query-gpu`. An unknown field fails the
whole query, so the list keeps `clocks_throttle_reasons.active` (accepted by old and new
drivers) and leaves out what CSV cannot give (PCIe replays, NVLink: NVML or `-q` only).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from agentctl.collectors.gpu.sample import (
    CLOCK_EVENT_REASONS,
    GpuSample,
    NodeGpuSample,
    Reading,
    RemappedRows,
    Status,
    error,
    no_permission,
    not_supported,
    ok,
)

MIB = 1024 * 1024

SMI_FIELDS: tuple[str, ...] = (
    "index",
    "uuid",
    "name",
    "pci.bus_id",
    "utilization.gpu",
    "utilization.memory",
    "memory.used",
    "memory.total",
    "temperature.gpu",
    "power.draw",
    "power.limit",
    "clocks.sm",
    "clocks.mem",
    "clocks_throttle_reasons.active",
    "ecc.errors.uncorrected.volatile.total",
    "ecc.errors.uncorrected.aggregate.total",
    "ecc.errors.corrected.volatile.total",
    "ecc.errors.corrected.aggregate.total",
    "retired_pages.pending",
    "pcie.link.gen.current",
    "pcie.link.gen.max",
    "pcie.link.width.current",
    "pcie.link.width.max",
    "fan.speed",
)


def smi_command(fields: Sequence[str] = SMI_FIELDS) -> list[str]:
    """argv for `subprocess.run` or `shlex.join` over SSH: one field list, no shell syntax."""
    bad = [f for f in fields if not re.fullmatch(r"[a-z0-9_.]+", f)]
    if bad:
        raise ValueError(f"not nvidia-smi field names: {bad}")
    return ["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader,nounits"]


# nvidia-smi's bracketed placeholders (and the bare N/A of some fields).
_MARKERS: dict[str, Callable[[str], Reading[Any]]] = {
    "[n/a]": not_supported,
    "n/a": not_supported,
    "[not supported]": not_supported,
    "[requested functionality has been deprecated]": not_supported,
    "[insufficient permissions]": no_permission,
    "[unknown error]": error,
    "[gpu is lost]": error,
}

_NUM = re.compile(r"^\s*(-?[0-9]+(?:\.[0-9]+)?)\s*(?:[A-Za-z%]+(?:/s)?|x)?\s*$")


def value_reading(raw: str, conv: Callable[[str], Any]) -> Reading[Any]:
    """One cell: a marker becomes its status, anything else is converted or is an error."""
    text = raw.strip()
    marker = _MARKERS.get(text.lower())
    if marker is not None:
        return marker(text)
    try:
        return ok(conv(text))
    except ValueError:
        return error(f"unparsed: {text!r}")


def _num(text: str) -> float:
    m = _NUM.match(text)
    if not m:
        raise ValueError(text)
    return float(m.group(1))


def _int(text: str) -> int:
    return int(_num(text))


def _mib(text: str) -> int:
    return int(_num(text)) * MIB


def _yes(text: str) -> bool:
    low = text.lower()
    if low in ("yes", "active", "enabled"):
        return True
    if low in ("no", "not active", "disabled"):
        return False
    raise ValueError(text)


_CSV_FIELDS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "uuid": ("uuid", str),
    "name": ("name", str),
    "pci.bus_id": ("pci_bus_id", str),
    "utilization.gpu": ("utilization_gpu_pct", _int),
    "utilization.memory": ("utilization_memory_pct", _int),
    "memory.used": ("memory_used_bytes", _mib),
    "memory.total": ("memory_total_bytes", _mib),
    "temperature.gpu": ("temperature_c", _int),
    "power.draw": ("power_draw_w", _num),
    "power.limit": ("power_limit_w", _num),
    "clocks.sm": ("sm_clock_mhz", _int),
    "clocks.mem": ("mem_clock_mhz", _int),
    "clocks_throttle_reasons.active": ("clock_event_reasons", lambda t: int(t, 16)),
    "clocks_event_reasons.active": ("clock_event_reasons", lambda t: int(t, 16)),
    "ecc.errors.uncorrected.volatile.total": ("ecc_uncorrected_volatile", _int),
    "ecc.errors.uncorrected.aggregate.total": ("ecc_uncorrected_aggregate", _int),
    "ecc.errors.corrected.volatile.total": ("ecc_corrected_volatile", _int),
    "ecc.errors.corrected.aggregate.total": ("ecc_corrected_aggregate", _int),
    "retired_pages.pending": ("retired_pages_pending", _yes),
    "pcie.link.gen.current": ("pcie_gen_current", _int),
    "pcie.link.gen.gpucurrent": ("pcie_gen_current", _int),
    "pcie.link.gen.max": ("pcie_gen_max", _int),
    "pcie.link.gen.gpumax": ("pcie_gen_max", _int),
    "pcie.link.width.current": ("pcie_width_current", _int),
    "pcie.link.width.max": ("pcie_width_max", _int),
    "fan.speed": ("fan_speed_pct", _int),
}


def _strip_unit(header: str) -> str:
    return re.sub(r"\s*\[[^\]]*\]$", "", header.strip())


def _csv_row(line: str) -> list[str]:
    """One line of nvidia-smi CSV. Line by line, since nvidia-smi never quotes a newline: a
    stray `\r` inside a field (which `csv.reader` over the whole text raises on) or a broken
    quote only misaligns its own row, and a misaligned row is an error reading, not a raise."""
    try:
        return next(csv.reader([line], skipinitialspace=True), [])
    except csv.Error:
        return ["\ufffd"]  # one cell: reported as a row with the wrong number of cells


def parse_smi_csv(text: str, fields: Sequence[str] = SMI_FIELDS) -> list[GpuSample]:
    """Rows of `--query-gpu=<fields>` (with or without header and units), one sample per GPU.

    Fields with no GpuSample attribute (driver_version, vbios_version, ...) are ignored; a row
    with the wrong number of cells is an error on every field rather than a misaligned read.
    """
    rows = [r for r in (_csv_row(line) for line in text.splitlines()) if r]
    if rows and [_strip_unit(c) for c in rows[0]] == list(fields):
        rows = rows[1:]
    out: list[GpuSample] = []
    for pos, row in enumerate(rows):
        cells = dict(zip(fields, row, strict=False))
        idx = value_reading(cells.get("index", str(pos)), int)
        g = GpuSample(index=idx.value if idx.value is not None else pos)
        for f in fields:
            if f not in _CSV_FIELDS:
                continue
            attr, conv = _CSV_FIELDS[f]
            if len(row) != len(fields):
                setattr(g, attr, error(f"row has {len(row)} cells, expected {len(fields)}"))
            else:
                setattr(g, attr, value_reading(cells[f], conv))
        out.append(g)
    return out


# -- nvidia-smi -q ---------------------------------------------------------------------------

_Q_LINE = re.compile(r"^(?P<ind> *)(?P<key>[^:]+?)\s*(?::\s?(?P<val>.*))?$")

_GPU_LINE = re.compile(r"^GPU ([0-9A-Fa-f]+:[0-9A-Fa-f]+:[0-9A-Fa-f]+\.[0-9A-Fa-f])$")

_REASON_LABELS: dict[str, int] = {
    "Idle": 0x1,
    "Applications Clocks Setting": 0x2,
    "SW Power Cap": 0x4,
    "HW Slowdown": 0x8,
    "Sync Boost": 0x10,
    "SW Thermal Slowdown": 0x20,
    "HW Thermal Slowdown": 0x40,
    "HW Power Brake Slowdown": 0x80,
    "Display Clock Setting": 0x100,
}
assert set(_REASON_LABELS.values()) == {b for b, _ in CLOCK_EVENT_REASONS}


def _q_tree(text: str) -> tuple[dict[str, str], list[tuple[str, dict[tuple[str, ...], str]]]]:
    """Header keys, and per `GPU <bus id>` block a map from key path to raw value."""
    header: dict[str, str] = {}
    gpus: list[tuple[str, dict[tuple[str, ...], str]]] = []
    stack: list[tuple[int, str]] = []
    for line in text.splitlines():
        if not line.strip() or line.startswith("="):
            continue
        m = _Q_LINE.match(line.rstrip())
        if not m:
            continue
        ind, key, val = len(m["ind"]), m["key"].strip(), m["val"]
        if ind == 0:
            bus = _GPU_LINE.match(line.rstrip())
            if bus:
                gpus.append((bus[1], {}))
                stack = []
            elif val is not None:
                header[key] = val.strip()
            continue
        if not gpus:
            continue
        while stack and stack[-1][0] >= ind:
            stack.pop()
        path = (*(k for _, k in stack), key)
        if val is not None:
            gpus[-1][1][path] = val.strip()
        stack.append((ind, key))
    return header, gpus


def _first(tree: dict[tuple[str, ...], str], *paths: tuple[str, ...]) -> str | None:
    for p in paths:
        if p in tree:
            return tree[p]
    return None


def _q(
    tree: dict[tuple[str, ...], str], conv: Callable[[str], Any], *paths: tuple[str, ...]
) -> Reading[Any]:
    raw = _first(tree, *paths)
    return (
        error(f"missing in -q: {'/'.join(paths[0])}") if raw is None else value_reading(raw, conv)
    )


def _sum(
    tree: dict[tuple[str, ...], str], section: tuple[str, ...], names: Sequence[str]
) -> Reading[int]:
    """ECC totals: newer drivers split SRAM/DRAM, older ones print `Double Bit / Total`."""
    parts = [value_reading(tree[(*section, n)], _int) for n in names if (*section, n) in tree]
    if not parts:
        return error(f"missing in -q: {'/'.join(section)}")
    if all(p.ok for p in parts):
        return ok(sum(int(p.value or 0) for p in parts))
    bad = next(p for p in parts if not p.ok)
    return Reading(bad.status, None, bad.detail)


def _reasons(tree: dict[tuple[str, ...], str]) -> Reading[int]:
    sect = [p for p in tree if p[0] in ("Clocks Event Reasons", "Clocks Throttle Reasons")]
    if not sect:
        return error("missing in -q: Clocks Event Reasons")
    mask = 0
    for p in sect:
        bit = _REASON_LABELS.get(p[-1])
        if bit is not None and tree[p] == "Active":
            mask |= bit
    return ok(mask)


def parse_nvidia_smi_q(text: str, collected_at: datetime | None = None) -> NodeGpuSample:
    """`nvidia-smi -q` text: the fields above that it shows (NVLink state is not among them)."""
    header, gpus = _q_tree(text)
    node = NodeGpuSample(source="nvidia-smi -q", timestamp=collected_at or datetime.now(UTC))
    node.driver_version = value_reading(header.get("Driver Version", "[Unknown Error]"), str)
    node.cuda_driver_version = value_reading(header.get("CUDA Version", "[Unknown Error]"), str)
    for i, (bus, t) in enumerate(gpus):
        g = GpuSample(index=i)
        g.name = _q(t, str, ("Product Name",))
        g.uuid = _q(t, str, ("GPU UUID",))
        g.pci_bus_id = _q(t, str, ("PCI", "Bus Id")) if ("PCI", "Bus Id") in t else ok(bus)
        g.utilization_gpu_pct = _q(t, _int, ("Utilization", "Gpu"))
        g.utilization_memory_pct = _q(t, _int, ("Utilization", "Memory"))
        g.memory_used_bytes = _q(t, _mib, ("FB Memory Usage", "Used"))
        g.memory_total_bytes = _q(t, _mib, ("FB Memory Usage", "Total"))
        g.temperature_c = _q(t, _int, ("Temperature", "GPU Current Temp"))
        g.power_draw_w = _q(
            t, _num, ("GPU Power Readings", "Power Draw"), ("Power Readings", "Power Draw")
        )
        g.power_limit_w = _q(
            t,
            _num,
            ("GPU Power Readings", "Current Power Limit"),
            ("Power Readings", "Enforced Power Limit"),
            ("Power Readings", "Power Limit"),
        )
        g.sm_clock_mhz = _q(t, _int, ("Clocks", "SM"))
        g.mem_clock_mhz = _q(t, _int, ("Clocks", "Memory"))
        g.clock_event_reasons = _reasons(t)
        unc = ("DRAM Uncorrectable", "SRAM Uncorrectable Parity", "SRAM Uncorrectable SEC-DED")
        cor = ("DRAM Correctable", "SRAM Correctable")
        for scope in ("Volatile", "Aggregate"):
            sect = ("ECC Errors", scope)
            u = _sum(t, sect, unc)
            if u.status is Status.ERROR and "missing" in u.detail:
                u = _sum(t, (*sect, "Double Bit"), ("Total",))
            c = _sum(t, sect, cor)
            if c.status is Status.ERROR and "missing" in c.detail:
                c = _sum(t, (*sect, "Single Bit"), ("Total",))
            setattr(g, f"ecc_uncorrected_{scope.lower()}", u)
            setattr(g, f"ecc_corrected_{scope.lower()}", c)
        g.remapped_rows = _remapped(t)
        g.retired_pages = _sum(t, ("Retired Pages",), ("Single Bit ECC", "Double Bit ECC"))
        g.retired_pages_pending = _q(
            t,
            _yes,
            ("Retired Pages", "Pending Page Blacklist"),
            ("Retired Pages", "Pending Page Retirement"),
            ("Retired Pages", "Pending"),
        )
        link = ("PCI", "GPU Link Info")
        g.pcie_gen_current = _q(t, _int, (*link, "PCIe Generation", "Current"))
        g.pcie_gen_max = _q(t, _int, (*link, "PCIe Generation", "Max"))
        g.pcie_width_current = _q(t, _int, (*link, "Link Width", "Current"))
        g.pcie_width_max = _q(t, _int, (*link, "Link Width", "Max"))
        g.pcie_replay_counter = _q(t, _int, ("PCI", "Replays Since Reset"))
        g.fan_speed_pct = _q(t, _int, ("Fan Speed",))
        node.gpus.append(g)
    return node


def _remapped(t: dict[tuple[str, ...], str]) -> Reading[RemappedRows]:
    names = ("Correctable Error", "Uncorrectable Error", "Pending", "Remapping Failure Occurred")
    convs: tuple[Callable[[str], Any], ...] = (_int, _int, _yes, _yes)
    parts = [_q(t, conv, ("Remapped Rows", n)) for n, conv in zip(names, convs, strict=True)]
    bad = [p for p in parts if not p.ok]
    if bad:
        return Reading(bad[0].status, None, bad[0].detail)
    corr, unc, pending, failure = (p.value for p in parts)
    return ok(RemappedRows(int(corr or 0), int(unc or 0), bool(pending), bool(failure)))
