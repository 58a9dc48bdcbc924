"""Pure parsers for the reboot-cause probes: probe text in, small frozen records out.

Each parser takes what a probe printed (live, or stored in an L2 bundle) and never raises:
lines it cannot read are skipped and times it cannot read become None. Log markers are matched
at the start of the message (after the journal or dmesg prefix), never as bare substrings, so
harmless lines such as ``Kernel command line: ... panic=10``, ``NMI watchdog: Enabled...`` or
``ata1: hard resetting link`` never count (reset_reason_reporter's false positives).

All times are timezone-aware UTC. Clocks that print no zone (``last -F`` run under ``TZ=UTC``,
the BMC's SEL, kdump directory names) are read as UTC; the classifier allows for skew.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from agentctl.collectors.gpu.xid import XID_CATALOG, parse_xid_line

# --------------------------------------------------------------------------- times

# Zone abbreviations journalctl may print. Ambiguous ones (CST, IST, AST) are left out on
# purpose: a wrong offset is worse than no time (the window then comes from other sources).
_TZ_ABBR_MIN: dict[str, int] = {
    "UTC": 0,
    "GMT": 0,
    "Z": 0,
    "WET": 0,
    "WEST": 60,
    "BST": 60,
    "CET": 60,
    "CEST": 120,
    "EET": 120,
    "EEST": 180,
    "MSK": 180,
    "EST": -300,
    "EDT": -240,
    "CDT": -300,
    "MST": -420,
    "MDT": -360,
    "PST": -480,
    "PDT": -420,
    "AKST": -540,
    "AKDT": -480,
    "HST": -600,
    "JST": 540,
    "KST": 540,
    "HKT": 480,
    "SGT": 480,
    "AWST": 480,
    "ACST": 570,
    "AEST": 600,
    "AEDT": 660,
    "NZST": 720,
    "NZDT": 780,
}
_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
    )
}
_EPOCH_MAX = 253402300799  # 9999-12-31T23:59:59Z

_ISO = re.compile(
    r"(?P<y>\d{4})-(?P<mo>\d\d)-(?P<d>\d\d)[T ](?P<h>\d\d):(?P<mi>\d\d):(?P<s>\d\d)"
    r"(?:[.,](?P<f>\d{1,9}))?\s?(?P<tz>Z|[+-]\d\d(?::?\d\d)?|[A-Z]{2,5}\b)?"
)
_CTIME = r"[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]?\d \d\d:\d\d:\d\d \d{4}"
_CTIME_RE = re.compile(
    r"(?P<mon>[A-Z][a-z]{2}) +(?P<d>\d{1,2}) (?P<h>\d\d):(?P<mi>\d\d):(?P<s>\d\d) (?P<y>\d{4})"
)


def offset_minutes(tz: str | None) -> int | None:
    """Minutes east of UTC for ``Z``, ``+02:00``, ``+0200``, ``-05`` or a known abbreviation."""
    if not tz or tz == "Z":
        return 0
    if tz[0] in "+-":
        digits = tz[1:].replace(":", "")
        if len(digits) not in (2, 4) or not digits.isdecimal():
            return None
        hours, minutes = int(digits[:2]), int(digits[2:] or "0")
        if hours > 23 or minutes > 59:
            return None
        return (hours * 60 + minutes) * (1 if tz[0] == "+" else -1)
    return _TZ_ABBR_MIN.get(tz)


def make_time(
    y: int, mo: int, d: int, h: int, mi: int, s: int, us: int = 0, tz_min: int = 0
) -> datetime | None:
    """An aware UTC datetime from local fields and the zone's offset; None if impossible."""
    try:
        return datetime(y, mo, d, h, mi, s, us, tzinfo=UTC) - timedelta(minutes=tz_min)
    except (ValueError, OverflowError):
        return None


def from_epoch(seconds: float) -> datetime | None:
    """Seconds since the epoch as UTC; None outside years 1970..9999."""
    if not 0 <= seconds <= _EPOCH_MAX:
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def parse_iso(text: str) -> datetime | None:
    """ISO-8601-ish (`2026-08-15T19:24:02+02:00`, `... 10:01:00 +0000`); no zone reads as UTC."""
    m = _ISO.match(text.strip())
    if not m:
        return None
    tz = offset_minutes(m["tz"])
    if tz is None:
        return None
    frac = (m["f"] or "0")[:6].ljust(6, "0")
    return make_time(
        int(m["y"]),
        int(m["mo"]),
        int(m["d"]),
        int(m["h"]),
        int(m["mi"]),
        int(m["s"]),
        int(frac),
        tz,
    )


def parse_ctime(text: str) -> datetime | None:
    """`Sun Sep  6 15:12:28 2026` (``last -F``, wtmpdb), read as UTC (the probe sets TZ=UTC)."""
    m = _CTIME_RE.search(text)
    if not m or m["mon"] not in _MONTHS:
        return None
    return make_time(
        int(m["y"]), _MONTHS[m["mon"]], int(m["d"]), int(m["h"]), int(m["mi"]), int(m["s"])
    )


# --------------------------------------------------------------------------- log lines


@dataclass(frozen=True, slots=True)
class LogLine:
    """One log line split into its prefix and its message (markers match the message)."""

    lineno: int  # 1-based line number in the probe's output
    raw: str
    message: str
    time: datetime | None = None
    mono: float | None = None  # dmesg seconds since boot
    ident: str | None = None  # syslog identifier (journal lines only)
    pid: int | None = None


_J_ISO = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:[.,]\d{1,9})?(?:Z|[+-]\d\d(?::?\d\d)?)?)"
    r"\s+(?P<host>\S+)\s+(?P<rest>.*)$"
)
_J_SHORT = re.compile(
    r"^[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d(?:\.\d+)?\s+(?P<host>\S+)\s+(?P<rest>.*)$"
)
_IDENT = re.compile(r"^(?P<ident>[^\s\[\]:]{1,64})(?:\[(?P<pid>\d{1,10})\])?: ?(?P<msg>.*)$")
_DMESG = re.compile(
    r"^(?:<\d{1,3}>)?\[\s*(?P<mono>\d{1,10}\.\d{1,9})\](?:\s*\[\s*[TC]\d{1,10}\])?\s?(?P<msg>.*)$"
)
_DMESG_X = re.compile(r"^\w+\s*:\s*\w+\s*:\s*(?P<ts>\d{4}-\d\d-\d\dT\S+)\s(?P<msg>.*)$")
_KMSG_LEVEL = re.compile(r"^<\d{1,3}>")
_META = re.compile(r"^-- .* --$|^-- No entries --$")


def _journal_rest(lineno: int, raw: str, rest: str, when: datetime | None) -> LogLine:
    m = _IDENT.match(rest)
    if not m:
        return LogLine(lineno, raw, rest, time=when)
    pid = m["pid"]
    return LogLine(
        lineno, raw, m["msg"], time=when, ident=m["ident"], pid=int(pid) if pid else None
    )


def parse_log_line(line: str, lineno: int = 0) -> LogLine | None:
    """A journal (short-iso, short), dmesg (raw, ``-x``) or bare kernel line; None for blanks
    and journalctl's own ``-- ... --`` lines."""
    raw = line.rstrip("\r\n")
    text = raw.strip()
    if not text or _META.match(text):
        return None
    m = _J_ISO.match(text)
    if m:
        return _journal_rest(lineno, raw, m["rest"], parse_iso(m["ts"]))
    m = _J_SHORT.match(text)
    if m:  # journalctl -o short has no year: keep the message, drop the time
        return _journal_rest(lineno, raw, m["rest"], None)
    m = _DMESG.match(text)
    if m:
        return LogLine(lineno, raw, m["msg"].strip(), mono=float(m["mono"]))
    m = _DMESG_X.match(text)
    if m:
        return LogLine(lineno, raw, m["msg"].strip(), time=parse_iso(m["ts"]))
    return LogLine(lineno, raw, _KMSG_LEVEL.sub("", text))


def parse_log(text: str) -> tuple[LogLine, ...]:
    """Every readable line of a journal or dmesg capture, in order."""
    lines = (parse_log_line(ln, i) for i, ln in enumerate(text.splitlines(), start=1))
    return tuple(ln for ln in lines if ln is not None)


_UNAVAILABLE = (
    (
        r"no persistent journal was found",
        "not_supported",
        "volatile journal: no persistent journal was found",
    ),
    (r"No such boot ID in journal", "not_supported", "the previous boot is not in the journal"),
    (r"Data from the specified boot .* is not available", "not_supported", "boot not available"),
    (r"Failed to look up boot", "not_supported", "the previous boot is not in the journal"),
    (
        r"not seeing messages from other users and the system",
        "permission_denied",
        "no permission to read the system journal",
    ),
)


def journal_unavailable(text: str) -> tuple[str, str] | None:
    """(probe status, reason) when a ``journalctl -b -1`` capture holds no previous boot: a
    volatile journal prints a notice and exits 1, and must never be read as this boot."""
    for pattern, status, why in _UNAVAILABLE:
        if re.search(pattern, text):
            return status, why
    return None


# --------------------------------------------------------------------------- markers


@dataclass(frozen=True, slots=True)
class Marker:
    """A recognised log line. `kind` is one of MARKER_KINDS; `detail` refines it."""

    kind: str
    line: LogLine
    detail: str = ""


MARKER_KINDS = (
    "logind_shutdown",  # detail: reboot | poweroff | "" (logind's SHUTDOWN message)
    "logind_action",  # "Powering Off..." / "Rebooting..." (a key or lid action); detail as above
    "target",  # Reached a shutdown-path target; detail: reboot | poweroff | ""
    "shutdown_step",  # Shutting down. / systemd-shutdown steps / SIGTERM from systemd-shutdown
    "journal_stopped",
    "kernel_final",  # reboot: Restarting system / Power down (console, pstore); detail as above
    "power_key",
    "initiator",  # detail: user:<name> | ups | update_tool
    "unclean_journal",  # next boot: journald found its file uncleanly shut down
    "fs_recovery",  # next boot: ext4/xfs/btrfs journal replay
    "panic",  # detail: the reason after "not syncing:"
    "lockup",  # detail: soft | hard | rcu
    "hung_task",
    "thermal_critical",
    "mce_logged",
    "mce_exception",
    "ghes_fatal",
    "aer_fatal",
    "xid",  # detail: the Xid code (79 also for "fallen off the bus" without a code)
    "oom",
    "oops",
)

_LOGIND = frozenset({"systemd-logind", "elogind", "elogind-daemon"})
_SYSTEMD = frozenset({"systemd"})
_SHUTDOWN = frozenset({"systemd-shutdown"})
_JOURNALD = frozenset({"systemd-journald"})
_KERNEL = frozenset({"kernel"})
_UPS = frozenset({"upsmon", "upssched", "upsd", "apcupsd", "nut-monitor", "pwrstatd"})
_UPDATERS = frozenset(
    {
        "unattended-upgrade",
        "unattended-upgrades",
        "unattended-upgrades-shutdown",
        "packagekitd",
        "dnf-automatic",
        "yum-cron",
        "needrestart",
        "fwupd",
        "fwupdmgr",
        "fwupdoffline",
        "fwupd-offline-update",
    }
)

_TARGET_UNIT = {
    "reboot.target": "reboot",
    "kexec.target": "reboot",
    "poweroff.target": "poweroff",
    "halt.target": "poweroff",
    "shutdown.target": "",
    "final.target": "",
    "umount.target": "",
}
_TARGET_DESC = {
    "System Reboot": "reboot",
    "Reboot": "reboot",
    "Reboot via kexec": "reboot",
    "System Power Off": "poweroff",
    "Power-Off": "poweroff",
    "System Halt": "poweroff",
    "Halt": "poweroff",
    "System Shutdown": "",
    "Shutdown": "",
    "Final Step": "",
    "Late Shutdown Services": "",
    "Unmount All Filesystems": "",
}
_LOGIND_WHAT = {
    "rebooting with kexec": "reboot",
    "rebooting": "reboot",
    "powering down": "poweroff",
    "halting": "poweroff",
    "shutting down": "",
}

_RE_LOGIND = re.compile(
    r"^System is (?P<w>rebooting with kexec|rebooting|powering down|halting|shutting down)\b"
)
_RE_LOGIND_ACTION = re.compile(r"^(?P<w>Powering Off|Rebooting|Halting)\.\.\.$")
_RE_POWER_KEY = re.compile(r"^Power key pressed\b")
_RE_TARGET = re.compile(r"^Reached target (?P<what>.+?)\.?$")
_RE_SYSTEMD_STEP = re.compile(r"^Shutting down\.$")
_RE_SHUTDOWN_STEP = re.compile(
    r"^(?:Syncing filesystems and block devices\.|Sending SIGTERM to remaining processes\.\.\.)$"
)
_RE_SIGTERM = re.compile(r"^Received SIGTERM from PID 1 \((?P<comm>systemd-shutdow\w*)\)\.?$")
_RE_JOURNAL_STOPPED = re.compile(r"^Journal stopped$")
_RE_KERNEL_FINAL = re.compile(r"^reboot: (?P<w>Restarting system|Power down|System halted)\b")
_RE_SUDO = re.compile(
    r"^\s*(?P<user>[^\s:]+) : .*\bCOMMAND=(?:\S*/)?"
    r"(?:reboot|shutdown|poweroff|halt|systemctl (?:reboot|poweroff|halt|kexec)|init [06])\b"
)
_RE_UPS = re.compile(r"(?i)\b(?:shutdown|power ?fail\w*|on battery|low battery)\b")
_RE_UPDATER = re.compile(r"(?i)\breboot")
_RE_SYSTEM_UPDATE = re.compile(r"^Reached target (?:system-update\.target - )?System Update\.?$")
_RE_UNCLEAN_JOURNAL = re.compile(
    r"^File (?P<path>\S+) corrupted or uncleanly shut down, renaming and replacing\.$"
)
_RE_FS_RECOVERY = re.compile(
    r"^(?:EXT4-fs \([^)]*\): recovery complete"
    r"|XFS \([^)]*\): Starting recovery"
    r"|BTRFS info \(device [^)]*\): (?:start tree-log replay|replaying log))"
)
_RE_PANIC = re.compile(r"^Kernel panic - not syncing:? ?(?P<why>.*?)\s*$")
_RE_LOCKUP = (
    (re.compile(r"^(?:(?:NMI )?watchdog: )?BUG: soft lockup - CPU#\d+ stuck for \d+s!"), "soft"),
    (re.compile(r"^(?:(?:NMI )?watchdog: )?Watchdog detected hard LOCKUP on cpu \d+"), "hard"),
    (re.compile(r"^(?:rcu: )?INFO: rcu_\w+ (?:self-)?detected stalls? on CPUs?"), "rcu"),
)
_RE_HUNG = re.compile(r"^INFO: task (?P<comm>.+):(?P<pid>\d+) blocked for more than \d+ seconds\.")
_RE_THERMAL = re.compile(
    r"^(?:(?:thermal thermal_zone\d+: (?:[\w .-]+: )?)?[Cc]ritical temperature reached\b"
    r"|reboot: HARDWARE PROTECTION (?:shutdown|reboot|poweroff) \(Temperature too high\))"
)
_RE_MCE_LOGGED = re.compile(r"^mce: \[Hardware Error\]: Machine check events logged")
_RE_MCE_EXC = re.compile(r"^mce: \[Hardware Error\]: CPU \d+: Machine Check(?: Exception)?:")
_RE_GHES_FATAL = re.compile(r"^(?:\{\d+\})?\[Hardware Error\]: event severity: fatal\b")
_RE_AER_FATAL = re.compile(
    r"^(?:\S+ [0-9a-fA-F:.]+: )?AER: (?:Multiple )?Uncorrected \(Fatal\) error "
    r"(?:message )?received"
)
_RE_FALLEN = re.compile(r"^NVRM: GPU [0-9a-fA-F:.]+: GPU has fallen off the bus\.")
_RE_OOM = re.compile(r"^Out of memory: Killed process (?P<pid>\d+) \((?P<comm>[^)]*)\)")
_RE_OOPS = re.compile(
    r"^(?:BUG: unable to handle (?:kernel )?(?:NULL pointer dereference|paging request|page fault)"
    r"|Oops: |Internal error: Oops|general protection fault)"
)


def _from(line: LogLine, idents: frozenset[str]) -> bool:
    """Bare lines (no journal prefix) carry no identifier and are taken as they are."""
    return line.ident is None or line.ident in idents


def _target_direction(what: str) -> str | None:
    unit, _, desc = what.partition(" - ")
    if not desc:
        unit, desc = (what, "") if what.endswith(".target") else ("", what)
    if unit in _TARGET_UNIT:
        return _TARGET_UNIT[unit]
    return _TARGET_DESC.get(desc)


def _orderly_marker(line: LogLine) -> Marker | None:
    msg = line.message
    if _from(line, _LOGIND):
        if m := _RE_LOGIND.match(msg):
            return Marker("logind_shutdown", line, _LOGIND_WHAT[m["w"]])
        if m := _RE_LOGIND_ACTION.match(msg):
            return Marker("logind_action", line, "reboot" if m["w"] == "Rebooting" else "poweroff")
        if _RE_POWER_KEY.match(msg):
            return Marker("power_key", line)
    if _from(line, _SYSTEMD):
        if _RE_SYSTEM_UPDATE.match(msg):
            return Marker("initiator", line, "update_tool")
        if (m := _RE_TARGET.match(msg)) and (d := _target_direction(m["what"])) is not None:
            return Marker("target", line, d)
        if _RE_SYSTEMD_STEP.match(msg):
            return Marker("shutdown_step", line)
    if _from(line, _SHUTDOWN) and _RE_SHUTDOWN_STEP.match(msg):
        return Marker("shutdown_step", line)
    if _from(line, _JOURNALD):
        if _RE_SIGTERM.match(msg):
            return Marker("shutdown_step", line)
        if _RE_JOURNAL_STOPPED.match(msg):
            return Marker("journal_stopped", line)
    if _from(line, _KERNEL) and (m := _RE_KERNEL_FINAL.match(msg)):
        return Marker(
            "kernel_final", line, "reboot" if m["w"] == "Restarting system" else "poweroff"
        )
    return None


def _initiator_marker(line: LogLine) -> Marker | None:
    ident, msg = line.ident, line.message
    if ident == "sudo" and (m := _RE_SUDO.match(msg)):
        return Marker("initiator", line, f"user:{m['user']}")
    if ident in _UPS and _RE_UPS.search(msg):
        return Marker("initiator", line, "ups")
    if ident in _UPDATERS and _RE_UPDATER.search(msg):
        return Marker("initiator", line, "update_tool")
    return None


def _unclean_marker(line: LogLine) -> Marker | None:
    if _from(line, _JOURNALD) and _RE_UNCLEAN_JOURNAL.match(line.message):
        return Marker("unclean_journal", line)
    if _from(line, _KERNEL) and _RE_FS_RECOVERY.match(line.message):
        return Marker("fs_recovery", line)
    return None


def _xid_marker(line: LogLine) -> Marker | None:
    msg = line.message
    if _RE_FALLEN.match(msg):
        return Marker("xid", line, "79")
    if not msg.startswith("NVRM: Xid ("):
        return None
    event = parse_xid_line(msg)
    return Marker("xid", line, str(event.xid)) if event is not None else None


def _kernel_marker(line: LogLine) -> Marker | None:
    if not _from(line, _KERNEL):
        return None
    msg = line.message
    if m := _RE_PANIC.match(msg):
        return Marker("panic", line, m["why"])
    for pattern, what in _RE_LOCKUP:
        if pattern.match(msg):
            return Marker("lockup", line, what)
    simple = (
        (_RE_HUNG, "hung_task"),
        (_RE_THERMAL, "thermal_critical"),
        (_RE_MCE_LOGGED, "mce_logged"),
        (_RE_MCE_EXC, "mce_exception"),
        (_RE_GHES_FATAL, "ghes_fatal"),
        (_RE_AER_FATAL, "aer_fatal"),
        (_RE_OOM, "oom"),
        (_RE_OOPS, "oops"),
    )
    for pattern, kind in simple:
        if pattern.match(msg):
            return Marker(kind, line)
    return _xid_marker(line)


def match_marker(line: LogLine) -> Marker | None:
    """The marker a line carries, if any (anchored patterns, identifier-checked)."""
    return (
        _orderly_marker(line)
        or _initiator_marker(line)
        or _unclean_marker(line)
        or _kernel_marker(line)
    )


def scan_markers(lines: Iterable[LogLine]) -> tuple[Marker, ...]:
    return tuple(m for m in (match_marker(ln) for ln in lines) if m is not None)


def xid_is_node_fatal(marker: Marker) -> bool:
    """Xid 79 and 119, and 154 asking for a node reboot: the note's GPU contributing causes."""
    if marker.kind != "xid":
        return False
    if marker.detail in ("79", "119"):
        return True
    return marker.detail == "154" and "Node Reboot Required" in marker.line.message


def xid_is_critical(marker: Marker) -> bool:
    """Any Xid the catalog rates critical (context only; not a stop cause by itself)."""
    if marker.kind != "xid" or not marker.detail.isdecimal() or len(marker.detail) > 6:
        return False
    info = XID_CATALOG.get(int(marker.detail))
    return info is not None and info.severity == "critical"


# --------------------------------------------------------------------------- journal JSON


@dataclass(frozen=True, slots=True)
class Boot:
    """One row of ``journalctl --list-boots``."""

    index: int
    boot_id: str
    first: datetime | None
    last: datetime | None


_OBJ = re.compile(r"\{[^{}]*\}")
_TABLE_TIME = (
    r"[A-Z][a-z]{2} \d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?: (?:[A-Za-z]{1,6}|[+-]\d\d(?::?\d\d)?))?"
)
_BOOT_ROW = re.compile(
    rf"^\s*(?P<idx>[+-]?\d{{1,6}})\s+(?P<id>[0-9a-f]{{32}})\s+(?P<first>{_TABLE_TIME})"
    rf"\s*(?:—|-|\s)\s*(?P<last>{_TABLE_TIME})\s*$"
)


def _json_objects(text: str) -> list[dict[str, Any]]:
    """The flat JSON objects in `text`: a whole document if it parses, else each `{...}`
    found (a capture cut at its head, or journalctl's one-object-per-line output)."""
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError):
        doc = None
    if isinstance(doc, list):
        return [d for d in doc if isinstance(d, dict)]
    if isinstance(doc, dict):
        return [doc]
    found: list[dict[str, Any]] = []
    for m in _OBJ.finditer(text):
        try:
            obj = json.loads(m.group(0))
        except (ValueError, RecursionError):
            continue
        if isinstance(obj, dict):
            found.append(obj)
    return found


_INT = re.compile(r"[+-]?[0-9]{1,20}")


def _int(value: object) -> int | None:
    """An integer field of journald JSON (numbers arrive as strings); None for anything else,
    `--5` and `٣` included (`lstrip("-")` and `isdecimal` let both through to `int()`)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if abs(value) < 10**20 else None
    if isinstance(value, str) and _INT.fullmatch(value):
        return int(value)
    return None


def _usec(value: object) -> datetime | None:
    n = _int(value)
    return from_epoch(n / 1_000_000) if n is not None else None


def _table_time(text: str) -> datetime | None:
    """`Sun 2026-08-23 11:26:39 EDT` (the weekday is dropped; the zone must be known)."""
    return parse_iso(text[4:]) if len(text) > 4 else None


def parse_boots(text: str) -> tuple[Boot, ...]:
    """``journalctl --list-boots``: JSON (``-o json`` where supported), or the table that
    versions without it print even when asked for JSON (with an ``IDX BOOT ID ...`` header
    on systemd ≥ 254, or none and an em dash between the two times before)."""
    boots: list[Boot] = []
    for obj in _json_objects(text) if "{" in text else []:
        idx, boot_id = _int(obj.get("index")), obj.get("boot_id")
        if idx is not None and isinstance(boot_id, str):
            boots.append(
                Boot(
                    idx,
                    boot_id.replace("-", ""),
                    _usec(obj.get("first_entry")),
                    _usec(obj.get("last_entry")),
                )
            )
    if boots:
        return tuple(boots)
    for line in text.splitlines():
        m = _BOOT_ROW.match(line)
        if m:
            boots.append(
                Boot(int(m["idx"]), m["id"], _table_time(m["first"]), _table_time(m["last"]))
            )
    return tuple(boots)


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One ``journalctl -o json`` entry (only the fields the analysis reads)."""

    lineno: int
    time: datetime | None
    boot_id: str | None
    message: str
    message_id: str | None
    shutdown: str | None  # logind's SHUTDOWN= field
    ident: str | None
    pid: int | None

    def as_line(self) -> LogLine:
        raw = f"{self.ident or '?'}: {self.message}"
        return LogLine(self.lineno, raw, self.message, self.time, None, self.ident, self.pid)


def _field_text(value: object) -> str | None:
    """journald prints binary fields as arrays of byte values."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(b, int) and 0 <= b < 256 for b in value):
        return bytes(value).decode("utf-8", "replace")
    return None


def parse_journal_json(text: str) -> tuple[JournalEntry, ...]:
    entries: list[JournalEntry] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        objs = _json_objects(line) if line.lstrip().startswith("{") else []
        for obj in objs:
            message = _field_text(obj.get("MESSAGE"))
            if message is None:
                continue
            pid = _int(obj.get("_PID"))
            entries.append(
                JournalEntry(
                    lineno=lineno,
                    time=_usec(obj.get("__REALTIME_TIMESTAMP")),
                    boot_id=_field_text(obj.get("_BOOT_ID")),
                    message=message,
                    message_id=_field_text(obj.get("MESSAGE_ID")),
                    shutdown=_field_text(obj.get("SHUTDOWN")),
                    ident=_field_text(obj.get("SYSLOG_IDENTIFIER")),
                    pid=pid,
                )
            )
    return tuple(entries)


SHUTDOWN_MESSAGE_ID = "98268866d1d54a499c4e98921d93bc40"  # logind: "System is rebooting."


# --------------------------------------------------------------------------- wtmp


@dataclass(frozen=True, slots=True)
class WtmpRecord:
    """One ``last -Fx`` row (newest first in the output)."""

    lineno: int
    user: str  # "reboot", "shutdown" or a login name
    tty: str  # "system boot", "system down", "pts/0", ...
    detail: str  # kernel release for reboot/shutdown rows, the remote host for logins
    start: datetime | None
    end: datetime | None
    end_state: str  # "still running" | "still logged in" | "crash" | "down" | "gone" | "time" | ""
    raw: str


_LAST = re.compile(
    rf"^(?!\S+ begins )(?P<user>\S+)\s+(?P<tty>system boot|system down|\S+)\s+"
    rf"(?:(?P<detail>\S+)\s+)?(?P<start>{_CTIME})"
    rf"(?:\s+-\s+(?P<end>still running|still logged in|crash|down|gone - no logout|{_CTIME}))?"
)


def parse_last(text: str) -> tuple[WtmpRecord, ...]:
    """``last -Fx reboot shutdown`` (util-linux or wtmpdb); the trailer line is skipped."""
    records: list[WtmpRecord] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        m = _LAST.match(line)
        if not m:
            continue
        end = m["end"] or ""
        end_time = parse_ctime(end) if end[:1].isupper() else None
        state = "time" if end_time else end.split(" - ")[0]
        records.append(
            WtmpRecord(
                lineno=lineno,
                user=m["user"],
                tty=m["tty"],
                detail=m["detail"] or "",
                start=parse_ctime(m["start"]),
                end=end_time,
                end_state=state,
                raw=line.strip(),
            )
        )
    return tuple(records)


# --------------------------------------------------------------------------- IPMI SEL


@dataclass(frozen=True, slots=True)
class SelEntry:
    """One ``ipmitool sel elist`` row. `time` is the BMC clock read as UTC; rows without a
    date (``Pre-Init``, OEM records such as ``Linux kernel panic:``) have None."""

    position: int  # 0-based row order (the SEL is append-only, so order is time order)
    record_id: str
    time: datetime | None
    pre_init: bool
    sensor: str
    event: str
    direction: str
    kind: str | None  # one of SEL_KINDS, or None for rows the analysis ignores
    raw: str


SEL_KINDS = (
    "kernel_panic_oem",
    "os_critical_stop",
    "os_graceful_shutdown",
    "ac_lost",
    "psu_ac_lost",
    "watchdog_action",
    "watchdog_expired",
    "thermal_trip",
    "temp_nonrecoverable",
    "temp_critical",
    "hard_reset_boot",
    "cpu_ierr",
    "mem_uncorrectable",
    "bus_fatal",
)

_SEL_DATE = re.compile(r"^(?P<mo>\d\d)/(?P<d>\d\d)/(?P<y>\d{4})$")
_SEL_TIME = re.compile(
    r"^(?P<h>\d{1,2}):(?P<mi>\d\d):(?P<s>\d\d)(?:\s*(?P<ampm>[AP]M))?(?:\s+(?P<tz>[A-Za-z]{1,5}|[+-]\d\d:?\d\d))?$"
)
_SEL_ID = re.compile(r"^[0-9a-fA-F]{1,8}$")
_SEL_RULES: tuple[tuple[str, re.Pattern[str], re.Pattern[str]], ...] = tuple(
    (kind, re.compile(sensor), re.compile(event))
    for kind, sensor, event in (
        ("kernel_panic_oem", r"", r"^Linux kernel panic:"),
        ("os_critical_stop", r"", r"^Run-time critical stop"),
        ("os_graceful_shutdown", r"^OS", r"^OS graceful (?:shutdown|stop)"),
        ("ac_lost", r"^Power Unit", r"^AC lost"),
        ("psu_ac_lost", r"^Power Supply", r"^(?:Power Supply )?AC lost"),
        ("watchdog_action", r"^Watchdog", r"^(?:Hard reset|Power down|Power cycle)"),
        ("watchdog_expired", r"^Watchdog", r"^Timer (?:expired|interrupt)"),
        ("thermal_trip", r"", r"^Thermal Trip"),
        ("temp_nonrecoverable", r"^Temperature", r"^Upper Non-recoverable going high"),
        ("temp_critical", r"^Temperature", r"^Upper Critical going high"),
        ("hard_reset_boot", r"^System (?:Boot|Restart)", r"^Initiated by hard reset"),
        ("cpu_ierr", r"^Processor", r"^(?:IERR|(?:Uncorrectable )?[Mm]achine [Cc]heck)"),
        ("mem_uncorrectable", r"^Memory", r"^Uncorrectable ECC"),
        ("bus_fatal", r"^Critical Interrupt", r"^(?:Bus Fatal Error|PCI SERR|Bus Uncorrectable)"),
    )
)


def _sel_time(date: str, clock: str) -> datetime | None:
    d, t = _SEL_DATE.match(date), _SEL_TIME.match(clock)
    if not d or not t:
        return None
    hour = int(t["h"])
    if t["ampm"]:
        hour = hour % 12 + (12 if t["ampm"] == "PM" else 0)
    tz = offset_minutes(t["tz"]) if t["tz"] else 0
    if tz is None:
        tz = 0
    return make_time(int(d["y"]), int(d["mo"]), int(d["d"]), hour, int(t["mi"]), int(t["s"]), 0, tz)


def _sel_kind(sensor: str, event: str, direction: str) -> str | None:
    if direction.startswith("Deasserted"):
        return None
    for kind, sensor_re, event_re in _SEL_RULES:
        if sensor_re.match(sensor) and event_re.match(event):
            return kind
    return None


def _sel_row(position: int, line: str) -> SelEntry | None:
    parts = [p.strip() for p in line.split("|")]
    if len(parts) < 2 or not _SEL_ID.match(parts[0]):
        return None
    pre_init = parts[1] == "Pre-Init"
    if len(parts) == 2:  # an OEM text record: `   6 | Linux kernel panic: Fatal excep`
        sensor, event, direction, when = "", parts[1], "", None
    elif len(parts) >= 5:
        when = None if pre_init else _sel_time(parts[1], parts[2])
        sensor, event = parts[3], parts[4]
        direction = parts[5] if len(parts) > 5 else ""
    else:
        return None
    return SelEntry(
        position=position,
        record_id=parts[0],
        time=when,
        pre_init=pre_init,
        sensor=sensor,
        event=event,
        direction=direction,
        kind=_sel_kind(sensor, event, direction),
        raw=line.strip(),
    )


def parse_sel(text: str) -> tuple[SelEntry, ...]:
    rows: list[SelEntry] = []
    for line in text.splitlines():
        row = _sel_row(len(rows), line)
        if row is not None:
            rows.append(row)
    return tuple(rows)


_SEL_NOW = re.compile(r"(?P<date>\d\d/\d\d/\d{4})\s+(?P<time>\d{1,2}:\d\d:\d\d(?:\s*[AP]M)?)")


def parse_sel_time(text: str) -> datetime | None:
    """``ipmitool sel time get``: the BMC's clock now, to correct the SEL for skew."""
    m = _SEL_NOW.search(text)
    return _sel_time(m["date"], m["time"].strip()) if m else None


# --------------------------------------------------------------------------- files


_GLOB_HEADER = re.compile(r"^==> (?P<path>.+) <==$")


def split_glob(text: str) -> tuple[tuple[str, str], ...]:
    """A glob probe's output as (path, content) pairs (see `agentctl.ctl.diag.probe`)."""
    files: list[tuple[str, str]] = []
    path: str | None = None
    body: list[str] = []
    for line in text.splitlines():
        m = _GLOB_HEADER.match(line)
        if m:
            if path is not None:
                files.append((path, "\n".join(body).rstrip("\n")))
            path, body = m["path"], []
        elif path is not None:
            body.append(line)
    if path is not None:
        files.append((path, "\n".join(body).rstrip("\n")))
    return tuple(files)


@dataclass(frozen=True, slots=True)
class ListingEntry:
    """One line of a listing probe: ``<mtime ISO-8601 UTC> <size> <d|f|l> <path>``."""

    mtime: datetime | None
    size: int
    type: str
    path: str


_LISTING = re.compile(r"^(?P<mtime>\S+)\s+(?P<size>\d{1,20})\s+(?P<type>[dfl])\s+(?P<path>/.*)$")


def parse_listing(text: str) -> tuple[ListingEntry, ...]:
    entries: list[ListingEntry] = []
    for line in text.splitlines():
        m = _LISTING.match(line.strip())
        if m:
            entries.append(
                ListingEntry(parse_iso(m["mtime"]), int(m["size"]), m["type"], m["path"])
            )
    return tuple(entries)


def _basename(path: str) -> str:
    return path.rstrip("/").rpartition("/")[2]


def _parent(path: str) -> str:
    return path.rstrip("/").rpartition("/")[0]


# --------------------------------------------------------------------------- pstore


@dataclass(frozen=True, slots=True)
class PstoreRecord:
    """One pstore file, in ``/sys/fs/pstore`` or archived by systemd-pstore."""

    path: str
    kind: str  # dmesg | console | pmsg | ftrace | ... ("dmesg" for systemd-pstore's dmesg.txt)
    backend: str  # efi | ramoops | erst | ... ("" when the name does not say)
    record_id: int | None
    reason: str | None  # the kmsg_dump header: Panic | Oops | Emergency | Shutdown | ...
    id_time: datetime | None  # when the record was written, decoded from an EFI record id
    archived: bool  # under /var/lib/systemd/pstore (its mtime is when it was archived)
    lines: tuple[LogLine, ...]

    @property
    def name(self) -> str:
        return _basename(self.path)

    @property
    def key(self) -> str:
        """Identity across /sys/fs/pstore and the archive (systemd-pstore moves the file)."""
        return self.name if self.backend else self.path


_PSTORE_NAME = re.compile(
    r"^(?P<kind>[a-z][a-z0-9_]*)-(?P<backend>[A-Za-z][\w]*)-(?P<id>\d{1,20})(?:\.enc\.z)?$"
)
_PSTORE_HEADER = re.compile(
    r"^(?P<reason>Panic|Oops|Emergency|Shutdown|Restart|Halt|Poweroff|Unknown)#\d+ Part\d+$"
)
_EFI_MIN, _EFI_MAX = 946684800, 4102444800  # 2000..2100: outside, the id is not a time


def efi_record_time(record_id: int) -> datetime | None:
    """efi-pstore ids are ``(seconds * 100 + part) * 1000 + count`` (drivers/firmware/efi)."""
    seconds = record_id // 100_000
    return from_epoch(seconds) if _EFI_MIN <= seconds <= _EFI_MAX else None


def _pstore_identity(path: str) -> tuple[str, str, int | None]:
    m = _PSTORE_NAME.match(_basename(path))
    if m:
        return m["kind"], m["backend"], int(m["id"])
    name, parent = _basename(path), _basename(_parent(path))
    kind = "dmesg" if name.startswith("dmesg") else name.partition(".")[0] or "unknown"
    rid = int(parent) if parent.isdecimal() and len(parent) <= 20 else None
    return kind, "", rid


def _pstore_reason(lines: tuple[LogLine, ...]) -> str | None:
    for line in lines:
        m = _PSTORE_HEADER.match(line.message.strip())
        if m:
            return m["reason"]
    return None


def parse_pstore(text: str) -> tuple[PstoreRecord, ...]:
    """A glob over ``/sys/fs/pstore/*`` or ``/var/lib/systemd/pstore/*/*``."""
    records: list[PstoreRecord] = []
    for path, content in split_glob(text):
        kind, backend, rid = _pstore_identity(path)
        lines = parse_log(content)
        efi_like = backend.startswith("efi") or (not backend and rid is not None)
        records.append(
            PstoreRecord(
                path=path,
                kind=kind,
                backend=backend,
                record_id=rid,
                reason=_pstore_reason(lines),
                id_time=efi_record_time(rid) if rid is not None and efi_like else None,
                archived=path.startswith("/var/lib/systemd/pstore/"),
                lines=lines,
            )
        )
    return tuple(records)


# --------------------------------------------------------------------------- kdump


@dataclass(frozen=True, slots=True)
class CrashLog:
    """A kdump dmesg file (``/var/crash/<dir>/dmesg.*`` or ``vmcore-dmesg.txt``)."""

    path: str
    directory: str
    dir_time: datetime | None  # from the directory name (node clock, read as UTC)
    lines: tuple[LogLine, ...]


_CRASH_DIR_TIMES = (
    re.compile(r"^(?P<y>\d{4})(?P<mo>\d\d)(?P<d>\d\d)(?P<h>\d\d)(?P<mi>\d\d)(?P<s>)$"),
    re.compile(r"-(?P<y>\d{4})-(?P<mo>\d\d)-(?P<d>\d\d)-(?P<h>\d\d):(?P<mi>\d\d):(?P<s>\d\d)$"),
)


def crash_dir_time(directory: str) -> datetime | None:
    """Ubuntu's ``/var/crash/202501071501`` or RHEL's ``127.0.0.1-2025-01-07-10:01:02``."""
    name = _basename(directory)
    for pattern in _CRASH_DIR_TIMES:
        m = pattern.search(name)
        if m:
            return make_time(
                int(m["y"]), int(m["mo"]), int(m["d"]), int(m["h"]), int(m["mi"]), int(m["s"] or 0)
            )
    return None


def parse_kdump_logs(text: str) -> tuple[CrashLog, ...]:
    """A glob over ``/var/crash/*/*dmesg*``. Apport's ``*.crash`` files (user-space crashes,
    not panics) sit directly in /var/crash and never match."""
    logs: list[CrashLog] = []
    for path, content in split_glob(text):
        directory = _parent(path)
        logs.append(CrashLog(path, directory, crash_dir_time(directory), parse_log(content)))
    return tuple(logs)


def crash_dirs(entries: Iterable[ListingEntry]) -> tuple[ListingEntry, ...]:
    """The dump directories in a ``/var/crash`` listing (one level below it)."""
    return tuple(
        e for e in entries if e.type == "d" and _parent(e.path).rstrip("/") == "/var/crash"
    )


# --------------------------------------------------------------------------- watchdog


@dataclass(frozen=True, slots=True)
class WatchdogAttr:
    device: str  # watchdog0
    attr: str  # bootstatus | state | identity
    value: str


WDIOF_FLAGS = {
    0x01: "OVERHEAT",
    0x02: "FANFAULT",
    0x04: "EXTERN1",
    0x08: "EXTERN2",
    0x10: "POWERUNDER",
    0x20: "CARDRESET",
    0x40: "POWEROVER",
}
_WATCHDOG_PATH = re.compile(r"/(?P<dev>watchdog\d+)/(?P<attr>\w+)$")


def parse_watchdog(text: str) -> tuple[WatchdogAttr, ...]:
    """A glob over ``/sys/class/watchdog/watchdog*/<attr>`` (never ``/dev/watchdog``)."""
    attrs: list[WatchdogAttr] = []
    for path, content in split_glob(text):
        m = _WATCHDOG_PATH.search(path)
        if m:
            attrs.append(WatchdogAttr(m["dev"], m["attr"], content.strip()))
    return tuple(attrs)


def bootstatus_flags(value: str) -> tuple[str, ...]:
    """WDIOF_* names set in a ``bootstatus`` value (sysfs prints it in decimal)."""
    v = value.strip().lower()
    if v.startswith("0x") and 2 < len(v) <= 10:
        try:
            n = int(v, 16)
        except ValueError:
            return ()
    elif v.isdecimal() and len(v) <= 10:
        n = int(v)
    else:
        return ()
    return tuple(name for bit, name in WDIOF_FLAGS.items() if n & bit)


# --------------------------------------------------------------------------- rasdaemon


@dataclass(frozen=True, slots=True)
class RasEvent:
    """One event row of ``ras-mc-ctl --errors`` (``<id> <timestamp> <text>``)."""

    lineno: int
    section: str  # "MCE events", "PCIe AER events", ...
    record_id: str
    time: datetime | None
    text: str
    fatal: bool


_RAS_SECTION = re.compile(r"^(?P<name>[A-Za-z][\w /-]*? (?:events|errors)):?\s*$")
_RAS_EVENT = re.compile(
    r"^(?P<id>\d{1,12}) (?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?: [+-]\d{4})?) (?P<text>.*)$"
)
_RAS_FATAL = re.compile(
    r"(?<![Nn]on-)\bFatal\b|\bUncorrected\b(?! \(Non-Fatal\))|Processor_context_corrupt|\bPCC\b"
    r"|severity=fatal"
)


def parse_ras(text: str) -> tuple[RasEvent, ...]:
    events: list[RasEvent] = []
    section = ""
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("No "):
            continue
        m = _RAS_EVENT.match(stripped)
        if m:
            events.append(
                RasEvent(
                    lineno,
                    section,
                    m["id"],
                    parse_iso(m["ts"]),
                    m["text"],
                    bool(_RAS_FATAL.search(m["text"])),
                )
            )
            continue
        s = _RAS_SECTION.match(stripped)
        if s:
            section = s["name"]
    return tuple(events)


# --------------------------------------------------------------------------- fwupd


@dataclass(frozen=True, slots=True)
class FwupdEntry:
    """One device in ``fwupdmgr get-history --json``."""

    name: str
    plugin: str
    version: str  # the device's version now
    release: str  # the version the history entry installed
    created: datetime | None
    modified: datetime | None
    state: str  # unknown | pending | success | failed | needs-reboot | failed-transient
    flags: tuple[str, ...]

    @property
    def needs_reboot(self) -> bool:
        """Only updates applied across a reboot (UEFI capsules and the like) can explain one."""
        return (
            "uefi" in self.plugin
            or "capsule" in self.plugin
            or bool({"needs-reboot", "needs-shutdown"} & set(self.flags))
            or self.state in ("needs-reboot", "pending")
        )


_FWUPD_STATES = {
    0: "unknown",
    1: "pending",
    2: "success",
    3: "failed",
    4: "needs-reboot",
    5: "failed-transient",
}


def _str(value: object) -> str:
    return value if isinstance(value, str) else ""


def _fwupd_state(value: object) -> str:
    n = _int(value)
    if n is not None:
        return _FWUPD_STATES.get(n, "unknown")
    return _str(value) or "unknown"


def _fwupd_release(device: Mapping[str, Any]) -> str:
    releases = device.get("Releases")
    if isinstance(releases, list) and releases and isinstance(releases[0], dict):
        return _str(releases[0].get("Version"))
    return ""


def _fwupd_entry(device: Mapping[str, Any]) -> FwupdEntry:
    created, modified = _int(device.get("Created")), _int(device.get("Modified"))
    flags = device.get("Flags")
    return FwupdEntry(
        name=_str(device.get("Name")),
        plugin=_str(device.get("Plugin")),
        version=_str(device.get("Version")),
        release=_fwupd_release(device),
        created=from_epoch(created) if created is not None else None,
        modified=from_epoch(modified) if modified is not None else None,
        state=_fwupd_state(device.get("UpdateState")),
        flags=tuple(f for f in flags if isinstance(f, str)) if isinstance(flags, list) else (),
    )


def parse_fwupd_history(text: str) -> tuple[FwupdEntry, ...]:
    """The leading JSON document (the runner may append a cut marker after it)."""
    start = text.find("{")
    try:
        doc, _ = json.JSONDecoder().raw_decode(text, start) if start >= 0 else (None, 0)
    except (ValueError, RecursionError):
        return ()
    devices = doc.get("Devices") if isinstance(doc, dict) else doc
    if not isinstance(devices, list):
        return ()
    return tuple(_fwupd_entry(d) for d in devices if isinstance(d, dict))


# --------------------------------------------------------------------------- scalars


def parse_uptime(text: str) -> float | None:
    """``/proc/uptime``: seconds since boot (the first field)."""
    m = re.match(r"^\s*(\d{1,12}(?:\.\d{1,9})?)\b", text)
    return float(m.group(1)) if m else None


def parse_boot_id(text: str) -> str | None:
    """``/proc/sys/kernel/random/boot_id`` as journald writes it (32 hex digits, no dashes)."""
    m = re.match(r"^\s*([0-9a-fA-F-]{32,36})\s*$", text)
    if not m:
        return None
    hex_id = m.group(1).replace("-", "").lower()
    return hex_id if len(hex_id) == 32 else None


def parse_epoch(text: str) -> datetime | None:
    """``date -u +%s``: the node's clock when the probes ran."""
    m = re.match(r"^\s*(\d{1,12})\s*$", text)
    return from_epoch(int(m.group(1))) if m else None
