"""Xid events from the kernel log (`journalctl -k -o short-iso` or `dmesg`).

NVML events are live only and could not deliver Xid 79/119/120 (NVIDIA/DCGM#162), so history
comes from the log. Severity and actions: NVIDIA's "Analyzing Xid Catalog" as summarised in
shared/research/diagnostics-anchors.md section 4; keep it as data, callers decide thresholds.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NamedTuple


class XidInfo(NamedTuple):
    meaning: str
    severity: str  # "info" | "app" (the workload's fault) | "warn" | "critical" (node/GPU action)
    action: str


XID_CATALOG: dict[int, XidInfo] = {
    13: XidInfo("Graphics engine exception", "app", "RESTART_APP / WORKFLOW_XID_13"),
    31: XidInfo("GPU memory page fault", "app", "RESTART_APP / WORKFLOW_XID_31"),
    43: XidInfo("GPU stopped processing", "app", "IGNORE / CONTACT_SUPPORT"),
    45: XidInfo(
        "Preemptive cleanup after earlier errors",
        "info",
        "solo: RESTART_FM; not solo: IGNORE (follow the other Xid)",
    ),
    46: XidInfo("GPU stopped processing (timeout)", "critical", "RESET_GPU"),
    48: XidInfo("Double-bit ECC error", "critical", "WORKFLOW_XID_48"),
    61: XidInfo("Internal micro-controller (PMU) breakpoint", "warn", "unused since Ampere"),
    62: XidInfo("Internal micro-controller halt", "critical", "RESET_GPU / CONTACT_SUPPORT"),
    63: XidInfo(
        "Row remap or page retirement event", "info", "IGNORE (takes effect at the next reset)"
    ),
    64: XidInfo("Row remap or page retirement failure", "critical", "RESET_GPU / CONTACT_SUPPORT"),
    74: XidInfo("NVLink error", "critical", "WORKFLOW_NVLINK_ERR"),
    79: XidInfo("GPU has fallen off the bus", "critical", "RESTART_BM (reboot) / CONTACT_SUPPORT"),
    92: XidInfo("High single-bit ECC error rate", "info", "IGNORE"),
    94: XidInfo("Contained memory error", "app", "RESTART_APP"),
    95: XidInfo("Uncontained memory error", "critical", "RESET_GPU"),
    109: XidInfo("Context-switch timeout", "critical", "RESET_GPU"),
    119: XidInfo("GSP RPC timeout", "critical", "RESET_GPU / INVESTIGATE_SW"),
    120: XidInfo("GSP error", "critical", "RESET_GPU / INVESTIGATE_SW"),
    121: XidInfo("C2C link error (Grace parts)", "warn", "IGNORE / CONTACT_SUPPORT"),
    136: XidInfo("Link training failure", "critical", "RESET_GPU"),
    140: XidInfo("Unrecovered ECC error", "critical", "RESET_GPU / CONTACT_SUPPORT"),
    143: XidInfo("GPU initialisation error", "critical", "RESET_GPU"),
    154: XidInfo("GPU recovery action changed", "info", "do what the message names"),
}

UNKNOWN_XID = XidInfo("not in the catalog", "warn", "look up in NVIDIA's Xid catalog")

# The research note's regex, extended with pid=/name= (absent on older drivers).
_XID = re.compile(
    r"NVRM: Xid \((?:PCI:)?(?P<pci>[0-9a-fA-F:.]+)(?: GPU-I:(?P<gi>\d+))?\): (?P<xid>\d+)\b,?\s*"
    r"(?:pid=(?P<pid>'?<unknown>'?|\d+),?\s*)?"
    r"(?:name=(?P<name><unknown>|[^,]*),\s*)?"
    r"(?P<msg>.*)$"
)
_TIME = re.compile(
    r"^(?:kern\s*:\s*\w+\s*:\s*)?"
    r"(?P<t>\d{4}-\d\d-\d\dT[\d:]+(?:[.,]\d+)?(?:[+-]\d\d:?\d\d|Z)?"  # short-iso, dmesg iso
    r"|\[\s*\d+\.\d+\]"  # dmesg raw
    r"|\[[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d [\d:]{8} \d{4}\]"  # dmesg -T
    r"|[A-Z][a-z]{2} [ \d]\d [\d:]{8})"  # journalctl short
)
_ACTION_154 = re.compile(r"to 0x[0-9a-fA-F]+ \(([^)]*)\)")
CURSOR_PREFIX = "-- cursor: "


@dataclass(frozen=True, slots=True)
class XidEvent:
    time: str | None  # as the log printed it
    pci_bus_id: str
    xid: int
    pid: int | None
    process: str | None
    message: str
    gpu_instance: int | None = None

    @property
    def info(self) -> XidInfo:
        base = XID_CATALOG.get(self.xid, UNKNOWN_XID)
        if self.xid == 154:
            m = _ACTION_154.search(self.message)
            if m:
                return base._replace(action=m.group(1))
        return base


def parse_xid_line(line: str) -> XidEvent | None:
    m = _XID.search(line)
    if not m:
        return None
    t = _TIME.match(line.strip())
    pid = m["pid"]
    name = m["name"]
    return XidEvent(
        time=t["t"].strip("[] ") if t else None,
        pci_bus_id=m["pci"],
        xid=int(m["xid"]),
        pid=int(pid) if pid and pid.isdigit() else None,
        process=name.strip() if name and name != "<unknown>" else None,
        message=m["msg"].strip(),
        gpu_instance=int(m["gi"]) if m["gi"] else None,
    )


@dataclass(frozen=True, slots=True)
class XidCursor:
    """Where the last read stopped: journald's cursor, or the hash of the last line seen."""

    journal: str | None = None
    last_line_sha: str | None = None


def _sha(line: str) -> str:
    return hashlib.sha256(line.encode()).hexdigest()[:32]


def read_xids(text: str, cursor: XidCursor | None = None) -> tuple[list[XidEvent], XidCursor]:
    """Events not seen before `cursor`, and the cursor for the next read.

    journalctl output read with `--after-cursor` holds only new lines; its trailing
    `-- cursor:` line is the next cursor. dmesg output is whole again each time, so lines up to
    the last one seen (timestamp and text, hashed) are skipped; if that line is gone (ring
    buffer wrapped, reboot) everything is new.
    """
    lines = [ln for ln in text.splitlines() if ln.strip()]
    journal = next(
        (
            ln[len(CURSOR_PREFIX) :].strip()
            for ln in reversed(lines)
            if ln.startswith(CURSOR_PREFIX)
        ),
        None,
    )
    body = [ln for ln in lines if not ln.startswith("-- ")]
    if journal is None and cursor is not None and cursor.last_line_sha is not None:
        hashes = [_sha(ln) for ln in body]
        if cursor.last_line_sha in hashes:
            cut = len(hashes) - hashes[::-1].index(cursor.last_line_sha)
            body = body[cut:]
    events = [e for e in (parse_xid_line(ln) for ln in body) if e is not None]
    if journal is not None:
        nxt = XidCursor(journal=journal)
    elif body:
        nxt = XidCursor(last_line_sha=_sha(body[-1]))
    else:
        nxt = cursor or XidCursor()
    return events, nxt


def xid_command(cursor: XidCursor | None = None, *, journal: bool = True) -> list[str]:
    """argv for the next read: journald from the cursor (else this boot), or raw `dmesg`
    whose `[seconds]` stamps stay stable between reads (dmesg -T's do not)."""
    if not journal:
        return ["dmesg"]
    argv = ["journalctl", "-k", "-o", "short-iso", "--no-pager", "--show-cursor"]
    if cursor is not None and cursor.journal:
        return [*argv, f"--after-cursor={cursor.journal}"]
    return [*argv, "-b", "0"]


_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
    )
}
_SHORT = re.compile(r"^([A-Z][a-z]{2}) +(\d{1,2}) (\d\d):(\d\d):(\d\d)$")
_CTIME = re.compile(r"^[A-Z][a-z]{2} ([A-Z][a-z]{2}) +(\d{1,2}) (\d\d):(\d\d):(\d\d) (\d{4})$")


def xid_time(
    stamp: str | None, *, now: datetime, boot_time: datetime | None = None
) -> datetime | None:
    """The UTC time of a log stamp as `parse_xid_line` kept it, or None when it cannot be
    known: `[seconds]` needs the boot time; `Nov 23 12:00:00` (journalctl short, no year) is
    read in UTC, in `now`'s year unless that would put it in the future."""
    if not stamp:
        return None
    try:
        if stamp[0].isdigit() and "T" in stamp:
            t = datetime.fromisoformat(stamp.replace(",", ".", 1))
            return (t if t.tzinfo else t.replace(tzinfo=UTC)).astimezone(UTC)
        if stamp.replace(".", "", 1).isdigit():
            return None if boot_time is None else boot_time + timedelta(seconds=float(stamp))
        m = _CTIME.match(stamp)
        if m:
            mon, day, hh, mm, ss, year = m.groups()
            return datetime(
                int(year), _MONTHS[mon], int(day), int(hh), int(mm), int(ss), tzinfo=UTC
            )
        m = _SHORT.match(stamp)
        if m:
            mon, day, hh, mm, ss = m.groups()
            t = datetime(now.year, _MONTHS[mon], int(day), int(hh), int(mm), int(ss), tzinfo=UTC)
            return t.replace(year=now.year - 1) if t > now + timedelta(days=1) else t
    except (ValueError, KeyError, OverflowError):
        return None
    return None


def dedup_key(event: XidEvent) -> str:
    """Per GPU and code: `xid:<pci bus>:<code>`, the bus id normalised (`0000:06:00` and
    `0000:06:00.0` are one GPU)."""
    bus = event.pci_bus_id.lower()
    bus = bus[:-2] if bus.endswith(".0") else bus
    return f"xid:{bus}:{event.xid}"
