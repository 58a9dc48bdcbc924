"""What every way of reaching a host offers: run a command, move a file, close.

The SSH connector (paramiko) and the local connector both implement `Connector`; the fan-out,
facts and (later) playbooks only ever see this protocol, so paramiko stays in one module.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

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


def build_command(
    argv: Sequence[str],
    *,
    become: Become | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | None = None,
) -> str:
    """Quote an argument list into one POSIX shell command line.

    Every value goes through `shlex.quote`, so hostile inventory values (`; rm -rf /`, `$(...)`,
    quotes, newlines) reach the remote side as literal data. sudo reads a password from stdin
    (`-S`) with an empty prompt, so it never appears on a command line or in a log.
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
    if become is None:
        return inner
    mode = "-S -p ''" if become.password is not None else "-n"
    return f"sudo {mode} -H -u {shlex.quote(become.user)} -- sh -c {shlex.quote(inner)}"


def cap_output(data: bytes, cap: int = DEFAULT_OUTPUT_CAP) -> tuple[str, bool]:
    """Decode and bound output, keeping head and tail so the error at the end survives."""
    if len(data) <= cap:
        return data.decode("utf-8", "replace"), False
    half = cap // 2
    marker = f"\n[... {len(data) - cap} bytes cut by agentctl ...]\n".encode()
    return (data[:half] + marker + data[-half:]).decode("utf-8", "replace"), True


@runtime_checkable
class Connector(Protocol):
    """A live session to one host."""

    host: str

    def run(
        self,
        argv: Sequence[str],
        *,
        become: Become | None = None,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        stdin: bytes | None = None,
    ) -> CommandResult: ...

    def run_shell(
        self, script: str, *, become: Become | None = None, timeout: float | None = None
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
