"""Child processes for tests: each in a process group of its own, stopped as a group.

Why not plain `subprocess`: `Popen.kill()` and `subprocess.run(timeout=)` SIGKILL one process,
so whatever it started (ssh sessions, servers, a `sleep`) keeps running after a failed test;
and agentctl's CLI stops cleanly on SIGTERM, which a bare SIGKILL never gives it the chance to.

SIGINT: a shell starts background jobs (and `nohup` starts commands) with SIGINT ignored, and
an ignored signal stays ignored across fork and exec; Python does not even install its
KeyboardInterrupt handler then. A test that sends SIGINT to a child must not depend on how
pytest was started, so `start()` resets SIGINT to its default in the child (`sigint=True`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

# exec()s its arguments with SIGINT back at its default (a Python wrapper: a POSIX shell
# cannot undo a SIGINT ignored on entry)
_DEFAULT_SIGINT = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execvp(sys.argv[1], sys.argv[1:])"
)


def with_default_sigint(argv: Sequence[str]) -> list[str]:
    """`argv`, run with SIGINT at its default disposition whatever this process has."""
    return [sys.executable, "-c", _DEFAULT_SIGINT, *argv]


def start(argv: Sequence[str], *, sigint: bool = True, **kw: Any) -> subprocess.Popen[Any]:
    """Popen in a new session (its own process group), SIGINT at default unless `sigint=False`."""
    full = with_default_sigint(argv) if sigint else list(argv)
    return subprocess.Popen(full, start_new_session=True, **kw)


def _killpg(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _exited(proc: subprocess.Popen[Any]) -> bool:
    """Whether the child has exited, without reaping it: while it is a zombie its pid, and so
    its process group id, cannot be reused, and signalling the group stays safe."""
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def stop(
    proc: subprocess.Popen[Any],
    *,
    first: signal.Signals | None = signal.SIGTERM,
    grace_s: float = 10.0,
) -> int:
    """`first` to the child's group, up to `grace_s` for the child to exit, then SIGKILL to
    the group (the child if it ignored `first`, and anything it left behind); reaps the child.
    `first=None`: the caller has already asked it to stop.

    For a child from `start()` (its pid is its process group id)."""
    if proc.returncode is None:
        if first is not None:
            _killpg(proc.pid, first)
        deadline = time.monotonic() + grace_s
        while not _exited(proc) and time.monotonic() < deadline:
            time.sleep(0.02)
        _killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):  # its pipes may stay open elsewhere
        proc.communicate(timeout=10)
    return proc.wait()


@contextlib.contextmanager
def running(argv: Sequence[str], **kw: Any) -> Iterator[subprocess.Popen[Any]]:
    """`start()`, and `stop()` on the way out whatever happened (a test failing included)."""
    proc = start(argv, **kw)
    try:
        yield proc
    finally:
        stop(proc)


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    input: str | bytes | None = None,
    capture_output: bool = False,
    check: bool = False,
    **kw: Any,
) -> subprocess.CompletedProcess[Any]:
    """`subprocess.run`, but past `timeout` the whole group gets SIGTERM, then SIGKILL, and
    TimeoutExpired is raised with what the child printed so far."""
    if input is not None:
        kw["stdin"] = subprocess.PIPE
    if capture_output:
        kw["stdout"] = kw["stderr"] = subprocess.PIPE
    proc = start(argv, sigint=False, **kw)
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        stop(proc, grace_s=5.0)
        raise subprocess.TimeoutExpired(proc.args, timeout, exc.output, exc.stderr) from None
    except BaseException:
        stop(proc, grace_s=5.0)
        raise
    res = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    if check:
        res.check_returncode()
    return res
