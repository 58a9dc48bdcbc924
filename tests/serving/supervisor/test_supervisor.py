"""`supervise` as the deploy step uses it over SSH: real CLI processes, real detached supervisors,
real children killed for real. No mocks; every test stops what it started, even on failure."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from agentctl.serving import supervisor

T = TypeVar("T")
PY = sys.executable
CLI = [PY, "-m", "agentctl.serving", "supervise"]

# Children take the state dir as a trailing argument: the fixture finds leftovers by it.
SLEEPER = "import os, time; print('hello from', os.getpid(), flush=True); time.sleep(300)"
FDS = """
import json, os, time
fds = {}
for fd in os.listdir('/proc/self/fd'):
    try:
        fds[fd] = os.readlink('/proc/self/fd/' + fd)
    except OSError:
        pass
print('FDS', json.dumps(fds), flush=True)
time.sleep(300)
"""


def sv(*args: str, timeout: float = 60) -> tuple[int, dict[str, Any]]:
    """Run `supervise ...` as the control side does; its stdout must be one JSON object."""
    res = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)
    lines = res.stdout.splitlines()
    assert len(lines) == 1, (res.returncode, res.stdout, res.stderr)
    return res.returncode, json.loads(lines[0])


def alive(pid: int) -> bool:
    """os.kill(pid, 0), except that a zombie counts as gone (this host's PID 1 never reaps)."""
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except (ProcessLookupError, FileNotFoundError):
        return False
    return stat[stat.rfind(b")") + 2 :][:1] not in (b"Z", b"X")


def wait_for(pred: Callable[[], T | None], timeout: float = 30.0, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def supervisors_of(name: str, state_dir: Path) -> list[int]:
    """Live supervisor daemons for NAME under state_dir, found by scanning /proc."""
    want = ["agentctl.serving.supervisor", "daemon", name, str(state_dir)]
    return [
        int(e.name)
        for e in os.scandir("/proc")
        if e.name.isdigit() and cmdline(int(e.name))[2:] == want and alive(int(e.name))
    ]


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """STATE_DIR; afterwards everything under it is stopped and any leftover process killed."""
    d = tmp_path / "state"
    yield d
    if d.exists():  # in-process: cleanup, not the thing under test
        for name in supervisor.service_names(d):
            supervisor.stop(supervisor.Paths(d.resolve(), name), timeout=2)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        argv = cmdline(int(entry.name))
        if any(str(t) in arg for arg in argv for t in (tmp_path, tmp_path.resolve())):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry.name), signal.SIGKILL)


def start(d: Path, name: str, script: str, *opts: str) -> tuple[int, dict[str, Any]]:
    return sv("start", name, "--dir", str(d), *opts, "--", PY, "-c", script, str(d))


def read(path: Path) -> str:
    """The file's text, or "" while it does not exist (pid files come and go, logs rotate)."""
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def log_text(d: Path, name: str) -> str:
    return read(d / f"{name}.log")


def test_start_logs_writes_valid_pid_files_and_leaks_no_descriptor(state_dir: Path) -> None:
    code, st = start(state_dir, "web", FDS)
    assert code == 0, st
    assert st["changed"] is True and st["running"] is True and st["state"] == "running"
    pid, sup = st["pid"], st["supervisor_pid"]
    assert alive(pid) and alive(sup)
    assert (state_dir / "web.pid").read_text().strip() == str(pid)
    assert (state_dir / "web.supervisor.pid").read_text().strip() == str(sup)
    stat = Path(f"/proc/{pid}/stat").read_bytes()
    ppid, pgid = (int(x) for x in stat[stat.rfind(b")") + 2 :].split()[1:3])
    assert ppid == sup and pgid == pid  # ours, in its own process group
    line = wait_for(
        lambda: next(
            (ln for ln in log_text(state_dir, "web").splitlines() if ln.startswith("FDS ")), ""
        ),
        what="the child's output in the log",
    )
    fds = json.loads(line.split(" ", 1)[1])
    own = {fd: target for fd, target in fds.items() if not target.startswith("/proc/")}
    assert set(own) == {"0", "1", "2"}, fds  # nothing leaked: not the lock, not the log
    assert own["0"] == "/dev/null" and own["1"] == own["2"] and own["1"].startswith("pipe:")

    code, again = sv("status", "web", "--dir", str(state_dir))
    assert code == 0 and again["pid"] == pid and again["supervisor_pid"] == sup

    code, same = start(state_dir, "web", FDS)
    assert code == 0 and same["changed"] is False
    assert (same["pid"], same["supervisor_pid"]) == (pid, sup)

    code, other = start(state_dir, "web", SLEEPER)
    assert code == 0 and other["changed"] is True and other["reason"] == "command changed"
    assert other["pid"] != pid and other["supervisor_pid"] != sup
    assert not alive(pid) and not alive(sup)
    assert supervisors_of("web", state_dir) == [other["supervisor_pid"]]


def test_killed_child_is_restarted_within_the_backoff(state_dir: Path) -> None:
    _, st = start(state_dir, "web", SLEEPER)
    os.kill(st["pid"], signal.SIGKILL)
    pid_file = state_dir / "web.pid"
    wait_for(
        lambda: read(pid_file).strip() not in ("", str(st["pid"])),
        timeout=5,
        what="a new child",
    )
    code, after = sv("status", "web", "--dir", str(state_dir))
    assert code == 0 and after["running"] and after["pid"] != st["pid"]
    assert after["restarts"] == 1 and after["supervisor_pid"] == st["supervisor_pid"]
    assert after["last_exit"]["signal"] == "SIGKILL" and after["last_exit"]["code"] is None
    assert after["backoff_s"] == 0.5
    wait_for(lambda: f"hello from {after['pid']}" in log_text(state_dir, "web"), what="output")


def test_on_failure_backs_off_exponentially_up_to_the_max(state_dir: Path) -> None:
    code, _ = start(
        state_dir, "crash", "raise SystemExit(1)", "--restart", "on-failure", "--backoff-max", "1.5"
    )
    assert code == 0
    delays: list[float] = []

    def third_delay() -> bool:  # sample the record itself: a CLI call may be slower than 0.5 s
        s = json.loads((state_dir / "crash.json").read_text())
        if s["backoff_s"] is not None and (not delays or delays[-1] != s["backoff_s"]):
            delays.append(s["backoff_s"])
        return len(delays) >= 3

    wait_for(third_delay, what="three restart delays")
    _, st = sv("status", "crash", "--dir", str(state_dir))
    assert delays[:3] == [0.5, 1.0, 1.5]  # doubled, then capped by --backoff-max
    assert st["restarts"] >= 2 and st["last_exit"]["code"] == 1
    assert st["state"] in ("backoff", "running") and st["supervisor_pid"]
    code, out = sv("stop", "crash", "--dir", str(state_dir))  # mid-backoff: nothing to signal
    assert code == 0 and out["changed"] is True and out["state"] == "stopped"
    assert not alive(st["supervisor_pid"])

    code, ok = start(state_dir, "done", "pass", "--restart", "on-failure")
    assert code == 0
    wait_for(lambda: not alive(ok["supervisor_pid"]), what="the supervisor to finish")
    code, st = sv("status", "done", "--dir", str(state_dir))
    assert code == 3 and st["state"] == "stopped"
    assert st["last_exit"]["code"] == 0 and st["restarts"] == 0  # success is not restarted


@pytest.mark.parametrize(("exit_code", "state"), [(1, "failed"), (0, "stopped")])
def test_restart_never_leaves_it_down(state_dir: Path, exit_code: int, state: str) -> None:
    code, st = start(state_dir, "once", f"raise SystemExit({exit_code})", "--restart", "never")
    assert code == 0
    wait_for(lambda: not alive(st["supervisor_pid"]), what="the supervisor to finish")
    code, after = sv("status", "once", "--dir", str(state_dir))
    assert code == 3 and after["state"] == state and after["running"] is False
    assert after["restarts"] == 0 and after["last_exit"]["code"] == exit_code
    assert not (state_dir / "once.pid").exists()
    assert not (state_dir / "once.supervisor.pid").exists()


def test_stop_kills_the_whole_group_even_when_sigterm_is_ignored(state_dir: Path) -> None:
    script = (
        "import signal, subprocess, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "sleep = 'import time; time.sleep(300)'\n"
        "g = subprocess.Popen([sys.executable, '-c', sleep, sys.argv[1]])\n"
        "print('grandchild', g.pid, flush=True)\n"
        "time.sleep(300)\n"
    )
    _, st = start(state_dir, "stubborn", script)

    def grandchild_pid() -> int | None:
        # a whole line: the log may be read while the supervisor is half-way through writing it
        found = re.search(r"^grandchild (\d+)\n", log_text(state_dir, "stubborn"), re.MULTILINE)
        return int(found.group(1)) if found else None

    grandchild = wait_for(grandchild_pid, what="the grandchild's pid in the log")
    assert alive(grandchild)

    code, out = sv("stop", "stubborn", "--dir", str(state_dir), "--timeout", "1")
    assert code == 0 and out["changed"] is True and out["state"] == "stopped"
    for pid in (st["pid"], grandchild, st["supervisor_pid"]):
        assert not alive(pid), pid
    assert not (state_dir / "stubborn.pid").exists()
    assert not (state_dir / "stubborn.supervisor.pid").exists()
    # SIGTERM first, SIGKILL only once the timeout ran out (the log says so; no stopwatch)
    log = log_text(state_dir, "stubborn")
    term = log.index(f"sending SIGTERM to process group {st['pid']}")
    kill = log.index(f"process group {st['pid']} still alive after 1 s: SIGKILL")
    assert term < kill

    code, again = sv("stop", "stubborn", "--dir", str(state_dir))
    assert code == 0 and again["changed"] is False and again["state"] == "stopped"
    code, _ = sv("status", "stubborn", "--dir", str(state_dir))
    assert code == 3


def test_stale_pid_files_are_reported_and_never_signalled(state_dir: Path) -> None:
    state_dir.mkdir()
    unrelated = subprocess.Popen(["sleep", "300"])
    try:
        (state_dir / "web.supervisor.pid").write_text(f"{os.getpid()}\n")  # this very test
        (state_dir / "web.pid").write_text(f"{unrelated.pid}\n")
        (state_dir / "web.json").write_text(
            json.dumps({"state": "running", "pid": unrelated.pid, "pid_token": 1, "command": []})
        )
        code, st = sv("status", "web", "--dir", str(state_dir))
        assert code == 3 and st["running"] is False
        assert st["pid"] is None and st["supervisor_pid"] is None and st["orphan_pid"] is None
        assert sorted(st["stale_pid_files"]) == ["web.pid", "web.supervisor.pid"]

        code, out = sv("stop", "web", "--dir", str(state_dir))
        assert code == 0 and out["changed"] is False
        assert unrelated.poll() is None and alive(unrelated.pid)
        assert not (state_dir / "web.pid").exists()

        code, st = start(state_dir, "web", SLEEPER)
        assert code == 0 and st["running"] is True and st["stale_pid_files"] == []
        assert unrelated.poll() is None
    finally:
        unrelated.kill()
        unrelated.wait()


def test_child_of_a_killed_supervisor_is_reported_and_replaced(state_dir: Path) -> None:
    _, st = start(state_dir, "web", SLEEPER)
    # the child's greeting must be through the pipe before the supervisor dies: a child that
    # writes to a dead supervisor gets EPIPE and exits, and there is no orphan to report
    log = state_dir / "web.log"
    wait_for(lambda: log.exists() and f"hello from {st['pid']}" in log.read_text())
    os.kill(st["supervisor_pid"], signal.SIGKILL)
    wait_for(lambda: not alive(st["supervisor_pid"]))
    code, after = sv("status", "web", "--dir", str(state_dir))
    assert code == 3 and after["state"] == "failed" and after["orphan_pid"] == st["pid"]
    code, new = start(state_dir, "web", SLEEPER)
    assert code == 0 and new["changed"] is True and new["pid"] != st["pid"]
    assert not alive(st["pid"])  # the orphan was ours (start time matched), so it was ended


def test_supervisor_survives_its_callers_session_ending(state_dir: Path) -> None:
    argv = [*CLI, "start", "web", "--dir", str(state_dir), "--", PY, "-c", SLEEPER, str(state_dir)]
    shell = subprocess.Popen(
        ["bash", "-c", '"$@" >/dev/null; exec sleep 300', "bash", *argv], start_new_session=True
    )
    try:
        wait_for(lambda: cmdline(shell.pid)[:1] == ["sleep"], what="start to return")
        _, st = sv("status", "web", "--dir", str(state_dir))
        assert st["running"] is True
        os.killpg(shell.pid, signal.SIGHUP)  # what sshd does when the session closes
        os.killpg(shell.pid, signal.SIGKILL)
    finally:
        shell.kill()
        shell.wait()
    time.sleep(0.2)
    code, after = sv("status", "web", "--dir", str(state_dir))
    assert code == 0 and after["running"] is True
    assert (after["pid"], after["supervisor_pid"]) == (st["pid"], st["supervisor_pid"])
    assert os.getsid(after["supervisor_pid"]) not in (shell.pid, os.getsid(0))


def test_env_values_reach_the_child_but_no_file(state_dir: Path) -> None:
    secret = "s3cr3t-Value-42"
    digest = hashlib.sha256(secret.encode()).hexdigest()  # the command must not hold it either
    script = (
        "import hashlib, os, time\n"
        "ok = hashlib.sha256(os.environ['TOKEN'].encode()).hexdigest() == os.environ['DIGEST']\n"
        "print('token ok:', ok, flush=True)\n"
        "time.sleep(300)\n"
    )
    code, st = start(
        state_dir, "web", script, "--env", f"TOKEN={secret}", "--env", f"DIGEST={digest}"
    )
    assert code == 0 and st["env_keys"] == ["DIGEST", "TOKEN"]
    wait_for(lambda: "token ok: True" in log_text(state_dir, "web"), what="the child's check")
    for path in state_dir.iterdir():
        assert secret not in path.read_text(errors="replace"), path
    assert secret not in json.dumps(st)
    assert not any(secret in arg for arg in cmdline(st["supervisor_pid"]))  # not in `ps`

    code, same = start(
        state_dir, "web", script, "--env", f"TOKEN={secret}", "--env", f"DIGEST={digest}"
    )
    assert code == 0 and same["changed"] is False
    code, new = start(
        state_dir, "web", script, "--env", "TOKEN=rotated", "--env", f"DIGEST={digest}"
    )
    assert code == 0 and new["changed"] is True and new["reason"] == "--env values changed"


def test_concurrent_starts_make_one_supervisor(state_dir: Path) -> None:
    argv = [*CLI, "start", "web", "--dir", str(state_dir), "--", PY, "-c", SLEEPER, str(state_dir)]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for _ in range(5)]
    outs = [json.loads(p.communicate(timeout=60)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert sorted(o["changed"] for o in outs) == [False, False, False, False, True]
    assert len({o["supervisor_pid"] for o in outs}) == 1
    assert supervisors_of("web", state_dir) == [outs[0]["supervisor_pid"]]


def test_restart_replaces_the_child_under_the_same_supervisor(state_dir: Path) -> None:
    _, st = start(state_dir, "web", SLEEPER)
    code, out = sv("restart", "web", "--dir", str(state_dir))
    assert code == 0 and out["changed"] is True and out["running"] is True
    assert out["pid"] != st["pid"] and out["supervisor_pid"] == st["supervisor_pid"]
    assert out["restarts"] == 0 and out["last_exit"]["signal"] == "SIGTERM"
    assert not alive(st["pid"])
    sv("stop", "web", "--dir", str(state_dir))
    code, out = sv("restart", "web", "--dir", str(state_dir))
    assert code == 3 and "error" in out


def test_log_rotates_and_keeps_the_configured_backups(state_dir: Path) -> None:
    script = (
        "import time\n"
        "for i in range(200): print(f'{i:04d}', 'x' * 95, flush=True)\n"
        "print('DONE', flush=True); time.sleep(300)\n"
    )
    start(state_dir, "chatty", script, "--log-max-bytes", "2000", "--log-backups", "2")
    wait_for(lambda: "\nDONE\n" in log_text(state_dir, "chatty"), what="the last line")
    logs = sorted(p.name for p in state_dir.glob("chatty.log*"))
    assert logs == ["chatty.log", "chatty.log.1", "chatty.log.2"]
    for name in logs:
        assert (state_dir / name).stat().st_size <= 2000
    lines = (state_dir / "chatty.log.1").read_text().splitlines()
    assert lines and all(len(ln) == 100 or "supervisor" in ln for ln in lines)  # whole lines


def test_usage_errors_and_unknown_services(state_dir: Path) -> None:
    code, out = sv("start", "web", "--dir", str(state_dir), PY)  # no `--`
    assert code == 2 and "error" in out
    code, out = sv("start", "../web", "--dir", str(state_dir), "--", PY)
    assert code == 2 and "bad service name" in out["error"]
    code, out = sv("status", "ghost", "--dir", str(state_dir))
    assert code == 3 and out["state"] == "stopped" and out["running"] is False
    code, out = sv("start", "ghost", "--dir", str(state_dir), "--", str(state_dir / "missing"))
    assert code == 1 and out["state"] == "failed" and "No such file" in out["error"]
    assert out["supervisor_pid"] is None and supervisors_of("ghost", state_dir) == []
    code, out = sv("status", "--all", "--dir", str(state_dir))
    assert code == 3 and [s["name"] for s in out["services"]] == ["ghost"]
