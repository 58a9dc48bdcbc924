"""Service supervisor for hosts without systemd: `python -m agentctl.serving supervise ...`.

agentctl runs the serving stack (router, engine workers) as services. Where systemd is PID 1 the
deploy step writes units; elsewhere (containers, test hosts) it falls back to this: one small
detached supervisor process per service that starts the command, logs its output, restarts it
when it exits and records its state in files a later SSH call can read. Standard library only,
since `serving/` is deployed alone onto the nodes.

Commands (each prints one JSON object on stdout; see "Status" below)::

    supervise start NAME --dir STATE_DIR [--env K=V ...] [--cwd DIR]
        [--restart always|on-failure|never] [--backoff-max S] [--timeout S]
        [--log-max-bytes N] [--log-backups N] -- CMD ARGS...
    supervise stop (NAME | --all) --dir STATE_DIR [--timeout S]
    supervise status (NAME | --all) --dir STATE_DIR
    supervise restart NAME --dir STATE_DIR [--timeout S]

`start` is idempotent: when NAME already runs under STATE_DIR with the same specification
(command, --cwd, --env keys and values, --restart, --backoff-max, log settings) it changes
nothing (`"changed": false`); with a different one it stops the old instance and starts the new
one. Otherwise it daemonizes a supervisor (double fork, setsid, stdin/stdout/stderr on
/dev/null, re-exec as `python -m agentctl.serving.supervisor daemon NAME STATE_DIR`) so it
survives the SSH session, and returns once the child has been started (not once it is healthy:
health checks are the caller's job). The child runs in `--cwd` (default `/`, as under
systemd), in its own process group, with stdin on /dev/null, stdout and stderr on a pipe to
the supervisor and no other descriptor, and the caller's environment plus `--env`. `restart`
returns once the new child has been started.

Exit codes: 0 done; 1 failed (start: the command could not be executed); 2 usage error; 3 not
running: `status` exits 0 only when `running` is true (a service in `backoff` exits 3), and
`restart` exits 3 when the service's supervisor is not running. `stop` is idempotent: exit 0,
`"changed": false` when there was nothing to stop.

Files in STATE_DIR (writes are atomic: a temporary file renamed over the old one):

- `NAME.json`: the record: specification, state, pids, restart count, last exit. It holds the
  names of the `--env` variables, never their values (they may be secrets): the values live only
  in the supervisor's environment block (`/proc/PID/environ`, readable by the same user only,
  like the child's), which is where `start` compares them.
- `NAME.supervisor.pid`, `NAME.pid`: the supervisor's and the child's pid (just the number).
  Neither is trusted blindly: the supervisor must have our daemon command line in
  /proc/PID/cmdline, the child the /proc start time recorded in NAME.json, and zombies count as
  gone, so a stale file or a reused pid is reported and never signalled (signals go through a
  pidfd opened before the check, where the kernel has pidfds).
- `NAME.log` (+ `.1` ... `.N`): the child's stdout and stderr, and the supervisor's own lines
  (prefixed `supervisor[PID]:`), rotated at line ends when over --log-max-bytes (10 MiB),
  keeping --log-backups (3). Give Python children `--env PYTHONUNBUFFERED=1`: stdout is a pipe.
- `NAME.lock`: fcntl lock held by start/stop/restart, so two calls never race (two concurrent
  starts make one supervisor). `NAME.request`: the stop/restart timeout for the supervisor.

Signals to the supervisor: SIGTERM or SIGINT stops the service: SIGTERM to the child's process
group, up to the timeout (stop's --timeout, else 10 s) for the group to exit, then SIGKILL; the
supervisor then removes the pid files, records `stopped` and exits. SIGHUP restarts the child
the same way and resets the backoff (what `restart` sends: the supervisor keeps the --env values,
so `restart` needs it running; a stopped service is started again with `start`).

Restart policy (--restart): `always` restarts on every exit, `on-failure` on a non-zero exit or
a signal, `never` not at all. Restarts wait with exponential backoff: 0.5 s, 1 s, 2 s, ... up to
--backoff-max (30 s), back to 0.5 s once a child has run for 60 s. When the child exits and
stays down the supervisor records `stopped` (exit 0) or `failed` and exits. Processes the child
left in its process group are terminated when it exits. If the command cannot be executed at
`start`, the supervisor records `failed` and `start` exits 1; on later restarts that counts as
an exit with status 127 under the policy.

Status (`status NAME`, and every other command's output): `name`, `dir`, `state` (`running`,
`backoff`: waiting to restart, `stopped`, `failed`), `running` (the child is up and
supervised), `pid`, `supervisor_pid` (verified, else null), `orphan_pid` (a child left behind by
a supervisor that was killed), `command`, `cwd`, `env_keys`, `restart`, `backoff_max_s`,
`log_max_bytes`, `log_backups`, `started_at` (the supervisor, ISO 8601 UTC), `child_started_at`,
`uptime_s` (the child's), `restarts` (automatic restarts; `restart` does not count), `backoff_s`
(the delay before the latest automatic restart), `next_start_at` (in backoff), `last_exit`
(`{"code", "signal", "at", "error"}` or null), `reason` (why it is in that state),
`stale_pid_files`, `log`; start/stop/restart add `changed`, and a failure adds `error`.
`status --all` prints `{"dir", "services": [...]}` and exits 0 only when every service runs.

Caveat: supervisors are re-parented to PID 1 when `start` exits, and a PID 1 that does not reap
(some containers) keeps them as zombies after they exit; they hold no resources but a pid.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

__all__ = [
    "Paths",
    "add_arguments",
    "inspect",
    "restart_service",
    "run_cli",
    "service_names",
    "start",
    "status",
    "stop",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_RUNNING = 3

RESTART_POLICIES = ("always", "on-failure", "never")
BACKOFF_INITIAL_S = 0.5
BACKOFF_RESET_AFTER_S = 60.0
DEFAULT_BACKOFF_MAX_S = 30.0
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_LOG_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_LOG_BACKUPS = 3
LEFTOVER_GRACE_S = 5.0
START_WAIT_S = 30.0
LOCK_WAIT_S = 120.0

DAEMON_MODULE = "agentctl.serving.supervisor"
ENV_SPEC = "AGENTCTL_SUPERVISE_SPEC"
ENV_NOTIFY_FD = "AGENTCTL_SUPERVISE_NOTIFY_FD"
ENV_VALUE_PREFIX = "AGENTCTL_SUPERVISE_ENV_"
INTERNAL_ENV_PREFIX = "AGENTCTL_SUPERVISE_"

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_@-]{0,63}")
SPEC_KEYS = (
    "command",
    "cwd",
    "env_keys",
    "restart",
    "backoff_max_s",
    "log_max_bytes",
    "log_backups",
)


class UsageError(Exception):
    """Bad input on the command line: exit 2."""


# ---- files ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Paths:
    """Every file of one service under its state directory."""

    dir: Path
    name: str

    def _p(self, suffix: str) -> Path:
        return self.dir / f"{self.name}{suffix}"

    @property
    def record(self) -> Path:
        return self._p(".json")

    @property
    def pid(self) -> Path:
        return self._p(".pid")

    @property
    def supervisor_pid(self) -> Path:
        return self._p(".supervisor.pid")

    @property
    def log(self) -> Path:
        return self._p(".log")

    @property
    def lock(self) -> Path:
        return self._p(".lock")

    @property
    def request(self) -> Path:
        return self._p(".request")


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_iso(value: object) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _write_atomic(path: Path, text: str) -> None:
    """Write to a private temporary name, then rename: readers see the old or the new file."""
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() and int(text) > 0 else None


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True


# ---- processes ------------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, process group, start time in clock ticks since boot) from /proc/PID/stat."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rfind(b")") + 2 :].split()
    try:
        return fields[0].decode(), int(fields[2]), int(fields[19])
    except (IndexError, ValueError):
        return None


def _alive(pid: int) -> bool:
    """The process exists and is not a zombie (a zombie holds a pid, nothing else)."""
    stat = _proc_stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def _start_ticks(pid: int) -> int | None:
    stat = _proc_stat(pid)
    return None if stat is None or stat[0] in ("Z", "X") else stat[2]


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [os.fsdecode(part) for part in raw.split(b"\0")[:-1]]


def _daemon_args(name: str, state_dir: Path) -> list[str]:
    """The supervisor's argv after the interpreter: what identifies it in /proc/PID/cmdline."""
    return ["-m", DAEMON_MODULE, "daemon", name, str(state_dir)]


def _is_our_supervisor(pid: int, name: str, state_dir: Path) -> bool:
    argv = _cmdline(pid)
    return argv is not None and argv[1:] == _daemon_args(name, state_dir) and _alive(pid)


def _read_environ(pid: int) -> dict[str, str] | None:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return None
    out: dict[str, str] = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            out[os.fsdecode(key)] = os.fsdecode(value)
    return out


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group `pgid`."""
    members = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat is not None and stat[1] == pgid and stat[0] not in ("Z", "X"):
                members.append(int(entry.name))
    return members


def _kill_verified(pid: int, signum: int, verify: Callable[[], bool]) -> bool:
    """Signal `pid` only if `verify()` holds. Through a pidfd where the kernel has them, so the
    check and the signal reach the same process even if the pid is reused in between."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except OSError:  # no pidfd here (old kernel, seccomp): check, then kill
        if not verify():
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
        return True
    try:
        if not verify():
            return False
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signum)
        return True
    finally:
        os.close(pidfd)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def _wait_gone(check: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    """Poll `check()` (True while the thing still exists) until False or timeout."""
    deadline = time.monotonic() + timeout
    while check():
        if time.monotonic() >= deadline:
            return False
        time.sleep(step)
    return True


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)


# ---- inspection (the CLI side) ---------------------------------------------------------------


@dataclass
class Inspection:
    """What the files say, checked against /proc."""

    paths: Paths
    record: dict[str, Any] | None
    supervisor_pid: int | None
    child_pid: int | None
    child_token: int | None = None
    stale: list[str] = field(default_factory=list)

    def is_supervisor(self, pid: int) -> Callable[[], bool]:
        return lambda: _is_our_supervisor(pid, self.paths.name, self.paths.dir)

    def status(self) -> dict[str, Any]:
        rec = dict(self.record or {})
        rec_state = rec.get("state")
        if self.supervisor_pid is not None:
            state = rec_state if rec_state in ("running", "backoff") else "running"
            reason = rec.get("reason")
        elif self.record is None:
            state, reason = "stopped", "no such service under this directory"
        elif rec_state in ("stopped", "failed"):
            state, reason = rec_state, rec.get("reason")
        else:
            state, reason = "failed", "the supervisor is gone (killed?)"
        orphan = self.child_pid if self.supervisor_pid is None else None
        if orphan is not None:
            reason = f"{reason}; its child {orphan} still runs unsupervised"
        pid = self.child_pid if self.supervisor_pid is not None else None
        running = state == "running" and pid is not None
        started = _parse_iso(rec.get("child_started_at"))
        out: dict[str, Any] = {
            "name": self.paths.name,
            "dir": str(self.paths.dir),
            "state": state,
            "running": running,
            "pid": pid,
            "supervisor_pid": self.supervisor_pid,
            "orphan_pid": orphan,
            "reason": reason,
            "stale_pid_files": self.stale,
            "log": str(self.paths.log),
            "uptime_s": round(time.time() - started, 3) if running and started else None,
        }
        for key in (
            *SPEC_KEYS,
            "started_at",
            "child_started_at",
            "restarts",
            "backoff_s",
            "next_start_at",
            "last_exit",
        ):
            out[key] = rec.get(key)
        if state not in ("running", "backoff"):
            out["next_start_at"] = None
        return out


def inspect(paths: Paths) -> Inspection:
    """Read a service's files and verify every pid in them (never trusting a pid file)."""
    record = _read_json(paths.record)
    stale: list[str] = []
    sup = _read_pid(paths.supervisor_pid)
    if sup is not None and not _is_our_supervisor(sup, paths.name, paths.dir):
        sup = None
    if sup is None and paths.supervisor_pid.exists():
        stale.append(paths.supervisor_pid.name)
    child = token = None
    if record is not None and isinstance(record.get("pid"), int):
        pid = int(record["pid"])
        token = record.get("pid_token")
        if isinstance(token, int) and _start_ticks(pid) == token:
            child = pid
    file_pid = _read_pid(paths.pid)
    if paths.pid.exists() and (file_pid is None or file_pid != child):
        stale.append(paths.pid.name)
    return Inspection(paths, record, sup, child, token if child else None, stale)


def status(state_dir: str | Path, name: str) -> dict[str, Any]:
    """The JSON status of one service (what `supervise status NAME` prints)."""
    return inspect(_paths(state_dir, name)).status()


def _paths(state_dir: str | Path, name: str) -> Paths:
    if not NAME_RE.fullmatch(name):
        raise UsageError(f"bad service name {name!r}: letters, digits, _ @ - (at most 64)")
    return Paths(Path(os.path.realpath(state_dir)), name)


def service_names(state_dir: Path) -> list[str]:
    """Every service with files under state_dir."""
    names: set[str] = set()
    with contextlib.suppress(FileNotFoundError):
        for entry in os.scandir(state_dir):
            for suffix in (".supervisor.pid", ".json"):
                if entry.name.endswith(suffix):
                    stem = entry.name[: -len(suffix)]
                    if NAME_RE.fullmatch(stem):
                        names.add(stem)
    return sorted(names)


@contextlib.contextmanager
def _locked(paths: Paths, timeout: float = LOCK_WAIT_S) -> Iterator[None]:
    fd = os.open(paths.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(f"{paths.lock} is held by another call") from None
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)


def _terminate_orphan(pid: int, token: int | None, timeout: float) -> None:
    """SIGTERM, then SIGKILL, the process group of a child whose supervisor died. Only while
    the child still has its recorded start time, or its group still has members (which keeps
    the group id from being reused)."""

    def leader() -> bool:
        return token is not None and _start_ticks(pid) == token

    stat = _proc_stat(pid)
    group = stat is not None and stat[1] == pid and leader()
    for signum in (signal.SIGTERM, signal.SIGKILL):
        if group and (leader() or _group_members(pid)):
            _signal_group(pid, signum)
        else:
            _kill_verified(pid, signum, leader)
        if _wait_gone(lambda: leader() or (group and bool(_group_members(pid))), timeout):
            return


def _stop_locked(paths: Paths, timeout: float) -> tuple[bool, str | None]:
    """Stop whatever runs; clean pid files. Returns (changed, reason). Caller holds the lock."""
    changed = False
    note = None
    ins = inspect(paths)
    sup = ins.supervisor_pid
    if sup is not None:
        _write_atomic(paths.request, json.dumps({"timeout": timeout}))
        changed = _kill_verified(sup, signal.SIGTERM, ins.is_supervisor(sup))
        if not _wait_gone(ins.is_supervisor(sup), timeout + 5):
            _kill_verified(sup, signal.SIGKILL, ins.is_supervisor(sup))
            _wait_gone(ins.is_supervisor(sup), 5)
            note = "the supervisor did not exit in time and was killed"
    ins = inspect(paths)
    if ins.child_pid is not None:
        _terminate_orphan(ins.child_pid, ins.child_token, 0.5 if note else timeout)
        changed = True
    for path in (paths.pid, paths.supervisor_pid, paths.request):
        _unlink(path)
    record = _read_json(paths.record)
    if record is not None and (record.get("state") in ("running", "backoff") or note):
        record.update(state="stopped", reason=note or "stopped: the supervisor was gone")
        record.update(pid=None, pid_token=None, supervisor_pid=None, next_start_at=None)
        _write_atomic(paths.record, json.dumps(record, indent=1, sort_keys=True) + "\n")
    return changed, note


def _spec_differs(ins: Inspection, spec: Mapping[str, Any], env: Mapping[str, str]) -> str | None:
    """Why the running service's specification differs from `spec`, or None when it does not."""
    record = ins.record or {}
    for key in SPEC_KEYS:
        if record.get(key) != spec[key]:
            return f"{key} changed"
    assert ins.supervisor_pid is not None
    environ = _read_environ(ins.supervisor_pid)
    if environ is None:
        return "cannot read the running supervisor's environment to compare --env values"
    for key, value in env.items():
        if environ.get(ENV_VALUE_PREFIX + key) != value:
            return "--env values changed"
    return None


def _launch(paths: Paths, spec: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """Double-fork a detached supervisor and wait for its report that the child started."""
    daemon_env = {k: v for k, v in os.environ.items() if not k.startswith(INTERNAL_ENV_PREFIX)}
    daemon_env[ENV_SPEC] = json.dumps(dict(spec))
    for key, value in env.items():
        daemon_env[ENV_VALUE_PREFIX + key] = value
    argv = [sys.executable, *_daemon_args(paths.name, paths.dir)]
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the first fork: a new session, then the second fork execs the daemon
        try:
            os.close(read_fd)
            os.setsid()
            if os.fork() != 0:
                os._exit(0)
            null = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            os.set_inheritable(write_fd, True)
            daemon_env[ENV_NOTIFY_FD] = str(write_fd)
            os.execve(argv[0], argv, daemon_env)  # noqa: S606 - our own interpreter
        finally:
            os._exit(127)
    os.close(write_fd)
    os.waitpid(pid, 0)
    data = b""
    deadline = time.monotonic() + START_WAIT_S
    with os.fdopen(read_fd, "rb", buffering=0) as pipe, selectors.DefaultSelector() as sel:
        sel.register(pipe, selectors.EVENT_READ)
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0 or not sel.select(left):
                return {"ok": False, "error": "the supervisor did not report within 30 s"}
            chunk = pipe.read(4096)
            if not chunk:
                break
            data += chunk
    try:
        report = json.loads(data.decode("utf-8", "replace").splitlines()[0])
    except (ValueError, IndexError):
        return {"ok": False, "error": f"the supervisor exited during startup; see {paths.log}"}
    return report if isinstance(report, dict) else {"ok": False, "error": "bad report"}


def _parse_env(items: Sequence[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key or "\0" in item:
            raise UsageError(f"--env {item.split('=')[0]!r}: expected KEY=VALUE")
        env[key] = value
    return env


def start(
    paths: Paths,
    command: Sequence[str],
    env: Mapping[str, str],
    *,
    cwd: str = "/",
    restart: str = "always",
    backoff_max: float = DEFAULT_BACKOFF_MAX_S,
    log_max_bytes: int = DEFAULT_LOG_MAX_BYTES,
    log_backups: int = DEFAULT_LOG_BACKUPS,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> tuple[int, dict[str, Any]]:
    """Start (or keep, or replace) a service. Returns (exit code, status with `changed`)."""
    if not command:
        raise UsageError("missing the command after --")
    if restart not in RESTART_POLICIES:
        raise UsageError(f"--restart must be one of {', '.join(RESTART_POLICIES)}")
    if backoff_max <= 0 or log_max_bytes < 0 or log_backups < 0 or timeout < 0:
        raise UsageError("--backoff-max must be > 0; sizes, counts and timeouts >= 0")
    spec = {
        "command": list(command),
        "cwd": os.path.abspath(cwd),
        "env_keys": sorted(env),
        "restart": restart,
        "backoff_max_s": float(backoff_max),
        "log_max_bytes": int(log_max_bytes),
        "log_backups": int(log_backups),
    }
    paths.dir.mkdir(parents=True, exist_ok=True)
    with _locked(paths):
        ins = inspect(paths)
        why = "started"
        if ins.supervisor_pid is not None:
            why = _spec_differs(ins, spec, env) or ""
            if not why:
                return EXIT_OK, {**ins.status(), "changed": False}
            _stop_locked(paths, timeout)
        elif ins.child_pid is not None:
            _terminate_orphan(ins.child_pid, ins.child_token, timeout)
        for path in (paths.pid, paths.supervisor_pid, paths.request):
            _unlink(path)
        report = _launch(paths, spec, env)
        failed = report.get("supervisor_pid")
        if not report.get("ok") and isinstance(failed, int):  # let it finish exiting
            _wait_gone(lambda: _is_our_supervisor(failed, paths.name, paths.dir), 5.0)
        out = {**inspect(paths).status(), "changed": True}
        if not report.get("ok"):
            out["error"] = report.get("error", "unknown error")
            return EXIT_FAILED, out
        out["reason"] = out["reason"] or why
        return EXIT_OK, out


def stop(paths: Paths, timeout: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    """Stop a service (idempotent). Returns its status with `changed`."""
    if not paths.dir.is_dir():
        return {**inspect(paths).status(), "changed": False}
    with _locked(paths):
        changed, _ = _stop_locked(paths, timeout)
        return {**inspect(paths).status(), "changed": changed}


def restart_service(paths: Paths, timeout: float = DEFAULT_TIMEOUT_S) -> tuple[int, dict[str, Any]]:
    """Restart the child under its running supervisor (SIGHUP); waits for the new child."""
    if not paths.dir.is_dir():
        return EXIT_NOT_RUNNING, {**inspect(paths).status(), "changed": False}
    with _locked(paths):
        ins = inspect(paths)
        sup = ins.supervisor_pid
        if sup is None:
            out = {**ins.status(), "changed": False}
            out["error"] = "not running: start it with `supervise start` and its command"
            return EXIT_NOT_RUNNING, out
        spawns = (ins.record or {}).get("spawns", 0)
        _write_atomic(paths.request, json.dumps({"timeout": timeout}))
        _kill_verified(sup, signal.SIGHUP, ins.is_supervisor(sup))

        def waiting() -> bool:
            rec = _read_json(paths.record) or {}
            return rec.get("spawns", 0) == spawns and ins.is_supervisor(sup)()

        _wait_gone(waiting, timeout + START_WAIT_S)
        out = {**inspect(paths).status(), "changed": True}
        return (EXIT_OK if out["supervisor_pid"] else EXIT_FAILED), out


# ---- the supervisor daemon -------------------------------------------------------------------


class LogFile:
    """Append-only log with size rotation (NAME.log -> .1 -> ... -> .N); one writer."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.fd = -1
        self.size = 0
        self._open()

    def _open(self) -> None:
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self.size = os.fstat(self.fd).st_size

    def _rotate(self) -> None:
        os.close(self.fd)
        try:
            if self.backups == 0:
                _unlink(self.path)
            else:
                for i in range(self.backups - 1, 0, -1):
                    older = self.path.with_name(f"{self.path.name}.{i}")
                    if older.exists():
                        os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
                os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        finally:
            self._open()

    def write(self, data: bytes) -> None:
        """Append; rotate first when over the limit, cutting at a line end where there is one."""
        if os.fstat(self.fd).st_nlink == 0:  # removed by someone else: start a new file
            os.close(self.fd)
            self._open()
        while data:
            room = self.max_bytes - self.size
            if self.max_bytes <= 0 or len(data) <= room:
                self._write(data)
                return
            cut = data.rfind(b"\n", 0, max(room, 0))
            if cut >= 0:
                self._write(data[: cut + 1])
                data = data[cut + 1 :]
            elif self.size == 0:  # one line longer than a whole file
                self._write(data[:room])
                data = data[room:]
            self._rotate()

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.fd, view)
            view = view[n:]
            self.size += n

    def close(self) -> None:
        os.close(self.fd)


class Supervisor:
    """The daemon: one child, its output, its restarts, its record. Single-threaded."""

    def __init__(self, paths: Paths, spec: dict[str, Any], notify_fd: int | None) -> None:
        self.paths = paths
        self.spec = spec
        self.notify_fd = notify_fd
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(INTERNAL_ENV_PREFIX)}
        for key in spec["env_keys"]:
            self.env[key] = os.environ.get(ENV_VALUE_PREFIX + key, "")
        self.log = LogFile(paths.log, spec["log_max_bytes"], spec["log_backups"])
        self.sel = selectors.DefaultSelector()
        self.pending: list[int] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.child_pid: int | None = None
        self.wakeup = -1
        self.child_started = 0.0  # monotonic
        self.pipes: set[int] = set()
        self.failures = 0
        self.next_start: float | None = None  # monotonic
        self.record: dict[str, Any] = {
            "name": paths.name,
            "dir": str(paths.dir),
            **spec,
            "state": "running",
            "reason": None,
            "supervisor_pid": os.getpid(),
            "pid": None,
            "pid_token": None,
            "started_at": _now_iso(),
            "child_started_at": None,
            "restarts": 0,
            "spawns": 0,
            "backoff_s": None,
            "next_start_at": None,
            "last_exit": None,
        }

    # -- plumbing --

    def say(self, message: str) -> None:
        self.write_log(f"{_now_iso()} supervisor[{os.getpid()}]: {message}\n".encode())

    def write_log(self, data: bytes) -> None:
        """A full disk loses log lines; it must not take the supervisor (and service) down."""
        with contextlib.suppress(OSError):
            self.log.write(data)

    def save(self) -> None:
        text = json.dumps(self.record, indent=1, sort_keys=True) + "\n"
        _write_atomic(self.paths.record, text)

    def notify(self, report: dict[str, Any]) -> None:
        if self.notify_fd is None:
            return
        with contextlib.suppress(OSError):
            os.write(self.notify_fd, (json.dumps(report) + "\n").encode())
        os.close(self.notify_fd)
        self.notify_fd = None

    def _on_signal(self, signum: int, frame: object) -> None:
        self.pending.append(signum)

    def install_signals(self) -> None:
        rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.wakeup = rfd
        self.sel.register(rfd, selectors.EVENT_READ)
        signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(signum, self._on_signal)

    def pump(self, timeout: float) -> None:
        """Wait up to `timeout` for a signal or child output; copy output to the log."""
        for key, _ in self.sel.select(max(timeout, 0.0)):
            fd = int(key.fd)
            if fd == self.wakeup:
                with contextlib.suppress(BlockingIOError):
                    while os.read(fd, 512):
                        pass
                continue
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                continue
            if data:
                self.write_log(data)
            else:
                self._close_pipe(fd)

    def _close_pipe(self, fd: int) -> None:
        self.sel.unregister(fd)
        os.close(fd)
        self.pipes.discard(fd)

    def drain(self, timeout: float = 0.5) -> None:
        """Copy what the dead child's pipes still hold; give up on writers that linger."""
        deadline = time.monotonic() + timeout
        while self.pipes and time.monotonic() < deadline:
            self.pump(0.05)
        for fd in list(self.pipes):
            self._close_pipe(fd)

    # -- the child --

    def spawn(self) -> bool:
        """Start the child; on an exec failure record it and apply the policy (False)."""
        rfd, wfd = os.pipe2(os.O_CLOEXEC)
        try:
            proc = subprocess.Popen(
                self.spec["command"],
                stdin=subprocess.DEVNULL,
                stdout=wfd,
                stderr=wfd,
                cwd=self.spec["cwd"],
                env=self.env,
                close_fds=True,
                process_group=0,
            )
        except OSError as exc:
            os.close(rfd)
            os.close(wfd)
            self.say(f"cannot start {self.spec['command'][0]!r}: {exc}")
            self.record["spawns"] += 1
            self.after_exit(127, None, 0.0, error=str(exc))
            return False
        os.close(wfd)
        os.set_blocking(rfd, False)
        self.sel.register(rfd, selectors.EVENT_READ)
        self.pipes.add(rfd)
        self.proc = proc
        self.child_pid = proc.pid
        self.child_started = time.monotonic()
        self.next_start = None
        self.record.update(
            state="running",
            reason=None,
            pid=proc.pid,
            pid_token=_start_ticks(proc.pid),
            child_started_at=_now_iso(),
            next_start_at=None,
            spawns=self.record["spawns"] + 1,
        )
        self.save()
        _write_atomic(self.paths.pid, f"{proc.pid}\n")
        self.say(f"started pid {proc.pid}: {self.spec['command']}")
        return True

    def child_exited(self) -> bool:
        """Has the child exited? Leaves it a zombie, so its pid and group id stay ours."""
        assert self.child_pid is not None
        try:
            info = os.waitid(os.P_PID, self.child_pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return info is not None and info.si_pid != 0

    def end_group(self, grace: float) -> None:
        """SIGTERM what remains of the child's process group, SIGKILL after `grace`."""
        assert self.child_pid is not None
        pgid = self.child_pid
        if not _group_members(pgid):
            return
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while _group_members(pgid) and time.monotonic() < deadline:
            self.pump(0.05)
        if _group_members(pgid):
            self.say(f"process group {pgid} still alive after {grace:g} s: SIGKILL")
            _signal_group(pgid, signal.SIGKILL)

    def reap(self) -> tuple[int | None, int | None, float]:
        """Reap the exited child: (exit code, signal, seconds it ran)."""
        assert self.proc is not None
        ran = time.monotonic() - self.child_started
        _unlink(self.paths.pid)
        rc = self.proc.wait()
        self.proc = self.child_pid = None
        self.record.update(pid=None, pid_token=None)
        self.drain()
        return (None, -rc, ran) if rc < 0 else (rc, None, ran)

    def after_exit(
        self, code: int | None, signum: int | None, ran: float, error: str | None = None
    ) -> None:
        """Record an exit and decide: back off before a restart, or finish (stopped/failed)."""
        self.record["last_exit"] = {
            "code": code,
            "signal": None if signum is None else _signal_name(signum),
            "at": _now_iso(),
            "error": error,
        }
        what = f"signal {_signal_name(signum)}" if signum is not None else f"status {code}"
        failed = code != 0
        policy = self.spec["restart"]
        if policy == "always" or (policy == "on-failure" and failed):
            if ran >= BACKOFF_RESET_AFTER_S:
                self.failures = 0
            self.failures += 1
            delay = min(BACKOFF_INITIAL_S * 2 ** (self.failures - 1), self.spec["backoff_max_s"])
            self.next_start = time.monotonic() + delay
            self.record.update(
                state="backoff",
                reason=f"exited with {what}; restarting in {delay:g} s",
                backoff_s=delay,
                next_start_at=datetime.fromtimestamp(time.time() + delay, UTC)
                .isoformat(timespec="milliseconds")
                .replace("+00:00", "Z"),
            )
            self.say(f"child exited with {what} after {ran:.1f} s; restart in {delay:g} s")
        else:
            self.next_start = None
            self.record.update(
                state="failed" if failed else "stopped",
                reason=f"exited with {what} (restart={policy})",
                next_start_at=None,
            )
            self.say(f"child exited with {what}; not restarting (restart={policy})")
        self.save()

    def terminate(self, timeout: float) -> None:
        """SIGTERM the child's process group, SIGKILL after `timeout`, then reap."""
        if self.child_pid is None:
            return
        pgid = self.child_pid
        self.say(f"sending SIGTERM to process group {pgid}")
        _signal_group(pgid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _group_members(pgid) and time.monotonic() < deadline:
            self.pump(0.05)
        if _group_members(pgid):
            self.say(f"process group {pgid} still alive after {timeout:g} s: SIGKILL")
            _signal_group(pgid, signal.SIGKILL)
        code, signum, _ = self.reap()
        what = f"signal {_signal_name(signum)}" if signum is not None else f"status {code}"
        self.record["last_exit"] = {
            "code": code,
            "signal": None if signum is None else _signal_name(signum),
            "at": _now_iso(),
            "error": None,
        }
        self.say(f"child stopped ({what})")

    def request_timeout(self) -> float:
        data = _read_json(self.paths.request) or {}
        _unlink(self.paths.request)
        value = data.get("timeout")
        return float(value) if isinstance(value, int | float) and value >= 0 else DEFAULT_TIMEOUT_S

    # -- main loop --

    def run(self) -> int:
        self.install_signals()
        self.say(f"supervising {self.paths.name} (restart={self.spec['restart']})")
        if not self.spawn():  # a first exec failure ends it whatever the policy
            error = (self.record["last_exit"] or {}).get("error")
            self.record.update(state="failed", reason=f"cannot start: {error}")
            self.record.update(next_start_at=None, backoff_s=None)
            result = self.finish(EXIT_FAILED)
            self.notify({"ok": False, "error": error, "supervisor_pid": os.getpid()})
            return result
        _write_atomic(self.paths.supervisor_pid, f"{os.getpid()}\n")
        self.notify({"ok": True, "pid": self.child_pid})
        while True:
            stop = restart = False
            while self.pending:
                sig = self.pending.pop(0)
                stop |= sig in (signal.SIGTERM, signal.SIGINT)
                restart |= sig == signal.SIGHUP
            if stop:
                self.terminate(self.request_timeout())
                self.record.update(state="stopped", reason="stopped by request")
                self.record.update(next_start_at=None)
                self.save()
                return self.finish(EXIT_OK)
            if restart:
                self.say("restart requested")
                self.terminate(self.request_timeout())
                self.failures = 0
                if not any(s in (signal.SIGTERM, signal.SIGINT) for s in self.pending):
                    self.spawn()
                continue
            if self.child_pid is None and self.next_start is None:  # exited, not restarting
                return self.finish(EXIT_OK)
            if self.child_pid is not None and self.child_exited():
                self.end_group(LEFTOVER_GRACE_S)
                code, signum, ran = self.reap()
                self.after_exit(code, signum, ran)
                continue
            now = time.monotonic()
            if self.child_pid is None and self.next_start is not None and now >= self.next_start:
                self.record["restarts"] += 1
                self.spawn()
                continue
            wait = 1.0 if self.next_start is None else min(1.0, self.next_start - now)
            self.pump(wait)

    def finish(self, code: int) -> int:
        self.record.update(supervisor_pid=None, pid=None, pid_token=None)
        self.save()
        if _read_pid(self.paths.supervisor_pid) == os.getpid():
            _unlink(self.paths.supervisor_pid)
        _unlink(self.paths.pid)
        self.say(f"exiting ({self.record['state']})")
        return code


def _daemon_main(argv: Sequence[str]) -> int:
    """Entry point of the re-exec'd supervisor: `daemon NAME STATE_DIR` (spec in environment)."""
    if len(argv) != 3 or argv[0] != "daemon":
        print("internal entry point: use `python -m agentctl.serving supervise`", file=sys.stderr)
        return EXIT_USAGE
    paths = Paths(Path(argv[2]), argv[1])
    spec = json.loads(os.environ[ENV_SPEC])
    notify = os.environ.get(ENV_NOTIFY_FD)
    notify_fd = int(notify) if notify else None
    if notify_fd is not None:
        os.set_inheritable(notify_fd, False)
    os.chdir("/")
    try:
        sup = Supervisor(paths, spec, notify_fd)
    except Exception as exc:  # e.g. the log cannot be opened: tell `start`, which has no log
        if notify_fd is not None:
            report = {"ok": False, "error": f"cannot set up the supervisor: {exc}"}
            with contextlib.suppress(OSError):
                os.write(notify_fd, (json.dumps(report) + "\n").encode())
        return EXIT_FAILED
    try:
        return sup.run()
    except BaseException:
        sup.say("crashed:\n" + traceback.format_exc())
        if sup.child_pid is not None:
            _signal_group(sup.child_pid, signal.SIGKILL)
        sup.record.update(state="failed", reason="the supervisor crashed; see the log")
        code = sup.finish(EXIT_FAILED)
        sup.notify({"ok": False, "error": "the supervisor crashed; see the log"})
        return code


# ---- command line ---------------------------------------------------------------------------


def _add_start_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dir", metavar="STATE_DIR", help="where pid files, record and log live")
    p.add_argument(
        "--env", action="append", default=[], metavar="K=V", help="child environment (repeat)"
    )
    p.add_argument("--cwd", help="the child's working directory (default /)")
    p.add_argument("--restart", choices=RESTART_POLICIES, help="restart policy (default always)")
    p.add_argument("--backoff-max", type=float, metavar="S", help="longest restart delay (30)")
    p.add_argument("--timeout", type=float, metavar="S", help="to stop a replaced instance (10)")
    p.add_argument("--log-max-bytes", type=int, metavar="N", help="rotate the log (10 MiB)")
    p.add_argument("--log-backups", type=int, metavar="N", help="rotated logs kept (3)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The `supervise` subcommands (start, stop, status, restart)."""
    sub = p.add_subparsers(dest="supervise_command", metavar="ACTION", required=True)
    start_p = sub.add_parser(
        "start",
        help="start NAME (or keep it when unchanged); prints its status",
        usage="%(prog)s NAME --dir STATE_DIR [options] -- CMD [ARGS...]",
    )
    _add_start_options(start_p)
    start_p.add_argument("argv", nargs=argparse.REMAINDER, metavar="NAME [options] -- CMD ...")
    wait = "seconds between SIGTERM and SIGKILL (10)"
    for action, text in (("stop", "stop NAME (idempotent)"), ("status", "print NAME's status")):
        q = sub.add_parser(action, help=text)
        q.add_argument("name", nargs="?", metavar="NAME")
        q.add_argument("--dir", required=True, metavar="STATE_DIR", help="the services' files")
        q.add_argument("--all", action="store_true", help="every service under STATE_DIR")
        if action == "stop":
            q.add_argument(
                "--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S", help=wait
            )
    r = sub.add_parser("restart", help="restart NAME's child under its running supervisor")
    r.add_argument("name", metavar="NAME")
    r.add_argument("--dir", required=True, metavar="STATE_DIR", help="the service's files")
    r.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S", help=wait)


def _print(obj: Mapping[str, Any]) -> None:
    print(json.dumps(obj, sort_keys=True), flush=True)


def _run_start(args: argparse.Namespace) -> int:
    rest = list(args.argv)
    if "--" not in rest:
        raise UsageError("usage: start NAME --dir STATE_DIR [options] -- CMD [ARGS...]")
    cut = rest.index("--")
    head, command = rest[:cut], rest[cut + 1 :]
    second = argparse.ArgumentParser(prog="supervise start", add_help=False)
    _add_start_options(second)
    second.add_argument("name")
    try:
        opts = second.parse_args(head, namespace=args)
    except SystemExit:
        raise UsageError(f"bad arguments before --: {head}") from None
    if not opts.dir:
        raise UsageError("--dir is required")
    code, out = start(
        _paths(opts.dir, opts.name),
        command,
        _parse_env(opts.env),
        cwd=opts.cwd or "/",
        restart=opts.restart or "always",
        backoff_max=DEFAULT_BACKOFF_MAX_S if opts.backoff_max is None else opts.backoff_max,
        log_max_bytes=DEFAULT_LOG_MAX_BYTES if opts.log_max_bytes is None else opts.log_max_bytes,
        log_backups=DEFAULT_LOG_BACKUPS if opts.log_backups is None else opts.log_backups,
        timeout=DEFAULT_TIMEOUT_S if opts.timeout is None else opts.timeout,
    )
    _print(out)
    return code


def _names(args: argparse.Namespace) -> list[str]:
    if args.all == (args.name is not None):
        raise UsageError("give NAME or --all (not both)")
    if args.all:
        return service_names(Path(os.path.realpath(args.dir)))
    return [args.name]


def run_cli(args: argparse.Namespace) -> int:
    """Run `supervise ACTION ...` (parsed by `add_arguments`); returns the exit code."""
    try:
        action = args.supervise_command
        if action == "start":
            return _run_start(args)
        if action == "restart":
            code, out = restart_service(_paths(args.dir, args.name), args.timeout)
            _print(out)
            return code
        names = _names(args)
        if action == "stop":
            outs = [stop(_paths(args.dir, n), args.timeout) for n in names]
        else:
            outs = [status(args.dir, n) for n in names]
        if not args.all:
            _print(outs[0])
            if action == "stop":
                return EXIT_OK
            return EXIT_OK if outs[0]["running"] else EXIT_NOT_RUNNING
        _print({"dir": os.path.realpath(args.dir), "services": outs})
        if action == "stop" or all(o["running"] for o in outs):
            return EXIT_OK
        return EXIT_NOT_RUNNING
    except UsageError as exc:
        _print({"error": str(exc)})
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, TimeoutError) as exc:
        _print({"error": f"{type(exc).__name__}: {exc}"})
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(_daemon_main(sys.argv[1:]))
