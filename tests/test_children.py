"""children.py: SIGINT reaches a child even when pytest ignores it; a timeout stops the group."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import children
import proctable
import pytest

SHOW_SIGINT = (
    "import signal; h = signal.getsignal(signal.SIGINT); "
    "print({signal.SIG_IGN: 'ignored', signal.default_int_handler: 'KeyboardInterrupt'}.get(h, h))"
)


@pytest.fixture
def sigint_ignored() -> Iterator[None]:
    """This process as `nohup` or a shell's background job starts it: SIGINT ignored."""
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


def test_plain_popen_inherits_an_ignored_sigint(sigint_ignored: None) -> None:
    """The trap the helper exists for: Python leaves an inherited SIG_IGN in place."""
    out = subprocess.run([sys.executable, "-c", SHOW_SIGINT], capture_output=True, text=True)
    assert out.stdout.strip() == "ignored"


def test_started_children_get_the_default_sigint(sigint_ignored: None) -> None:
    with children.running([sys.executable, "-c", SHOW_SIGINT], stdout=subprocess.PIPE) as proc:
        out, _ = proc.communicate(timeout=60)
    assert out.decode().strip() == "KeyboardInterrupt"


def test_sigint_stops_a_started_child_although_this_process_ignores_it(
    sigint_ignored: None,
) -> None:
    code = "import sys, time; print('up', flush=True); time.sleep(600)"
    with children.running([sys.executable, "-c", code], stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stdout.readline() == b"up\n"
        proc.send_signal(signal.SIGINT)
        # an uncaught KeyboardInterrupt ends Python by SIGINT itself (a shell sees 130)
        assert proc.wait(timeout=60) == -signal.SIGINT


def test_a_timeout_stops_the_whole_group_with_sigterm_first(tmp_path: Path) -> None:
    """The grandchild would outlive `subprocess.run`'s SIGKILL of the child alone."""
    pid_file, got_term = tmp_path / "grandchild.pid", tmp_path / "got-sigterm"
    grandchild = (
        "import os, signal, sys, time\n"
        "def term(*_):\n"
        f"    open({str(got_term)!r}, 'w').close()\n"
        "    sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, term)\n"
        f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\n"
        "time.sleep(600)\n"
    )
    parent = (
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', sys.argv[1]])\n"
        f"while not __import__('os').path.exists({str(pid_file)!r}): time.sleep(0.01)\n"
        "time.sleep(600)\n"
    )
    with pytest.raises(subprocess.TimeoutExpired):
        children.run([sys.executable, "-c", parent, grandchild], timeout=10)
    stray = proctable.read(int(pid_file.read_text()))
    assert stray is not None  # it was up: the check below is not vacuous
    assert proctable.wait_gone([stray], timeout_s=60) == []  # SIGKILL is delivered, not instant
    assert got_term.exists()  # it was asked to stop before it was killed
