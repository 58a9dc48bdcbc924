"""A pytest plugin: the run fails if it leaves a process of its own running, and stops it.

A failed test once left a whole demo fleet (sshd, supervisors, a router, a worker) running for
an hour. At the end of the session, after every fixture's teardown, a process still alive that
was not there when the session started counts as this run's when

- it descends from the pytest process, or
- its environment carries this session's token (every child inherits it, also a daemon that
  forked twice and was reparented to PID 1), or
- its command line or working directory lies under the session's base temp directory (a
  child started with a scrubbed environment: sshd's sessions, `env -i`).

Each is stopped (its process group SIGTERM, then SIGKILL), and the run fails with the list:
pid, command line, working directory (a tmp_path names the test that made it). Another
session's processes (a second pytest on the machine) match none of the three.

Load it with `-p leakcheck` (tests/ on sys.path) or import its hooks into a conftest.py.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import proctable
import pytest

#: Seconds a leaked process gets between SIGTERM and SIGKILL.
GRACE_ENV = "PYTEST_LEAKCHECK_GRACE_S"

#: Holds this session's token, and those of the sessions around it (a pytest run by a test).
ENV = "PYTEST_LEAKCHECK_SESSIONS"

# Helpers that live as long as the interpreter and exit with it: not a test's doing.
_INTERPRETER_HELPERS = re.compile(r"multiprocessing\.(resource_tracker|forkserver)")


@dataclass
class _State:
    token: str
    before: set[tuple[int, int]]  # (pid, start time) of every process when the session began
    leaked: list[proctable.Proc] = field(default_factory=list)
    survivors: list[proctable.Proc] = field(default_factory=list)


_state = pytest.StashKey[_State]()


def _token() -> str:
    me = proctable.read(os.getpid())
    return f"{os.getpid()}.{me.stat.start_ticks if me else 0}"


def _under(base: str) -> re.Pattern[str]:
    """`base` itself or a path below it; never `base` + more characters (pytest-1 vs -12)."""
    return re.compile(re.escape(base) + r"(?![^/\s\"'=:,;])")


def pytest_sessionstart(session: pytest.Session) -> None:
    token = _token()
    outer = os.environ.get(ENV, "")
    os.environ[ENV] = f"{outer}:{token}" if outer else token
    before = {p.key for p in proctable.snapshot().values()}
    session.config.stash[_state] = _State(token, before)


def _base_temp(config: pytest.Config) -> str | None:
    """The session's base temp directory, if a test asked for one (None: nothing lies there)."""
    factory = getattr(config, "_tmp_path_factory", None)  # set by pytest's tmp_path plugin
    if factory is None or getattr(factory, "_basetemp", None) is None:
        return None
    return str(Path(factory.getbasetemp()).resolve())


def leaked_processes(config: pytest.Config) -> list[proctable.Proc]:
    """The processes this session started that are still alive (the rules in the docstring)."""
    state = config.stash.get(_state, None)
    if state is None:
        return []
    procs = proctable.snapshot()
    me = os.getpid()
    spared = proctable.ancestors(procs, me) | {me}
    mine = proctable.descendants(procs, me)
    base = _base_temp(config)
    under = _under(base) if base else None
    found: list[proctable.Proc] = []
    for pid, proc in sorted(procs.items()):
        if pid in spared or proc.key in state.before or proc.stat.state in ("Z", "X"):
            continue
        if _INTERPRETER_HELPERS.search(proc.cmdline):
            continue
        tokens = (proctable.environ_value(pid, ENV) or "").split(":")
        in_base = under is not None and bool(
            under.search(proc.cmdline) or under.search(proc.cwd or "")
        )
        if pid in mine or state.token in tokens or in_base:
            found.append(proc)
    return found


@pytest.hookimpl(trylast=True)  # after the runner's own sessionfinish has torn fixtures down
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    state = session.config.stash.get(_state, None)
    if state is None:
        return
    state.leaked = leaked_processes(session.config)
    if not state.leaked:
        return
    procs = proctable.snapshot()
    spared = proctable.ancestors(procs, os.getpid()) | {os.getpid()}
    # never signal the group pytest (or the shell above it) is in
    groups = {procs[pid].stat.pgid for pid in spared if pid in procs} | {os.getpgrp()}
    grace = float(os.environ.get(GRACE_ENV) or 5.0)
    state.survivors = proctable.stop(state.leaked, grace_s=grace, spare_groups=groups)
    if session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    state = terminalreporter.config.stash.get(_state, None)
    if state is None or not state.leaked:
        return
    tr = terminalreporter
    n = len(state.leaked)
    tr.write_sep("=", f"{n} process(es) left running by this run", red=True, bold=True)
    tr.write_line("A test or fixture started these and did not stop them; the run fails.")
    tr.write_line("Stopped now (process group SIGTERM, then SIGKILL):")
    for p in state.leaked:
        still = "  (STILL ALIVE after SIGKILL)" if p in state.survivors else ""
        tr.write_line(f"  pid {p.pid}{still}: {p.cmdline[:300]}")
        tr.write_line(f"      cwd {p.cwd or 'unreadable'}")
