"""Pure parsers of the L1 probe outputs that the repository did not parse yet.

Every function takes text that may be cut, empty or from another tool version, and returns what
it recognises (None or empty for the rest); none of them raises on odd input.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agentctl.collectors.gpu.sample import GpuSample
from agentctl.collectors.gpu.smi import parse_smi_csv
from agentctl.collectors.gpu.xid import XidEvent, parse_xid_line
from agentctl.ctl.facts._common import key_values, to_float, to_int

_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(path: str) -> str:
    """/proc/mounts writes space, tab, newline and backslash as \\ooo escapes."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), path)


# -- mounts, load, CPUs -----------------------------------------------------------------------


@dataclass(frozen=True)
class Mount:
    device: str
    mountpoint: str
    fstype: str
    options: tuple[str, ...]

    @property
    def read_only(self) -> bool:
        return "ro" in self.options


def parse_mounts(text: str) -> list[Mount]:
    """/proc/mounts; a later line for the same mount point is stacked on top, so it wins."""
    by_mp: dict[str, Mount] = {}
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 4:
            mp = _unescape(f[1])
            by_mp.pop(mp, None)
            by_mp[mp] = Mount(_unescape(f[0]), mp, f[2], tuple(f[3].split(",")))
    return list(by_mp.values())


def mounts_for_facts(mounts: Sequence[Mount]) -> str:
    """The `mountpoint options` lines that ctl.facts.disks reads (its `cut -f 2,4` form)."""
    return "\n".join(
        f"{m.mountpoint.replace(' ', chr(92) + '040')} {','.join(m.options)}" for m in mounts
    )


@dataclass(frozen=True)
class LoadAvg:
    load1: float
    load5: float
    load15: float


def parse_loadavg(text: str) -> LoadAvg | None:
    f = text.split()
    values = [to_float(x) for x in f[:3]]
    if len(values) < 3 or any(v is None or v != v or v < 0 for v in values):
        return None
    a, b, c = (float(v or 0.0) for v in values)
    return LoadAvg(a, b, c)


def parse_cpu_list(text: str) -> int | None:
    """`0-63,128-191` (sysfs cpu/online) -> 128."""
    total = 0
    for part in text.strip().split(","):
        lo, dash, hi = part.strip().partition("-")
        a, b = to_int(lo), to_int(hi) if dash else to_int(lo)
        if a is None or b is None or b < a or a < 0:
            return None
        total += b - a + 1
    return total or None


# -- network ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NetCounters:
    rx_packets: int
    rx_errs: int
    rx_drop: int
    tx_packets: int
    tx_errs: int
    tx_drop: int

    @property
    def errors(self) -> int:
        return self.rx_errs + self.tx_errs

    @property
    def packets(self) -> int:
        return self.rx_packets + self.tx_packets


def parse_net_dev(text: str) -> dict[str, NetCounters]:
    """/proc/net/dev: `iface: rx bytes packets errs drop fifo frame compressed multicast tx ...`."""
    out: dict[str, NetCounters] = {}
    for line in text.splitlines():
        name, colon, rest = line.partition(":")
        nums = [to_int(x) for x in rest.split()]
        if not colon or len(nums) < 16 or any(n is None or n < 0 for n in nums):
            continue
        n = [int(x or 0) for x in nums]
        out[name.strip()] = NetCounters(n[1], n[2], n[3], n[9], n[10], n[11])
    return out


@dataclass(frozen=True)
class NetLink:
    name: str
    operstate: str
    carrier: int | None  # sysfs refuses to read it (EINVAL) on an administratively down link
    flags: int | None
    type: int | None  # ARPHRD_*: 1 Ethernet, 32 InfiniBand, 772 loopback
    hardware: bool  # has a `device` link: a NIC, not a bridge, veth or tunnel

    @property
    def admin_up(self) -> bool | None:
        return None if self.flags is None else bool(self.flags & 0x1)  # IFF_UP


def parse_net_links(text: str) -> list[NetLink]:
    """The `net_links` probe: `name=... operstate=... carrier=... flags=... type=... device=`."""
    out: list[NetLink] = []
    for line in text.splitlines():
        kv = dict(tok.partition("=")[::2] for tok in line.split() if "=" in tok)
        if not kv.get("name"):
            continue
        out.append(
            NetLink(
                name=kv["name"],
                operstate=kv.get("operstate") or "unknown",
                carrier=to_int(kv.get("carrier") or None),
                flags=to_int(kv.get("flags") or None),
                type=to_int(kv.get("type") or None),
                hardware=kv.get("device") == "1",
            )
        )
    return out


# -- time -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChronyTracking:
    offset_s: float | None  # signed: positive when the clock is ahead of NTP time
    leap_status: str | None
    reference: str | None
    stratum: int | None

    @property
    def synchronised(self) -> bool | None:
        if self.leap_status is None:
            return None
        return self.leap_status.lower() != "not synchronised" and self.stratum != 0


_SYSTEM_TIME = re.compile(r"([0-9.]+) seconds (fast|slow) of NTP time")


def parse_chrony(text: str) -> ChronyTracking | None:
    """`chronyc tracking`; None when it printed no tracking report (daemon down: `506 ...`)."""
    kv = key_values(text.splitlines(), ":")
    if "Leap status" not in kv and "System time" not in kv:
        return None
    m = _SYSTEM_TIME.search(kv.get("System time", ""))
    offset = to_float(m.group(1)) if m else None
    if offset is not None and m is not None and m.group(2) == "slow":
        offset = -offset
    return ChronyTracking(
        offset_s=offset,
        leap_status=kv.get("Leap status") or None,
        reference=kv.get("Reference ID") or None,
        stratum=to_int(kv.get("Stratum")),
    )


def parse_timedatectl(text: str) -> dict[str, str]:
    """`timedatectl show`: NTP=yes|no (a service is enabled), NTPSynchronized=yes|no."""
    return {k: v for k, v in key_values(text.splitlines()).items() if k.isalnum()}


# -- NVIDIA -----------------------------------------------------------------------------------


def loaded_modules(text: str) -> frozenset[str]:
    """/proc/modules: the first field of each line."""
    return frozenset(line.split()[0] for line in text.splitlines() if line.split())


@dataclass
class SmiTable:
    """`--query-gpu` rows, with what nvidia-smi printed instead of a row kept apart."""

    gpus: list[GpuSample] = field(default_factory=list)
    extras: list[dict[str, str]] = field(default_factory=list)  # raw cells L1 reads itself
    lost: list[str] = field(default_factory=list)  # "Unable to determine the device handle"
    messages: list[str] = field(default_factory=list)  # any other non-row line


_LOST = re.compile(r"Unable to determine the device handle for GPU\s*([0-9A-Fa-f:.]+)")


def parse_smi_table(text: str, fields: Sequence[str]) -> SmiTable:
    """Rows that have exactly one cell per field (and an integer index) are data; the sampler's
    parser reads those, so a lost GPU's error line never shifts the others' columns."""
    table = SmiTable()
    data: list[str] = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            cells = next(csv.reader(io.StringIO(line), skipinitialspace=True), [])
        except csv.Error:
            cells = []
        if len(cells) == len(fields) and cells[0].strip().isdigit():
            data.append(line)
            table.extras.append(dict(zip(fields, (c.strip() for c in cells), strict=True)))
        elif m := _LOST.search(line):
            table.lost.append(m.group(1).rstrip(":"))
        else:
            table.messages.append(line.strip()[:200])
    table.gpus = parse_smi_csv("\n".join(data), fields) if data else []
    return table


@dataclass(frozen=True)
class SmiFailure:
    kind: str  # "lib_mismatch" | "no_driver" | "no_devices" | "gpu_lost" | "other"
    message: str
    nvml_version: str | None = None


_NVML_VERSION = re.compile(r"NVML library version:\s*(\S+)")
_FAILURES: tuple[tuple[str, str], ...] = (
    ("driver/library version mismatch", "lib_mismatch"),
    ("couldn't communicate with the nvidia driver", "no_driver"),
    ("driver not loaded", "no_driver"),
    ("no devices were found", "no_devices"),
    ("gpu is lost", "gpu_lost"),
    ("failed to initialize nvml", "other"),
)


def smi_failure(text: str) -> SmiFailure | None:
    """nvidia-smi's own failure message (stdout or stderr), classified."""
    low = text.lower()
    for needle, kind in _FAILURES:
        if needle in low:
            line = next((ln.strip() for ln in text.splitlines() if needle in ln.lower()), needle)
            m = _NVML_VERSION.search(text)
            return SmiFailure(kind, line[:300], m.group(1) if m else None)
    return None


def bus_key(bus_id: str) -> str:
    """One spelling for the bus ids of nvidia-smi (`00000000:1B:00.0`), lspci (`0000:1b:00.0`)
    and Xid lines (`0000:1b:00`): `0000:1b:00`."""
    parts = bus_id.strip().lower().split(":")
    if len(parts) < 3:
        return bus_id.strip().lower()
    domain, bus, dev = parts[-3], parts[-2], parts[-1].split(".")[0]
    return f"{domain[-4:].rjust(4, '0')}:{bus}:{dev}"


@dataclass(frozen=True)
class TempLimits:
    current_c: float | None
    slowdown_c: float | None
    shutdown_c: float | None
    source: str  # "absolute" (GPU Slowdown Temp) | "tlimit" (derived from T.Limit margins)


_Q_GPU = re.compile(r"^GPU ([0-9A-Fa-f]+:[0-9A-Fa-f]+:[0-9A-Fa-f]+\.[0-9A-Fa-f])\s*$")
_Q_KV = re.compile(r"^\s+(GPU [A-Za-z. ]*?Temp)\s*:\s*(-?[0-9.]+)\s*C\s*$")


def _limits(kv: dict[str, float]) -> TempLimits | None:
    cur = kv.get("GPU Current Temp")
    if "GPU Slowdown Temp" in kv:
        return TempLimits(cur, kv["GPU Slowdown Temp"], kv.get("GPU Shutdown Temp"), "absolute")
    margin, slow = kv.get("GPU T.Limit Temp"), kv.get("GPU Slowdown T.Limit Temp")
    if cur is None or margin is None or slow is None:
        return None
    # T.Limit is the margin below the max operating temperature; the slowdown and shutdown
    # T.Limit values are margins too (negative: past it), so absolute = current + margin - x.
    shut = kv.get("GPU Shutdown T.Limit Temp")
    return TempLimits(
        cur, cur + margin - slow, None if shut is None else cur + margin - shut, "tlimit"
    )


def parse_smi_q_temps(text: str) -> dict[str, TempLimits]:
    """Slowdown temperatures per GPU (keyed by `bus_key`) from `nvidia-smi -q [-d TEMPERATURE]`:
    absolute on older drivers, T.Limit-relative on newer ones; N/A values are left out."""
    out: dict[str, TempLimits] = {}
    bus: str | None = None
    kv: dict[str, float] = {}
    for line in [*text.splitlines(), "GPU 0:0:0.0"]:  # sentinel flushes the last block
        g = _Q_GPU.match(line.rstrip())
        if g:
            limits = _limits(kv) if bus else None
            if bus and limits:
                out[bus] = limits
            bus, kv = bus_key(g.group(1)), {}
            continue
        m = _Q_KV.match(line.rstrip())
        if m and bus:
            value = to_float(m.group(2))
            if value is not None:
                kv[m.group(1).strip()] = value
    return out


def q_section_na(text: str, section: str) -> frozenset[str]:
    """GPUs (by `bus_key`) whose -q prints `<section> : N/A` as one line instead of a block,
    as boards without the feature do (`Remapped Rows : N/A`)."""
    out: set[str] = set()
    bus: str | None = None
    for line in text.splitlines():
        g = _Q_GPU.match(line.rstrip())
        if g:
            bus = bus_key(g.group(1))
            continue
        key, colon, value = line.partition(":")
        if bus and colon and key.strip() == section and value.strip().upper() == "N/A":
            out.add(bus)
    return frozenset(out)


# -- Xid log ----------------------------------------------------------------------------------


@dataclass
class XidLog:
    source: str | None  # "journal" | "dmesg"
    uptime_s: float | None  # dmesg only: dates its `[seconds]` stamps
    events: list[XidEvent] = field(default_factory=list)
    fallen: list[tuple[str | None, str]] = field(default_factory=list)  # (time, bus) w/o code
    unreadable: bool = False  # the probe could read neither journald nor dmesg


_FALLEN = re.compile(r"NVRM: GPU ([0-9a-fA-F:.]+): GPU has fallen off the bus")
_TIME_PREFIX = re.compile(r"^(?:kern\s*:\s*\w+\s*:\s*)?(\S+)")


def parse_xid_log(text: str) -> XidLog:
    log = XidLog(source=None, uptime_s=None)
    for line in text.splitlines():
        if line.startswith("@@source "):
            log.source = line[len("@@source ") :].strip() or None  # a cut line may end here
        elif line.startswith("@@unreadable"):
            log.unreadable = True
        elif line.startswith("@@uptime"):
            log.uptime_s = to_float(line[len("@@uptime") :])
        elif ev := parse_xid_line(line):
            log.events.append(ev)
        elif m := _FALLEN.search(line):
            t = _TIME_PREFIX.match(line.strip())
            log.fallen.append((t.group(1).strip("[]") if t else None, m.group(1)))
    return log


def event_age_s(stamp: str | None, now: datetime, uptime_s: float | None) -> float | None:
    """Seconds between a log stamp and `now`: ISO stamps directly, dmesg `[seconds since boot]`
    through the uptime read with them; None when the stamp cannot be dated."""
    if not stamp:
        return None
    secs = to_float(stamp)
    if secs is not None:
        return uptime_s - secs if uptime_s is not None else None
    try:
        t = datetime.fromisoformat(stamp.replace(",", "."))
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return (now - t).total_seconds()


# -- serving ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceState:
    service: str
    manager: str  # "systemd" | "supervisor" | "none"
    state: str  # systemd's is-active word, or running | dead | absent
    pid: int | None

    @property
    def up(self) -> bool:
        return self.state in ("active", "running", "reloading")


def parse_services(text: str) -> list[ServiceState]:
    out: list[ServiceState] = []
    for line in text.splitlines():
        kv = dict(tok.partition("=")[::2] for tok in line.split() if "=" in tok)
        if kv.get("service"):
            out.append(
                ServiceState(
                    kv["service"],
                    kv.get("manager", "none"),
                    kv.get("state") or "unknown",
                    to_int(kv.get("pid") or None),
                )
            )
    return out


@dataclass(frozen=True)
class HealthReply:
    url: str
    code: int  # 0: no HTTP answer (refused, timed out)
    status: str | None  # the body's "status" field when it has one
    detail: str


_STATUS = re.compile(r'"status"\s*:\s*"([^"]{0,40})"')


def parse_health(text: str) -> list[HealthReply]:
    out: list[HealthReply] = []
    for line in text.splitlines():
        try:
            d: Any = json.loads(line)
        except ValueError:
            continue
        if not isinstance(d, dict) or not isinstance(d.get("url"), str):
            continue
        body = str(d.get("body", ""))
        code = d.get("code")
        m = _STATUS.search(body)
        out.append(
            HealthReply(
                d["url"],
                code if isinstance(code, int) and not isinstance(code, bool) else 0,
                m.group(1) if m else None,
                body[:200],
            )
        )
    return out
