"""Why did the node last reboot? Probe results in, one `RebootReport` out; pure, no I/O.

The analysis correlates the evidence inside the window between the previous boot's last
journal entry and the current boot's start (shared/research/diagnostics-anchors.md §5) and
applies the note's rules in order:

1. a strong record inside the window gives its class at high confidence (thermal first,
   since a thermal shutdown then looks orderly; fatal MCE/GHES followed by a panic is
   ``hardware_error``);
2. an orderly stop: logind's SHUTDOWN message plus the target sequence is high, targets (or
   logind) alone medium; the initiator is recorded;
3. an unclean stop: lockups give ``watchdog_reset`` (medium with an active hardware watchdog,
   else low); Xid 79/119 or fatal hardware errors give ``hardware_error`` medium, the GPU
   record listed as contributing; otherwise ``unclean_stop_unknown_cause`` low. Never
   ``power_loss`` without an out-of-band (SEL) record;
4. an fwupd history entry at the time of an orderly reboot gives ``firmware_update`` medium;
5. missing sources are listed and only ever lower the confidence, or leave ``unknown``;
6. records that disagree lower the confidence one step and are listed, never averaged;
7. absence alone never gives more than low confidence.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from agentctl.ctl.diag.probe import ProbeResult
from agentctl.ctl.diag.reboot import parse as p
from agentctl.ctl.diag.reboot.sources import PROBE_NAMES

CLASSES = (
    "planned_reboot",
    "planned_shutdown",
    "kernel_panic",
    "watchdog_reset",
    "power_loss",
    "thermal_shutdown",
    "hardware_error",
    "firmware_update",
    "unclean_stop_unknown_cause",
    "unknown",
)
CONFIDENCES = ("low", "medium", "high")
STRENGTHS = ("weak", "moderate", "strong")

# Evidence roles (internal): what part a record plays in the rules.
CAUSE, ORDERLY, UNCLEAN, CONDITION, FIRMWARE, INITIATOR = (
    "cause",
    "orderly",
    "unclean",
    "condition",
    "firmware",
    "initiator",
)
WEAK, MODERATE, STRONG = STRENGTHS

_LABEL = {
    "planned_reboot": "Planned reboot",
    "planned_shutdown": "Planned shutdown",
    "kernel_panic": "Kernel panic",
    "watchdog_reset": "Watchdog reset",
    "power_loss": "Power loss",
    "thermal_shutdown": "Thermal shutdown",
    "hardware_error": "Hardware error",
    "firmware_update": "Firmware update",
    "unclean_stop_unknown_cause": "Unclean stop, cause unknown",
    "unknown": "Cause unknown",
}
# Which strong class wins when several are in the window: the cause before its consequence.
_PRECEDENCE = ("thermal_shutdown", "hardware_error", "kernel_panic", "watchdog_reset", "power_loss")
# Pairs that are one causal chain, not a disagreement (a panic that hung until the watchdog).
_CHAINS = {
    frozenset(pair)
    for pair in (
        ("hardware_error", "kernel_panic"),
        ("hardware_error", "watchdog_reset"),
        ("kernel_panic", "watchdog_reset"),
        ("thermal_shutdown", "hardware_error"),
    )
}
_UNCLEAN_CLASSES = frozenset(
    {
        "thermal_shutdown",
        "hardware_error",
        "kernel_panic",
        "watchdog_reset",
        "power_loss",
        "unclean_stop_unknown_cause",
    }
)
_ORDERLY_CLASSES = frozenset({"planned_reboot", "planned_shutdown", "firmware_update"})
_HW_FATAL_KINDS = frozenset(
    {"mce_exception", "ghes_fatal", "ras_fatal", "cpu_ierr", "mem_uncorrectable"}
)
_HW_PANIC = re.compile(r"(?i)machine check|hardware error|\bMCE\b|uncorrect")
_PREV_JOURNAL = ("prev_journal_tail", "prev_kernel", "prev_logind")
_NEEDS_LINES = ("prev_journal_tail", "prev_kernel")
_DIRECTION_CLASS = {"reboot": "planned_reboot", "poweroff": "planned_shutdown"}
_SHUTDOWN_FIELD = {
    "reboot": "reboot",
    "kexec": "reboot",
    "power-off": "poweroff",
    "halt": "poweroff",
}


@dataclass(frozen=True)
class WindowPolicy:
    """How far around the window records still count (configurable per fleet)."""

    sel_skew: timedelta = timedelta(minutes=10)  # BMC and kdump clocks vs the node's
    lead: timedelta = timedelta(minutes=30)  # previous-boot log lines before its last entry
    grace: timedelta = timedelta(minutes=30)  # after boot: records written about the stop
    slack: timedelta = timedelta(minutes=2)  # exact record times (pstore) around the edges


DEFAULT_POLICY = WindowPolicy()


_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)


def _shift(t: datetime, delta: timedelta) -> datetime:
    """`t + delta`, clamped: garbage times near year 1 or 9999 must not raise."""
    try:
        return t + delta
    except OverflowError:
        return _LATEST if delta > timedelta(0) else _EARLIEST


def _iso(t: datetime | None) -> str | None:
    return t.astimezone(UTC).isoformat().replace("+00:00", "Z") if t is not None else None


@dataclass(frozen=True)
class Evidence:
    """One record. `supports` is a class from CLASSES, or ``orderly_stop`` / ``unclean_stop``
    (the stop's nature, not its cause) or ``context`` (a condition, e.g. an OOM kill)."""

    source: str  # the probe name
    ref: str  # line, path or record id inside it
    observed_at: datetime | None
    excerpt: str
    supports: str
    strength: str
    role: str = CAUSE
    kind: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "ref": self.ref,
            "observed_at": _iso(self.observed_at),
            "excerpt": self.excerpt,
            "supports": self.supports,
            "strength": self.strength,
        }


@dataclass(frozen=True)
class Window:
    prev_boot_id: str | None
    prev_last_entry: datetime | None
    current_boot_start: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "prev_boot_id": self.prev_boot_id,
            "prev_last_entry": _iso(self.prev_last_entry),
            "current_boot_start": _iso(self.current_boot_start),
        }


@dataclass(frozen=True)
class MissingSource:
    source: str
    status: str  # a ProbeStatus value, or "not_collected"
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "status": self.status, "detail": self.detail}


@dataclass(frozen=True)
class RebootReport:
    reason_code: str
    confidence: str
    summary: str
    window: Window
    evidence: tuple[Evidence, ...] = ()
    contributing: tuple[Evidence, ...] = ()
    contradicting_evidence: tuple[Evidence, ...] = ()
    missing_sources: tuple[MissingSource, ...] = ()
    initiator: str | None = None  # planned stops: logind, power_button, user:<name>, ups, ...

    def to_json(self) -> dict[str, Any]:
        return {
            "reason_code": self.reason_code,
            "confidence": self.confidence,
            "summary": self.summary,
            "window": self.window.to_json(),
            "evidence": [e.to_json() for e in self.evidence],
            "contributing": [e.to_json() for e in self.contributing],
            "contradicting_evidence": [e.to_json() for e in self.contradicting_evidence],
            "missing_sources": [m.to_json() for m in self.missing_sources],
        }


# --------------------------------------------------------------------------- inputs


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


_STATUS_TEXT = {
    "timeout": "timed out",
    "not_supported": "absent on this node",
    "permission_denied": "needs root",
    "missing_tool": "the command is not installed",
}


def _detail(r: ProbeResult) -> str:
    for text in (r.stderr, r.output):
        for line in text.splitlines():
            if line.strip():
                return _short(line, 160)
    if r.status.value in _STATUS_TEXT:
        return _STATUS_TEXT[r.status.value]
    return f"exit status {r.exit_status}" if r.exit_status is not None else r.status.value


def _unavailable(name: str, r: ProbeResult) -> tuple[str, str] | None:
    if name in _PREV_JOURNAL:
        found = p.journal_unavailable(r.output + "\n" + r.stderr)
        if found is not None:
            return found
    if r.ok and name in _NEEDS_LINES and not p.parse_log(r.output):
        return "not_supported", "no entries for the previous boot"
    return None


def missing_sources(results: Mapping[str, ProbeResult]) -> tuple[MissingSource, ...]:
    """Every probe that gave nothing usable, with its status and why."""
    missing: list[MissingSource] = []
    for name in PROBE_NAMES:
        r = results.get(name)
        if r is None:
            missing.append(MissingSource(name, "not_collected", "no result for this probe"))
            continue
        found = _unavailable(name, r)
        if found is not None:
            missing.append(MissingSource(name, found[0], found[1]))
        elif not r.ok:
            missing.append(MissingSource(name, r.status.value, _detail(r)))
    return tuple(missing)


@dataclass(frozen=True)
class _Frame:
    """The window, with the bounds each kind of record is judged against."""

    start: datetime | None  # the previous boot's last entry
    end: datetime | None  # the current boot's start
    node_now: datetime | None
    policy: WindowPolicy

    @property
    def partial(self) -> bool:
        return self.start is None or self.end is None

    def contains(self, t: datetime | None, before: timedelta, after: timedelta) -> bool:
        """`t` lies in [start - before, end + after]; with no known start, the window is
        taken as `lead` before the boot. Nothing is inside a window with no end."""
        if t is None or self.end is None:
            return False
        lo = _shift(self.start or _shift(self.end, -self.policy.lead), -before)
        return lo <= t <= _shift(self.end, after)

    @property
    def judgeable(self) -> bool:
        return self.end is not None

    def near_end(self, t: datetime | None) -> bool:
        """A previous-boot log line close enough to its end to bear on the stop."""
        if t is None or self.start is None:
            return True
        return t >= _shift(self.start, -self.policy.lead)


@dataclass(frozen=True)
class _Inputs:
    results: Mapping[str, ProbeResult]
    frame: _Frame
    window: Window
    prev_journal: bool  # the previous boot's journal could be read
    prev_kernel: bool

    def text(self, name: str) -> str:
        return _text(self.results, name)


def _text(results: Mapping[str, ProbeResult], name: str) -> str:
    r = results.get(name)
    if r is None or not r.ok or _unavailable(name, r) is not None:
        return ""
    return r.output


def _boot_rows(
    boots: tuple[p.Boot, ...], cur_id: str | None
) -> tuple[p.Boot | None, p.Boot | None]:
    if not boots:
        return None, None
    by_index = {b.index: b for b in boots}
    cur = next((b for b in boots if cur_id and b.boot_id == cur_id), None)
    cur = cur or by_index.get(0) or max(boots, key=lambda b: b.index)
    return cur, by_index.get(cur.index - 1)


def _times(lines: Iterable[p.LogLine]) -> list[datetime]:
    return [ln.time for ln in lines if ln.time is not None]


def _logind_entries(results: Mapping[str, ProbeResult]) -> tuple[p.JournalEntry, ...]:
    return p.parse_journal_json(_text(results, "prev_logind"))


def _prev_boot_id(prev: p.Boot | None, results: Mapping[str, ProbeResult]) -> str | None:
    if prev is not None:
        return prev.boot_id
    ids = [e.boot_id for e in _logind_entries(results) if e.boot_id]
    return max(set(ids), key=ids.count) if ids else None


def _current_start(
    cur: p.Boot | None, results: Mapping[str, ProbeResult], node_now: datetime | None
) -> datetime | None:
    if cur is not None and cur.first is not None:
        return cur.first
    head = _times(p.parse_log(_text(results, "cur_boot_head")))
    if head:
        return min(head)
    uptime = p.parse_uptime(_text(results, "uptime"))
    if uptime is not None and node_now is not None and uptime < 3e9:
        return _shift(node_now, -timedelta(seconds=uptime))
    rows = [r for r in p.parse_last(_text(results, "last")) if r.user == "reboot"]
    if rows and rows[0].end_state == "still running":
        return rows[0].start
    return None


def _inputs(
    results: Mapping[str, ProbeResult], now: datetime | None, policy: WindowPolicy
) -> _Inputs:
    node_now = p.parse_epoch(_text(results, "date")) or now
    boots = p.parse_boots(_text(results, "boots"))
    cur, prev = _boot_rows(boots, p.parse_boot_id(_text(results, "boot_id")))
    prev_lines = p.parse_log(_text(results, "prev_journal_tail")) + p.parse_log(
        _text(results, "prev_kernel")
    )
    prev_times = _times(prev_lines)
    prev_last = prev.last if prev is not None and prev.last else None
    prev_last = prev_last or (max(prev_times) if prev_times else None)
    start = _current_start(cur, results, node_now)
    window = Window(_prev_boot_id(prev, results), prev_last, start)
    return _Inputs(
        results=results,
        frame=_Frame(prev_last, start, node_now, policy),
        window=window,
        prev_journal=bool(_text(results, "prev_journal_tail")),
        prev_kernel=bool(_text(results, "prev_kernel")),
    )


# --------------------------------------------------------------------------- evidence

_MARKER_ROLES: dict[str, tuple[str, str, str]] = {
    "logind_shutdown": (ORDERLY, "orderly_stop", MODERATE),
    "logind_action": (ORDERLY, "orderly_stop", WEAK),
    "target": (ORDERLY, "orderly_stop", MODERATE),
    "shutdown_step": (ORDERLY, "orderly_stop", MODERATE),
    "journal_stopped": (ORDERLY, "orderly_stop", WEAK),
    "kernel_final": (ORDERLY, "orderly_stop", MODERATE),
    "power_key": (INITIATOR, "planned_shutdown", WEAK),
    "initiator": (INITIATOR, "orderly_stop", WEAK),
    "unclean_journal": (UNCLEAN, "unclean_stop", MODERATE),
    "fs_recovery": (UNCLEAN, "unclean_stop", MODERATE),
    "panic": (CAUSE, "kernel_panic", STRONG),
    "lockup": (CONDITION, "watchdog_reset", MODERATE),
    "hung_task": (CONDITION, "context", WEAK),
    "thermal_critical": (CAUSE, "thermal_shutdown", STRONG),
    "mce_logged": (CONDITION, "hardware_error", WEAK),
    "mce_exception": (CONDITION, "hardware_error", MODERATE),
    "ghes_fatal": (CONDITION, "hardware_error", MODERATE),
    "aer_fatal": (CONDITION, "hardware_error", MODERATE),
    "oom": (CONDITION, "context", WEAK),
    "oops": (CONDITION, "context", WEAK),
}


def _weaker(a: str, b: str) -> str:
    return STRENGTHS[min(STRENGTHS.index(a), STRENGTHS.index(b))]


def _panic_class(why: str) -> str:
    return "hardware_error" if _HW_PANIC.search(why) else "kernel_panic"


def _marker_role(m: p.Marker) -> tuple[str, str, str] | None:
    if m.kind == "xid":
        if p.xid_is_node_fatal(m):
            return CONDITION, "hardware_error", MODERATE
        return (CONDITION, "context", WEAK) if p.xid_is_critical(m) else None
    role = _MARKER_ROLES.get(m.kind)
    if role is None:
        return None
    if m.kind == "panic":
        return CAUSE, _panic_class(m.detail), STRONG
    if role[0] == ORDERLY and m.detail in _DIRECTION_CLASS:
        return ORDERLY, _DIRECTION_CLASS[m.detail], role[2]
    return role


def _from_marker(
    m: p.Marker,
    source: str,
    ref: str | None = None,
    at: datetime | None = None,
    cap: str = STRONG,
) -> Evidence | None:
    role = _marker_role(m)
    if role is None:
        return None
    kind = m.kind if m.kind != "initiator" else f"initiator:{m.detail}"
    return Evidence(
        source=source,
        ref=ref or f"{source}:{m.line.lineno}",
        observed_at=m.line.time or at,
        excerpt=_short(m.line.raw),
        supports=role[1],
        strength=_weaker(role[2], cap),
        role=role[0],
        kind=kind,
    )


def _logind_markers(entries: Iterable[p.JournalEntry], boot_id: str | None) -> Iterator[p.Marker]:
    for e in entries:
        if boot_id and e.boot_id and e.boot_id.replace("-", "") != boot_id:
            continue  # `+` matches may reach other boots on some journalctl versions
        line = e.as_line()
        if e.message_id == p.SHUTDOWN_MESSAGE_ID:
            direction = _SHUTDOWN_FIELD.get(e.shutdown or "")
            if direction is None:
                m = p.match_marker(replace(line, ident="systemd-logind"))
                direction = m.detail if m is not None else ""
            yield p.Marker("logind_shutdown", line, direction)
        elif (m := p.match_marker(line)) is not None:
            yield m


def _prev_journal(src: _Inputs) -> Iterator[Evidence]:
    tail = p.parse_log(src.text("prev_journal_tail"))
    last_line = tail[-1] if tail else None
    feeds: tuple[tuple[str, Iterable[p.Marker]], ...] = (
        (
            "prev_logind",
            _logind_markers(p.parse_journal_json(src.text("prev_logind")), src.window.prev_boot_id),
        ),
        ("prev_journal_tail", p.scan_markers(tail)),
        ("prev_kernel", p.scan_markers(p.parse_log(src.text("prev_kernel")))),
    )
    for source, markers in feeds:
        for m in markers:
            if m.kind in ("unclean_journal", "fs_recovery") or not src.frame.near_end(m.line.time):
                continue
            if m.kind == "journal_stopped" and m.line is not last_line:
                continue  # journald also stops when restarted; only the final line counts
            e = _from_marker(m, source)
            if e is not None:
                yield e


def _cur_boot(src: _Inputs) -> Iterator[Evidence]:
    for source in ("cur_boot_head", "cur_journald"):
        for m in p.scan_markers(p.parse_log(src.text(source))):
            if m.kind in ("unclean_journal", "fs_recovery"):
                e = _from_marker(m, source)
                if e is not None:
                    yield e


def _wtmp(src: _Inputs) -> Iterator[Evidence]:
    records = p.parse_last(src.text("last"))
    boots = [i for i, r in enumerate(records) if r.user == "reboot" and r.tty == "system boot"]
    if not boots:
        return
    cur = next((i for i in boots if _near(records[i].start, src.frame)), boots[0])
    for r in records[cur + 1 :]:
        if r.user == "reboot" and r.tty == "system boot":
            yield _wtmp_evidence(r, "unclean_stop", UNCLEAN, MODERATE, "wtmp_no_shutdown")
            return
        if r.user == "shutdown" and r.tty == "system down":
            if src.frame.near_end(r.start):
                yield _wtmp_evidence(r, "orderly_stop", ORDERLY, MODERATE, "wtmp_shutdown")
            return
        if r.end_state == "crash":
            yield _wtmp_evidence(r, "unclean_stop", UNCLEAN, WEAK, "wtmp_crash")


def _near(t: datetime | None, frame: _Frame) -> bool:
    """A wtmp boot row that is the current boot (its start matches the boot start)."""
    return t is not None and frame.end is not None and abs(t - frame.end) <= frame.policy.lead


def _wtmp_evidence(r: p.WtmpRecord, supports: str, role: str, strength: str, kind: str) -> Evidence:
    """A shutdown row is dated by its start (the stop); the previous boot's row by its end."""
    when = r.end if kind == "wtmp_no_shutdown" else r.start
    return Evidence("last", f"last:{r.lineno}", when, _short(r.raw), supports, strength, role, kind)


def _pstore_time(
    rec: p.PstoreRecord, mtimes: Mapping[str, datetime | None]
) -> tuple[datetime | None, str]:
    """When the record was written: the EFI id, or pstorefs' mtime (the record's own time);
    an archived copy's mtime only says when systemd-pstore moved it (at a later boot)."""
    if rec.id_time is not None:
        return rec.id_time, "exact"
    when = mtimes.get(rec.path)
    if when is None:
        return None, "none"
    return when, "archived" if rec.archived else "exact"


def _pstore_strength(
    rec: p.PstoreRecord, when: datetime | None, how: str, frame: _Frame
) -> str | None:
    """STRONG inside the window, None (dropped) when provably outside it."""
    pol = frame.policy
    if not frame.judgeable and how != "none":
        return WEAK  # no boot start known: cannot place it, cannot rule it out
    if how == "exact":
        return STRONG if frame.contains(when, pol.slack, pol.slack) else None
    if how == "archived":
        end = frame.end
        fresh = (
            end is not None
            and when is not None
            and _shift(end, -pol.slack) <= when <= _shift(end, pol.grace)
        )
        return MODERATE if fresh else None
    # No time at all: a console record still in pstorefs is the previous boot's console.
    if rec.kind == "console" and not rec.archived:
        return MODERATE
    return WEAK


def _pstore_records(src: _Inputs) -> list[p.PstoreRecord]:
    seen: set[str] = set()
    records: list[p.PstoreRecord] = []
    for name in ("pstore", "pstore_archive"):
        for rec in p.parse_pstore(src.text(name)):
            if rec.key not in seen and rec.kind in ("dmesg", "console"):
                seen.add(rec.key)
                records.append(rec)
    return records


def _record_items(
    source: str, path: str, lines: tuple[p.LogLine, ...], at: datetime | None, cap: str, head: str
) -> Iterator[Evidence]:
    """A crash record (pstore, kdump): its panic line as the cause, the rest as conditions."""
    markers = p.scan_markers(lines)
    panic = next((m for m in markers if m.kind == "panic"), None)
    if panic is not None:
        yield Evidence(
            source,
            path,
            at,
            _short(panic.line.raw),
            _panic_class(panic.detail),
            cap,
            CAUSE,
            "panic",
        )
    elif head == "Panic":
        yield Evidence(source, path, at, f"{head}#1 header", "kernel_panic", cap, CAUSE, "panic")
    for m in markers:
        if m.kind == "panic":
            continue
        e = _from_marker(m, source, f"{path}:{m.line.lineno}", at, cap)
        if e is not None:
            yield e


_REASON_ROLE = {
    "Oops": (CONDITION, "context", WEAK),
    "Emergency": (CONDITION, "context", WEAK),
    "Shutdown": (ORDERLY, "orderly_stop", MODERATE),
    "Restart": (ORDERLY, "planned_reboot", MODERATE),
    "Halt": (ORDERLY, "planned_shutdown", MODERATE),
    "Poweroff": (ORDERLY, "planned_shutdown", MODERATE),
}


def _pstore(src: _Inputs) -> Iterator[Evidence]:
    listing = p.parse_listing(src.text("pstore_ls")) + p.parse_listing(
        src.text("pstore_archive_ls")
    )
    mtimes = {e.path: e.mtime for e in listing}
    for rec in _pstore_records(src):
        source = "pstore_archive" if rec.archived else "pstore"
        when, how = _pstore_time(rec, mtimes)
        strength = _pstore_strength(rec, when, how, src.frame)
        if strength is None:
            continue  # a stale record from an earlier crash: not this reboot
        has_panic = any(m.kind == "panic" for m in p.scan_markers(rec.lines))
        if rec.kind == "console" or rec.reason == "Panic" or has_panic:
            yield from _record_items(source, rec.path, rec.lines, when, strength, rec.reason or "")
        elif rec.reason in _REASON_ROLE:
            role, supports, cap = _REASON_ROLE[rec.reason]
            excerpt = f"{rec.name}: {rec.reason}#1 record"
            yield Evidence(
                source,
                rec.path,
                when,
                excerpt,
                supports,
                _weaker(cap, strength),
                role,
                "pstore_reason",
            )


def _kdump(src: _Inputs) -> Iterator[Evidence]:
    dirs = {
        e.path.rstrip("/"): e.mtime for e in p.crash_dirs(p.parse_listing(src.text("kdump_ls")))
    }
    logs: dict[str, list[p.CrashLog]] = {}
    for log in p.parse_kdump_logs(src.text("kdump_dmesg")):
        logs.setdefault(log.directory, []).append(log)
        dirs.setdefault(log.directory, None)
    skew = src.frame.policy.sel_skew
    for directory, mtime in sorted(dirs.items()):
        when = mtime or p.crash_dir_time(directory)
        if not src.frame.contains(when, skew, skew):
            continue
        found = False
        for log in logs.get(directory, []):
            for e in _record_items("kdump_dmesg", log.path, log.lines, when, STRONG, ""):
                found = found or e.kind == "panic"
                yield e
        if not found:
            excerpt = f"crash dump directory {directory}"
            yield Evidence(
                "kdump_ls", directory, when, excerpt, "kernel_panic", MODERATE, CAUSE, "vmcore"
            )


def _watchdog_active(src: _Inputs) -> bool | None:
    """Whether a hardware watchdog is running now (the best hint for the previous boot)."""
    states = p.parse_watchdog(src.text("watchdog_state"))
    if not states:
        return None
    return any(a.value == "active" for a in states)


def _watchdog(src: _Inputs) -> Iterator[Evidence]:
    identity = {a.device: a.value for a in p.parse_watchdog(src.text("watchdog_identity"))}
    for a in p.parse_watchdog(src.text("watchdog_bootstatus")):
        flags = p.bootstatus_flags(a.value)
        if not flags:
            continue
        ref = f"/sys/class/watchdog/{a.device}/bootstatus"
        who = f" ({identity[a.device]})" if a.device in identity else ""
        excerpt = f"{a.device}{who} bootstatus={a.value} [{','.join(flags)}]"
        if "CARDRESET" in flags:
            yield Evidence(
                "watchdog_bootstatus",
                ref,
                None,
                excerpt,
                "watchdog_reset",
                STRONG,
                CAUSE,
                "cardreset",
            )
        elif {"OVERHEAT", "FANFAULT"} & set(flags):
            yield Evidence(
                "watchdog_bootstatus",
                ref,
                None,
                excerpt,
                "thermal_shutdown",
                MODERATE,
                CAUSE,
                "overheat",
            )
        else:
            yield Evidence(
                "watchdog_bootstatus", ref, None, excerpt, "context", WEAK, CONDITION, "bootstatus"
            )


_SEL_ROLES: dict[str, tuple[str, str, str]] = {
    "kernel_panic_oem": (CAUSE, "kernel_panic", STRONG),
    "os_critical_stop": (CAUSE, "kernel_panic", STRONG),
    "os_graceful_shutdown": (ORDERLY, "orderly_stop", MODERATE),
    "ac_lost": (CAUSE, "power_loss", STRONG),
    "psu_ac_lost": (CAUSE, "power_loss", MODERATE),  # one PSU of a redundant pair: not proof
    "watchdog_action": (CAUSE, "watchdog_reset", STRONG),
    "watchdog_expired": (CAUSE, "watchdog_reset", MODERATE),
    "thermal_trip": (CAUSE, "thermal_shutdown", STRONG),
    "temp_nonrecoverable": (CAUSE, "thermal_shutdown", STRONG),
    "temp_critical": (CAUSE, "thermal_shutdown", MODERATE),
    "hard_reset_boot": (UNCLEAN, "unclean_stop", MODERATE),
    "cpu_ierr": (CONDITION, "hardware_error", MODERATE),
    "mem_uncorrectable": (CONDITION, "hardware_error", MODERATE),
    "bus_fatal": (CONDITION, "hardware_error", MODERATE),
}


def _sel_times(src: _Inputs, rows: tuple[p.SelEntry, ...]) -> list[datetime | None]:
    """Row times on the node's clock: the BMC's offset (``sel time get`` vs ``date``) removed."""
    bmc_now, node_now = p.parse_sel_time(src.text("ipmi_sel_time")), src.frame.node_now
    offset = bmc_now - node_now if bmc_now is not None and node_now is not None else timedelta(0)
    times: list[datetime | None] = []
    for r in rows:
        try:
            times.append(r.time - offset if r.time is not None else None)
        except OverflowError:
            times.append(None)
    return times


def _sel_in_window(i: int, times: list[datetime | None], frame: _Frame) -> bool:
    """Dated rows by their time; undated ones (Pre-Init, OEM panic text) by the dated rows
    around them, since the SEL is append-only: in if either neighbour is in the window."""
    skew = frame.policy.sel_skew
    if times[i] is not None:
        return frame.contains(times[i], skew, skew)
    before = next((t for t in reversed(times[:i]) if t is not None), None)
    after = next((t for t in times[i + 1 :] if t is not None), None)
    return any(t is not None and frame.contains(t, skew, skew) for t in (before, after))


def _sel(src: _Inputs) -> Iterator[Evidence]:
    rows = p.parse_sel(src.text("ipmi_sel"))
    times = _sel_times(src, rows)
    for i, row in enumerate(rows):
        if row.kind is None or not _sel_in_window(i, times, src.frame):
            continue
        role, supports, strength = _SEL_ROLES[row.kind]
        ref = f"ipmi_sel:{row.record_id}"
        yield Evidence(
            "ipmi_sel", ref, times[i], _short(row.raw), supports, strength, role, row.kind
        )


def _ras(src: _Inputs) -> Iterator[Evidence]:
    pol = src.frame.policy
    for ev in p.parse_ras(src.text("ras")):
        if ev.fatal and src.frame.contains(ev.time, pol.lead, pol.grace):
            ref = f"ras:{ev.section or 'events'}#{ev.record_id}"
            excerpt = _short(f"{ev.record_id} {ev.text}")
            yield Evidence(
                "ras", ref, ev.time, excerpt, "hardware_error", MODERATE, CONDITION, "ras_fatal"
            )


def _fwupd(src: _Inputs) -> Iterator[Evidence]:
    pol = src.frame.policy
    for fw in p.parse_fwupd_history(src.text("fwupd_history")):
        if not fw.needs_reboot:
            continue
        when = next(
            (t for t in (fw.modified, fw.created) if src.frame.contains(t, pol.lead, pol.grace)),
            None,
        )
        if when is None:
            continue
        release = fw.release or "unknown"
        excerpt = f"{fw.name}: version {fw.version}, release {release} ({fw.state}, {fw.plugin})"
        yield Evidence(
            "fwupd_history",
            f"fwupd_history:{fw.name}",
            when,
            _short(excerpt),
            "firmware_update",
            MODERATE,
            FIRMWARE,
            "fwupd",
        )


_COLLECTORS: tuple[Callable[[_Inputs], Iterable[Evidence]], ...] = (
    _prev_journal,
    _cur_boot,
    _wtmp,
    _pstore,
    _kdump,
    _watchdog,
    _sel,
    _ras,
    _fwupd,
)


def _dedupe(items: Iterable[Evidence]) -> list[Evidence]:
    """The same journal line reached through two probes (logind JSON and the tail) counts once."""
    seen: set[tuple[str, str, str]] = set()
    out: list[Evidence] = []
    for e in items:
        when = e.observed_at.replace(microsecond=0).isoformat() if e.observed_at else e.ref
        message = e.excerpt.rpartition(": ")[2] if e.role in (ORDERLY, INITIATOR) else e.excerpt
        key = (e.kind, when, message)
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out


def _collect_evidence(src: _Inputs) -> list[Evidence]:
    return _dedupe(e for collect in _COLLECTORS for e in collect(src))


# --------------------------------------------------------------------------- rules


@dataclass
class _Verdict:
    reason: str
    confidence: str
    summary: str
    evidence: list[Evidence] = field(default_factory=list)
    contributing: list[Evidence] = field(default_factory=list)
    contradicting: list[Evidence] = field(default_factory=list)
    initiator: str | None = None
    notes: list[str] = field(default_factory=list)


def _lower(confidence: str, steps: int = 1) -> str:
    return CONFIDENCES[max(0, CONFIDENCES.index(confidence) - steps)]


def _cap(confidence: str, ceiling: str) -> str:
    return CONFIDENCES[min(CONFIDENCES.index(confidence), CONFIDENCES.index(ceiling))]


def _agrees(cls: str, e: Evidence) -> bool:
    """Whether `e` fits the verdict `cls` (then it contributes) or disagrees with it."""
    if cls == "unknown" or e.role in (CONDITION, FIRMWARE):
        return True
    if cls == "unclean_stop_unknown_cause" and e.role == CAUSE:
        return e.supports in _UNCLEAN_CLASSES  # a possible cause, too weak to name it
    if e.role == UNCLEAN:
        return cls in _UNCLEAN_CLASSES
    if e.role in (ORDERLY, INITIATOR):
        if cls == "thermal_shutdown":
            return True  # a thermal shutdown runs the orderly poweroff path
        if cls not in _ORDERLY_CLASSES:
            return False
        want = "planned_reboot" if cls == "firmware_update" else cls
        return e.supports in (want, "orderly_stop")
    return e.supports == cls or frozenset((cls, e.supports)) in _CHAINS


def _sort(items: Iterable[Evidence]) -> list[Evidence]:
    far = datetime.max.replace(tzinfo=UTC)
    return sorted(
        items, key=lambda e: (-STRENGTHS.index(e.strength), e.observed_at or far, e.source, e.ref)
    )


def _settle(v: _Verdict, basis: list[Evidence], items: list[Evidence]) -> _Verdict:
    """Everything not in the basis either contributes or contradicts; a contradiction lowers
    the confidence one step (rule 6)."""
    ids = {id(e) for e in basis}
    v.evidence = _sort(basis)
    for e in items:
        if id(e) in ids:
            continue
        (v.contributing if _agrees(v.reason, e) else v.contradicting).append(e)
    v.contributing, v.contradicting = _sort(v.contributing), _sort(v.contradicting)
    if v.contradicting:
        v.confidence = _lower(v.confidence)
        v.notes.append(f"{len(v.contradicting)} record(s) disagree and are listed as contradicting")
    return v


def _describe(e: Evidence) -> str:
    line = p.parse_log_line(e.excerpt)
    text = line.message if line is not None else e.excerpt
    at = f" at {_iso(e.observed_at)}" if e.observed_at else ""
    return f'{e.ref} shows "{_short(text, 120)}"{at}'


def _strong_verdict(strong: list[Evidence], items: list[Evidence]) -> _Verdict:
    cls = min((e.supports for e in strong), key=_PRECEDENCE.index)
    basis = [e for e in strong if e.supports == cls]
    hw = [e for e in items if e.kind in _HW_FATAL_KINDS]
    if cls == "kernel_panic" and hw:  # a fatal machine check, then the panic (rule 1)
        cls, basis = "hardware_error", basis + hw
    basis += [e for e in items if e.role == UNCLEAN]
    summary = f"{_LABEL[cls]}: {_describe(basis[0])}, inside the window"
    return _settle(_Verdict(cls, "high", summary), basis, items)


def _direction(orderly: list[Evidence]) -> str | None:
    """reboot or power-off: the target line first (what systemd did), then logind, then the
    rest (kernel's final line, a pstore Restart record)."""
    for kinds in (
        ("target",),
        ("logind_shutdown",),
        ("kernel_final", "pstore_reason", "logind_action"),
    ):
        for e in orderly:
            if e.kind in kinds and e.supports in ("planned_reboot", "planned_shutdown"):
                return e.supports
    return None


_INITIATOR_ORDER = ("power_button", "user", "ups", "update_tool")


def _initiator(items: list[Evidence]) -> str:
    found: list[str] = []
    for e in items:
        if e.kind == "power_key":
            found.append("power_button")
        elif e.kind.startswith("initiator:"):
            found.append(e.kind.partition(":")[2])
    for prefix in _INITIATOR_ORDER:
        for who in found:
            if who.startswith(prefix):
                return who
    return "logind" if any(e.kind == "logind_shutdown" for e in items) else "systemd"


def _orderly_verdict(src: _Inputs, items: list[Evidence], orderly: list[Evidence]) -> _Verdict:
    basis = [e for e in items if e.role in (ORDERLY, INITIATOR)]
    cls = _direction(orderly)
    if cls is None:
        summary = (
            "Cause unknown: the previous boot stopped in order, but no logind or target line "
            "says whether it was a reboot or a power-off"
        )
        return _settle(_Verdict("unknown", "low", summary), basis, items)
    logind = any(e.kind == "logind_shutdown" for e in orderly)
    target = any(e.kind == "target" and e.supports == cls for e in orderly)
    confidence = "high" if logind and target else "medium" if logind or target else "low"
    who = _initiator(items)
    said = (
        " and ".join(
            s
            for s, ok in (("logind announced it", logind), ("systemd reached the target", target))
            if ok
        )
        or "the shutdown sequence was logged"
    )
    summary = f"{_LABEL[cls]}: {said}; initiated by {who}"
    firmware = [e for e in items if e.role == FIRMWARE]
    if firmware and cls == "planned_reboot":  # rule 4
        cls, confidence = "firmware_update", _cap(confidence, "medium")
        basis += firmware
        summary = (
            f"Firmware update: {_describe(firmware[0])}, and the system rebooted in order ({said})"
        )
    v = _Verdict(cls, confidence, summary, initiator=who)
    if not src.prev_kernel and v.confidence == "high":
        v.confidence = "medium"
        v.notes.append(
            "the previous boot's kernel log is missing, so a thermal stop is not excluded"
        )
    return _settle(v, basis, items)


def _unclean_cause(
    items: list[Evidence], wd_active: bool | None
) -> tuple[str, str, list[Evidence], str]:
    """(class, confidence, basis, why) for a stop with no orderly markers (rule 3)."""
    causes = [e for e in items if e.role == CAUSE and e.strength == MODERATE]
    if causes:
        cls = min((e.supports for e in causes), key=_PRECEDENCE.index)
        basis = [e for e in causes if e.supports == cls]
        return cls, "medium", basis, _describe(basis[0])
    lockups = [e for e in items if e.kind == "lockup"]
    if lockups:
        confidence = "medium" if wd_active else "low"
        hw = (
            "an active hardware watchdog"
            if wd_active
            else "no hardware watchdog known to be active"
        )
        return (
            "watchdog_reset",
            confidence,
            lockups,
            f"{len(lockups)} CPU lockup line(s), with {hw}",
        )
    hardware = [
        e
        for e in items
        if e.role == CONDITION and e.supports == "hardware_error" and e.strength == MODERATE
    ]
    if hardware:
        why = f"{_describe(_sort(hardware)[0])}, a hardware error contributing to the stop"
        return "hardware_error", "medium", [], why
    return "unclean_stop_unknown_cause", "low", [], ""


def _unclean_verdict(src: _Inputs, items: list[Evidence], wd_active: bool | None) -> _Verdict:
    unclean = [e for e in items if e.role == UNCLEAN]
    cls, confidence, basis, why = _unclean_cause(items, wd_active)
    if cls == "unclean_stop_unknown_cause":
        summary = (
            "Unclean stop, cause unknown: no orderly shutdown was recorded and no record names a "
            "cause (a power loss needs out-of-band IPMI/BMC evidence)"
        )
    else:
        summary = f"{_LABEL[cls]}: the previous boot stopped without an orderly shutdown; {why}"
    v = _Verdict(cls, confidence, summary)
    if not unclean:
        v.confidence = "low"  # rule 7: only the absence of orderly markers
        v.notes.append("the only sign of an unclean stop is the absence of orderly markers")
    if not src.prev_journal:
        v.confidence = "low"
        v.notes.append("the previous boot's journal is missing")
    return _settle(v, basis + unclean, items)


def _unknown_verdict(src: _Inputs, items: list[Evidence]) -> _Verdict:
    missing = {m.source: m for m in missing_sources(src.results)}
    why = missing["prev_journal_tail"].detail if "prev_journal_tail" in missing else "no entries"
    summary = (
        f"Cause unknown: the previous boot's journal is not available ({why}) and no record "
        "inside the window names a cause"
    )
    v = _Verdict("unknown", "low", summary)
    v.contributing = _sort(items)
    return v


def _decide(src: _Inputs, items: list[Evidence]) -> _Verdict:
    strong = [e for e in items if e.role == CAUSE and e.strength == STRONG]
    if strong:
        return _strong_verdict(strong, items)
    orderly = [e for e in items if e.role == ORDERLY]
    unclean = [e for e in items if e.role == UNCLEAN]
    if orderly:
        return _orderly_verdict(src, items, orderly)
    if unclean or src.prev_journal:
        return _unclean_verdict(src, items, _watchdog_active(src))
    return _unknown_verdict(src, items)


def _finish(v: _Verdict, src: _Inputs) -> _Verdict:
    if src.frame.partial and v.confidence == "high":
        v.confidence = "medium"
        v.notes.append("the window is only partly known")
    return v


def analyze(
    results: Mapping[str, ProbeResult],
    *,
    now: datetime | None = None,
    policy: WindowPolicy = DEFAULT_POLICY,
) -> RebootReport:
    """Classify the last reboot from the probes in `results` (keyed by probe name).

    `now` stands in for the node's clock when the ``date`` probe is missing (live runs);
    a bundle carries its own ``date``, so offline analysis does not depend on when it runs.
    """
    if now is not None and now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    src = _inputs(results, now, policy)
    v = _finish(_decide(src, _collect_evidence(src)), src)
    summary = v.summary + ("; " + "; ".join(v.notes) if v.notes else "") + "."
    return RebootReport(
        reason_code=v.reason,
        confidence=v.confidence,
        summary=summary,
        window=src.window,
        evidence=tuple(v.evidence),
        contributing=tuple(v.contributing),
        contradicting_evidence=tuple(v.contradicting),
        missing_sources=missing_sources(results),
        initiator=v.initiator,
    )


# --------------------------------------------------------------------------- text


def _render_items(title: str, items: tuple[Evidence, ...]) -> list[str]:
    if not items:
        return []
    lines = [f"{title}:"]
    for e in items:
        at = _iso(e.observed_at) or "time unknown"
        lines.append(f"  [{e.strength}] {e.source} {e.ref} ({at}) -> {e.supports}")
        lines.append(f"      {e.excerpt}")
    return lines


def _known(value: str | None, why_unknown: str) -> str:
    """The value, or "unknown (why)": a ticket reader cannot ask what a bare `?` meant."""
    return value if value else f"unknown ({why_unknown})"


def _window_line(w: Window) -> str:
    prev = _known(w.prev_boot_id, "no previous boot in the journal")
    last = _known(_iso(w.prev_last_entry), "no previous-boot journal")
    start = _known(
        _iso(w.current_boot_start), "no boot list, current-boot journal, uptime or wtmp record"
    )
    return f"Window: previous boot {prev}, last entry {last} -> current boot start {start}"


def render_text(report: RebootReport) -> str:
    """A plain-text view of a report for terminals and tickets."""
    lines = [
        f"Reboot cause: {report.reason_code} (confidence: {report.confidence})",
        report.summary,
        _window_line(report.window),
    ]
    if report.initiator:
        lines.append(f"Initiator: {report.initiator}")
    lines += _render_items("Evidence", report.evidence)
    lines += _render_items("Contributing", report.contributing)
    lines += _render_items("Contradicting evidence", report.contradicting_evidence)
    if report.missing_sources:
        lines.append("Missing sources:")
        lines += [f"  {m.source}: {m.status} ({m.detail})" for m in report.missing_sources]
    return "\n".join(lines) + "\n"
