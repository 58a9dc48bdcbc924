"""The process table from /proc, and stopping processes by group: what the leak check needs.

psutil is not a dependency; these few reads of /proc/<pid>/{stat,cmdline,cwd,environ} are all
the suite needs (Linux only: elsewhere `snapshot()` is empty and nothing is ever reported).
Parsers are pure (`parse_stat`); the rest reads /proc or sends signals.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class Stat:
    """The fields of /proc/<pid>/stat the leak check uses."""

    state: str
    ppid: int
    pgid: int
    sid: int
    start_ticks: int  # since boot: with the pid, it names one process even if pids are reused


@dataclass(frozen=True)
class Proc:
    pid: int
    stat: Stat
    argv: tuple[str, ...]
    cwd: str | None  # None when unreadable (another user's process, or it just exited)

    @property
    def key(self) -> tuple[int, int]:
        return (self.pid, self.stat.start_ticks)

    @property
    def cmdline(self) -> str:
        return " ".join(self.argv) or "[no command line]"


def parse_stat(text: str) -> Stat:
    """`pid (comm) state ppid pgrp session ... starttime ...`; comm may hold spaces and ')'."""
    rest = text[text.rindex(")") + 2 :].split()
    # rest[0] is field 3 (state); starttime is field 22
    return Stat(rest[0], int(rest[1]), int(rest[2]), int(rest[3]), int(rest[19]))


def read(pid: int) -> Proc | None:
    """One process, or None if it is gone (or was never there)."""
    base = PROC / str(pid)
    try:
        stat = parse_stat((base / "stat").read_text())
        raw = (base / "cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return None
    cwd: str | None = None
    with contextlib.suppress(OSError):
        cwd = os.readlink(base / "cwd")
    argv = tuple(a.decode(errors="replace") for a in raw.split(b"\0") if a)
    return Proc(pid, stat, argv, cwd)


def snapshot() -> dict[int, Proc]:
    """Every process now visible, by pid."""
    procs: dict[int, Proc] = {}
    with contextlib.suppress(OSError):
        for entry in PROC.iterdir():
            if entry.name.isdigit():
                proc = read(int(entry.name))
                if proc is not None:
                    procs[proc.pid] = proc
    return procs


def environ_value(pid: int, name: str) -> str | None:
    """One variable of a process's (start-time) environment; None if unset or unreadable."""
    try:
        raw = (PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return None
    prefix = name.encode() + b"="
    for item in raw.split(b"\0"):
        if item.startswith(prefix):
            return item[len(prefix) :].decode(errors="replace")
    return None


def ancestors(procs: Mapping[int, Proc], pid: int) -> set[int]:
    """`pid`'s parent, its parent, ... up to (and including) PID 1."""
    seen: set[int] = set()
    cur = procs.get(pid)
    while cur is not None and cur.stat.ppid not in seen and cur.stat.ppid > 0:
        seen.add(cur.stat.ppid)
        cur = procs.get(cur.stat.ppid)
    return seen


def descendants(procs: Mapping[int, Proc], pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for p in procs.values():
        children.setdefault(p.stat.ppid, []).append(p.pid)
    found: set[int] = set()
    todo = list(children.get(pid, ()))
    while todo:
        child = todo.pop()
        if child not in found:
            found.add(child)
            todo += children.get(child, ())
    return found


def alive(proc: Proc) -> bool:
    """Still running as the same process (a zombie counts as gone: PID 1 may never reap it)."""
    now = read(proc.pid)
    return now is not None and now.key == proc.key and now.stat.state not in ("Z", "X")


def _signal(procs: Iterable[Proc], sig: signal.Signals, spare_groups: set[int]) -> None:
    """`sig` to each process's whole group when every live member of that group is one of
    `procs` or a child they forked, else to the process alone."""
    procs = [p for p in procs if alive(p)]
    table = snapshot()
    owned = {p.pid for p in procs}
    for p in procs:
        owned |= descendants(table, p.pid)
    signalled: set[int] = set()
    for pgid in {p.stat.pgid for p in procs} - spare_groups:
        members = {q.pid for q in table.values() if q.stat.pgid == pgid}
        if members and members <= owned:
            with contextlib.suppress(OSError):
                os.killpg(pgid, sig)
                signalled.add(pgid)
    for p in procs:
        if p.stat.pgid not in signalled:
            with contextlib.suppress(OSError):
                os.kill(p.pid, sig)


def wait_gone(procs: Iterable[Proc], *, timeout_s: float) -> list[Proc]:
    """Up to `timeout_s` for every process to end; returns those still alive."""
    procs = list(procs)
    deadline = time.monotonic() + timeout_s
    while any(alive(p) for p in procs) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [p for p in procs if alive(p)]


def stop(procs: Iterable[Proc], *, grace_s: float = 5.0, spare_groups: set[int]) -> list[Proc]:
    """SIGTERM, up to `grace_s` to exit, then SIGKILL; returns those still alive after that.

    `spare_groups`: process groups never signalled as a whole (the caller's own)."""
    procs = list(procs)
    _signal(procs, signal.SIGTERM, spare_groups)
    _signal(wait_gone(procs, timeout_s=grace_s), signal.SIGKILL, spare_groups)
    return wait_gone(procs, timeout_s=10.0)
