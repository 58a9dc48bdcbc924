"""The leak check (leakcheck.py) on a real pytest run: strays it must find, kill and report.

Each case runs pytest in a subprocess on a generated test file with the plugin loaded (`-p
leakcheck`), and the inner test leaves a process running. The outer test then checks the
inner run failed, named the process, and that the process is dead.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import proctable
import pytest
from leakcheck import ENV, GRACE_ENV

TESTS = Path(__file__).parent

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")

STRAYS = '''
import os, subprocess, sys, textwrap

PIDS = os.environ["LEAK_PIDS"]


def daemon(name, setup, **kw):
    """Double fork and setsid: the stray's parent is PID 1 (or a subreaper), not pytest. The
    first process returns once the stray has written its pid file."""
    script = textwrap.dedent("""
        import os, signal, sys, time
        r, w = os.pipe()
        if os.fork():
            os.read(r, 1)
            os._exit(0)
        os.setsid()
        if os.fork():
            os._exit(0)
        SETUP
        open(sys.argv[1], "w").write(str(os.getpid()))
        os.write(w, b"up")
        time.sleep(600)
    """).replace("SETUP", setup)
    subprocess.run([sys.executable, "-c", script, os.path.join(PIDS, name)], check=True, **kw)


def test_child_in_its_own_session():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                             start_new_session=True)
    open(os.path.join(PIDS, "child"), "w").write(str(child.pid))


def test_daemon_with_the_inherited_environment():
    daemon("daemon", "os.chdir('/')")


def test_daemon_under_tmp_path_with_a_scrubbed_environment_ignoring_sigterm(tmp_path):
    daemon("stubborn", "signal.signal(signal.SIGTERM, signal.SIG_IGN)", cwd=tmp_path, env={})
'''

CLEAN = """
import subprocess, sys

def test_stops_what_it_starts(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], cwd=tmp_path)
    proc.terminate()
    proc.wait()
"""


def _inner_pytest(tmp_path: Path, source: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    project = tmp_path / "inner"
    pids = tmp_path / "pids"
    project.mkdir()
    pids.mkdir()
    (project / "pytest.ini").write_text("[pytest]\n")  # not the repository's options
    (project / "test_inner.py").write_text(textwrap.dedent(source))
    env = dict(os.environ, PYTHONPATH=str(TESTS), LEAK_PIDS=str(pids), **{GRACE_ENV: "1"})
    argv = [sys.executable, "-m", "pytest", "-p", "leakcheck", "-p", "no:cacheprovider"]
    argv += ["-q", "--basetemp", str(tmp_path / "basetemp"), "test_inner.py"]
    res = subprocess.run(argv, cwd=project, env=env, capture_output=True, text=True, timeout=240)
    return res, pids


def _strays(pids: Path) -> dict[str, proctable.Proc]:
    found = {}
    for f in pids.iterdir():
        proc = proctable.read(int(f.read_text()))
        if proc is not None:
            found[f.name] = proc
    return found


def test_a_run_that_leaves_processes_fails_names_them_and_kills_them(tmp_path: Path) -> None:
    res, pids = _inner_pytest(tmp_path, STRAYS)
    try:
        out = res.stdout + res.stderr
        assert "3 passed" in out, out  # every inner test passed ...
        assert res.returncode == pytest.ExitCode.TESTS_FAILED, out  # ... and still the run fails
        assert "3 process(es) left running by this run" in out, out
        written = {f.name: int(f.read_text()) for f in pids.iterdir()}
        assert set(written) == {"child", "daemon", "stubborn"}, out
        for pid in written.values():
            assert f"pid {pid}:" in out, out
        assert not [p for p in _strays(pids).values() if proctable.alive(p)], out
        assert "STILL ALIVE" not in out
    finally:  # the check under test failed: stop them here, not 55 minutes later
        for proc in _strays(pids).values():
            if proctable.alive(proc):
                os.kill(proc.pid, signal.SIGKILL)


def test_a_run_that_stops_its_processes_passes(tmp_path: Path) -> None:
    res, _ = _inner_pytest(tmp_path, CLEAN)
    out = res.stdout + res.stderr
    assert res.returncode == pytest.ExitCode.OK, out
    assert "left running" not in out, out


def test_this_session_has_a_token() -> None:
    """Children inherit it; a pytest started by a test appends its own (`outer:inner`)."""
    assert os.environ.get(ENV), "the leak check is not loaded by tests/conftest.py"
    me = proctable.read(os.getpid())
    assert me is not None
    assert f"{os.getpid()}.{me.stat.start_ticks}" in os.environ[ENV].split(":")


def test_parse_stat_survives_a_command_name_with_spaces_and_parentheses() -> None:
    fields = " ".join(str(n) for n in range(4, 53))  # ppid=4, pgrp=5, session=6, start=22
    stat = proctable.parse_stat(f"4242 (a) (b c)) S {fields}")
    assert (stat.state, stat.ppid, stat.pgid, stat.sid, stat.start_ticks) == ("S", 4, 5, 6, 22)
