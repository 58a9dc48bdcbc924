"""What every way of reaching a host offers: run a command, move a file, close.

The SSH connector (paramiko) and the local connector both implement `Connector`; the fan-out,
facts and (later) playbooks only ever see this protocol, so paramiko stays in one module.
"""

from __future__ import annotations

import secrets
import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from agentctl.ctl.errors import SudoError

#: Bytes of stdout/stderr kept per command; the rest is cut with a marker.
DEFAULT_OUTPUT_CAP = 64 * 1024


@dataclass(frozen=True)
class CommandResult:
    """One finished remote command. A non-zero exit is data, not an exception."""

    host: str
    command: str
    exit_status: int
    stdout: str
    stderr: str
    duration_s: float
    truncated: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


@dataclass(frozen=True)
class Become:
    """Privilege escalation for one command: `sudo -n` unless a password is supplied."""

    user: str = "root"
    password: str | None = field(default=None, repr=False)


#: sudo prints this (with a per-command nonce) when, and only when, it wants the password; the
#: connectors send the password only after seeing it, so a sudo that does not ask (root,
#: NOPASSWD, a cached timestamp) never passes the password on to the command's stdin.
SUDO_PROMPT = "[agentctl-sudo-{nonce}] "

#: Seconds the remote `timeout` waits past our own deadline before it stops the command (TERM,
#: then KILL 5 s later), so the client reports the deadline first and the host is cleaned up
#: right after. The remote clock starts after the exec round trip, which only adds margin.
REMOTE_KILL_GRACE_S = 0.5


#: What the sudo wrapper prints (with exit 127) on a host that has no sudo: the connectors turn it
#: into a `SudoError` that names the host and what to install, not a bare "command not found".
SUDO_MISSING = "agentctl: sudo is not installed on this host"


def sudo_prompt() -> str:
    return SUDO_PROMPT.format(nonce=secrets.token_hex(6))


def effective_become(become: Become | None, login_user: str) -> Become | None:
    """`become`, or None when the session already is the user sudo would switch to.

    sudo from root to root changes nothing, and a fresh image may not even have sudo; Ansible
    skips become for the same user too (`BECOME_ALLOW_SAME_USER`, false by default).
    """
    if become is None or become.user == login_user:
        return None
    return become


def check_sudo_present(result: CommandResult, become: Become | None) -> CommandResult:
    """Raise a clear `SudoError` when the command needed sudo and the host has none."""
    if become is not None and result.exit_status == 127 and SUDO_MISSING in result.stderr:
        raise SudoError(
            f"sudo is not installed on {result.host}, and this step runs as {become.user!r} "
            f"through it: install the sudo package on {result.host} (apt-get install sudo), "
            f"or connect as {become.user} (ansible_user: {become.user})",
            host=result.host,
        )
    return result


def started_marker(prompt: str) -> str:
    """Printed to stderr by the command once sudo let it run: from then on stdin is the
    command's, so the connector closes it instead of ever sending the password."""
    return prompt.replace("agentctl-sudo-", "agentctl-started-").strip()


def build_command(
    argv: Sequence[str],
    *,
    become: Become | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
    deadline_s: float | None = None,
    prompt: str | None = None,
) -> str:
    """Quote an argument list into one POSIX shell command line.

    Every value goes through `shlex.quote`, so hostile inventory values (`; rm -rf /`, `$(...)`,
    quotes, newlines) reach the remote side as literal data. With a deadline the command runs
    under `timeout` where the host has it, so a command we gave up on does not run on (as root,
    with sudo). sudo reads a password from stdin (`-S`) behind `prompt`, never from the command
    line.
    """
    if not argv:
        raise ValueError("empty command")
    inner = shlex.join(argv)
    if env:
        for key in env:
            if not key.isidentifier():
                raise ValueError(f"invalid environment variable name: {key!r}")
        inner = "env " + " ".join(shlex.quote(f"{k}={v}") for k, v in env.items()) + " " + inner
    if cwd:
        inner = f"cd {shlex.quote(cwd)} && {inner}"
    if deadline_s is not None:
        limit = f"{deadline_s + REMOTE_KILL_GRACE_S:.1f}"
        inner = (
            "if command -v timeout >/dev/null 2>&1; then "
            f"exec timeout -k 5 {limit} sh -c {shlex.quote(inner)}; "
            f"else exec sh -c {shlex.quote(inner)}; fi"
        )
    if become is None:
        return inner
    if become.password is not None:
        prompt = prompt or sudo_prompt()
        inner = f"printf %s {shlex.quote(started_marker(prompt))} >&2; {inner}"
    # -n: never prompt, fail instead; -S: the password comes on stdin, after `prompt` shows.
    password_mode = f"-S -p {shlex.quote(prompt or sudo_prompt())}"
    mode = password_mode if become.password is not None else "-n"
    sudo = f"sudo {mode} -H -u {shlex.quote(become.user)} -- sh -c {shlex.quote(inner)}"
    missing = f"printf '%s\\n' {shlex.quote(SUDO_MISSING)} >&2; exit 127"
    return f"if command -v sudo >/dev/null 2>&1; then {sudo}; else {missing}; fi"


class OutputCapture:
    """Bounded capture while reading: a head and a rolling tail, never the whole stream.

    Keeps memory flat whatever a command prints; the head says what ran, the tail how it ended.
    """

    def __init__(self, cap: int = DEFAULT_OUTPUT_CAP) -> None:
        self.cap = max(cap, 2)
        self._head = bytearray()
        self._tail = bytearray()
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        half = self.cap // 2
        room = half - len(self._head)
        if room > 0:
            self._head += data[:room]
            data = data[room:]
        if data:
            self._tail += data
            if len(self._tail) > 2 * half:  # trim in bulk, not per chunk
                del self._tail[: len(self._tail) - half]

    def tail_text(self, size: int) -> bytes:
        return bytes((self._head + self._tail)[-size:])

    def remove(self, marker: bytes) -> None:
        """Drop one occurrence of `marker` (the sudo prompt) from what was captured."""
        for buf in (self._head, self._tail):
            i = buf.find(marker)
            if i >= 0:
                del buf[i : i + len(marker)]
                self.total -= len(marker)
                return

    def result(self) -> tuple[str, bool]:
        half = self.cap // 2
        tail = bytes(self._tail[-half:]) if self.total > self.cap else bytes(self._tail)
        if self.total <= self.cap:
            return (bytes(self._head) + tail).decode("utf-8", "replace"), False
        cut = self.total - len(self._head) - len(tail)
        marker = f"\n[... {cut} bytes cut by agentctl ...]\n".encode()
        return (bytes(self._head) + marker + tail).decode("utf-8", "replace"), True


def answer_sudo(
    err: OutputCapture,
    prompt: bytes,
    password: str | None,
    send: Callable[[bytes], object],
    close_stdin: Callable[[], object],
) -> tuple[bytes | None, str | None]:
    """One step of the sudo handshake; returns what is still awaited (prompt, password).

    The password goes out once, only after sudo's own prompt; when the command's start marker
    shows (sudo did not ask, or accepted), stdin is closed. A second prompt (wrong password)
    closes stdin so sudo fails instead of waiting.
    """
    marker = started_marker(prompt.decode()).encode()
    seen = err.tail_text(8192)
    if marker in seen:
        err.remove(marker)
        if prompt in seen:
            err.remove(prompt)
        close_stdin()
        return None, None
    if prompt in seen:
        err.remove(prompt)
        if password is None:  # asked again: the password was refused
            close_stdin()
            return None, None
        send((password + "\n").encode())
        return prompt, None
    return prompt, password


def cap_output(data: bytes, cap: int = DEFAULT_OUTPUT_CAP) -> tuple[str, bool]:
    """Decode and bound output, keeping head and tail so the error at the end survives."""
    capture = OutputCapture(cap)
    capture.feed(data)
    return capture.result()


@runtime_checkable
class Connector(Protocol):
    """A live session to one host."""

    host: str

    @property
    def login_user(self) -> str:
        """The user the session runs as on the host."""
        ...

    def run(
        self,
        argv: Sequence[str],
        *,
        become: Become | None = None,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        stdin: bytes | None = None,
        output_cap: int | None = None,
    ) -> CommandResult: ...

    def run_shell(
        self,
        script: str,
        *,
        become: Become | None = None,
        timeout: float | None = None,
        output_cap: int | None = None,
    ) -> CommandResult:
        """Run a trusted, agentctl-authored POSIX sh script (never user input)."""
        ...

    def put(self, local: Path, remote: str, *, mode: int | None = None) -> str:
        """Upload and verify by sha256; returns the digest."""
        ...

    def get(self, remote: str, local: Path) -> str:
        """Download and verify by sha256; returns the digest."""
        ...

    def close(self) -> None: ...
