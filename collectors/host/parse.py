"""Pure parsers of the text a node prints for host metrics (no I/O here; `script()` is the
read-only shell the collector runs, `parse()` turns its output into values).

The script prints sections `@@<name>` followed by a file or a command's output:
`stat` (the aggregate `cpu` line of /proc/stat; twice, 0.25 s apart, when the collector has no
earlier reading of this host to take a difference against), `meminfo`, `loadavg`, `nproc`
and `df` (`df -P -B1 /`). A section that could not be read is empty, and its values are then
absent: a node never reports a zero it did not measure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

#: what the first read takes the CPU difference over when there is no earlier reading
FIRST_READ_GAP_S = 0.25


def script(first: bool) -> str:
    """The node-side shell: POSIX sh and coreutils only, read-only, one SSH exec."""
    again = (
        f"sleep {FIRST_READ_GAP_S}; echo '@@stat'; head -n 1 /proc/stat 2>/dev/null\n"
        if first
        else ""
    )
    return (
        "echo '@@stat'; head -n 1 /proc/stat 2>/dev/null\n"
        + again
        + "echo '@@meminfo'; cat /proc/meminfo 2>/dev/null\n"
        "echo '@@loadavg'; cat /proc/loadavg 2>/dev/null\n"
        "echo '@@nproc'; getconf _NPROCESSORS_ONLN 2>/dev/null\n"
        "echo '@@df'; df -P -B1 / 2>/dev/null\n"
        "exit 0\n"
    )


class CpuTimes(NamedTuple):
    """Jiffies since boot summed over all CPUs: `busy` + `idle` (idle includes iowait)."""

    busy: int
    idle: int

    @property
    def total(self) -> int:
        return self.busy + self.idle


def parse_cpu_line(line: str) -> CpuTimes | None:
    """The aggregate `cpu  user nice system idle iowait irq softirq steal [guest guest_nice]`
    line. guest and guest_nice are already counted in user and nice, so they are left out."""
    parts = line.split()
    if len(parts) < 5 or parts[0] != "cpu":
        return None
    try:
        vals = [int(x) for x in parts[1:9]]
    except ValueError:
        return None
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return CpuTimes(busy=sum(vals) - idle, idle=idle)


def cpu_util_pct(before: CpuTimes, after: CpuTimes) -> float | None:
    """Busy share of the CPU time between two readings; None if no time passed or the
    counters went back (a reboot between the readings)."""
    total = after.total - before.total
    busy = after.busy - before.busy
    if total <= 0 or busy < 0 or after.idle < before.idle:
        return None
    return 100.0 * busy / total


class MemInfo(NamedTuple):
    total_bytes: int
    available_bytes: int

    @property
    def used_bytes(self) -> int:
        return max(self.total_bytes - self.available_bytes, 0)

    @property
    def used_pct(self) -> float:
        return 100.0 * self.used_bytes / self.total_bytes if self.total_bytes else 0.0


def parse_meminfo(text: str) -> MemInfo | None:
    """/proc/meminfo: used = MemTotal - MemAvailable (the kernel's own estimate of what can
    be had without swapping); kernels before 3.14 lack it: MemFree + Buffers + Cached."""
    kb: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if fields and fields[0].isdigit():
            kb[key.strip()] = int(fields[0])
    total = kb.get("MemTotal")
    if not total:
        return None
    avail = kb.get("MemAvailable")
    if avail is None:
        avail = kb.get("MemFree", 0) + kb.get("Buffers", 0) + kb.get("Cached", 0)
    return MemInfo(total * 1024, min(avail, total) * 1024)


class LoadAvg(NamedTuple):
    load1: float
    load5: float
    load15: float


def parse_loadavg(text: str) -> LoadAvg | None:
    """/proc/loadavg: `0.52 0.58 0.59 1/467 12345`."""
    parts = text.split()
    try:
        return LoadAvg(float(parts[0]), float(parts[1]), float(parts[2]))
    except (IndexError, ValueError):
        return None


class DiskUsage(NamedTuple):
    """One filesystem from `df -P -B1`; `used_pct` as df computes Capacity: used over
    used + available (the reserved blocks are not the user's to fill)."""

    mount: str
    size_bytes: int
    used_bytes: int
    avail_bytes: int

    @property
    def used_pct(self) -> float:
        room = self.used_bytes + self.avail_bytes
        return 100.0 * self.used_bytes / room if room else 0.0


def parse_df(text: str) -> list[DiskUsage]:
    """`df -P -B1` rows (POSIX format: one line per filesystem, a device name with spaces is
    the only thing that can shift columns, so they are read from the right)."""
    out = []
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 6:
            continue
        try:
            size, used, avail = int(parts[-5]), int(parts[-4]), int(parts[-3])
        except ValueError:
            continue
        out.append(DiskUsage(parts[-1], size, used, avail))
    return out


def sections(text: str) -> dict[str, list[str]]:
    """`@@name` -> the bodies printed under that name, in order (stat can appear twice)."""
    out: dict[str, list[str]] = {}
    name: str | None = None
    body: list[str] = []
    for line in [*text.splitlines(), "@@end"]:
        if line.startswith("@@"):
            if name is not None:
                out.setdefault(name, []).append("\n".join(body))
            name, body = line[2:].strip(), []
        else:
            body.append(line)
    return out


@dataclass(frozen=True)
class HostReading:
    """One read of a host; fields that could not be read are None."""

    cpu: CpuTimes | None  # the last stat reading (the next read's baseline)
    cpu_util_pct: float | None
    mem: MemInfo | None
    load: LoadAvg | None
    cpus: int | None
    root: DiskUsage | None

    def values(self) -> dict[str, float]:
        """Series name (under `host.`) -> value, for what was read."""
        out: dict[str, float | None] = {
            "cpu_util_pct": self.cpu_util_pct,
            "cpus": float(self.cpus) if self.cpus else None,
        }
        if self.mem is not None:
            out["mem_total_bytes"] = float(self.mem.total_bytes)
            out["mem_used_bytes"] = float(self.mem.used_bytes)
            out["mem_used_pct"] = self.mem.used_pct
        if self.load is not None:
            out.update(load1=self.load.load1, load5=self.load.load5, load15=self.load.load15)
        if self.root is not None:
            out["disk_total_bytes"] = float(self.root.size_bytes)
            out["disk_used_bytes"] = float(self.root.used_bytes)
            out["disk_used_pct"] = self.root.used_pct
        return {k: v for k, v in out.items() if v is not None}


def parse(text: str, before: CpuTimes | None = None) -> HostReading:
    """The script's output. CPU utilisation is over the interval since `before` (the last
    pass's reading), else between the two stat reads of a first pass, else absent."""
    got = sections(text)
    stats = [t for t in (parse_cpu_line(b.strip()) for b in got.get("stat", [])) if t]
    util = None
    if before is not None and stats:
        util = cpu_util_pct(before, stats[-1])
    if util is None and len(stats) >= 2:
        util = cpu_util_pct(stats[-2], stats[-1])
    nproc = "".join(got.get("nproc", [])).strip()
    roots = [d for d in parse_df("\n".join(got.get("df", []))) if d.mount == "/"]
    return HostReading(
        cpu=stats[-1] if stats else None,
        cpu_util_pct=util,
        mem=parse_meminfo("\n".join(got.get("meminfo", []))),
        load=parse_loadavg("\n".join(got.get("loadavg", []))),
        cpus=int(nproc) if nproc.isdigit() else None,
        root=roots[0] if roots else None,
    )
