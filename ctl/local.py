"""The local connector: the control machine itself, through the same quoting as SSH.

Used for `ansible_connection: local` hosts and by `agentctl demo` where sshd cannot run.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from agentctl.ctl.connector import (
    DEFAULT_OUTPUT_CAP,
    Become,
    CommandResult,
    build_command,
    cap_output,
)
from agentctl.ctl.errors import CommandTimeout, TransferError


class LocalConnector:
    def __init__(
        self,
        host: str = "localhost",
        *,
        default_timeout: float = 300.0,
        output_cap: int = DEFAULT_OUTPUT_CAP,
    ) -> None:
        self.host = host
        self.default_timeout = default_timeout
        self.output_cap = output_cap
        self._running: set[subprocess.Popen[bytes]] = set()

    def run(
        self,
        argv: Sequence[str],
        *,
        become: Become | None = None,
        timeout: float | None = None,
        env: Mapping[str, str] | None = None,
        stdin: bytes | None = None,
    ) -> CommandResult:
        command = build_command(argv, become=become, env=env)
        feed = b""
        if become is not None and become.password is not None:
            feed += (become.password + "\n").encode()
        feed += stdin or b""
        deadline = timeout if timeout is not None else self.default_timeout
        started = time.monotonic()
        # A new session, so a deadline kills the whole process group, not only `sh`.
        proc = subprocess.Popen(
            ["sh", "-c", command],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self._running.add(proc)
        try:
            out, err = proc.communicate(feed, timeout=deadline)
        except subprocess.TimeoutExpired as exc:
            _kill_group(proc)
            proc.communicate()
            raise CommandTimeout(
                f"command exceeded its {deadline:g}s deadline", host=self.host
            ) from exc
        finally:
            self._running.discard(proc)
        stdout, cut_out = cap_output(out, self.output_cap)
        stderr, cut_err = cap_output(err, self.output_cap)
        return CommandResult(
            host=self.host,
            command=command,
            exit_status=proc.returncode,
            stdout=stdout,
            stderr=stderr,
            duration_s=time.monotonic() - started,
            truncated=cut_out or cut_err,
        )

    def run_shell(
        self, script: str, *, become: Become | None = None, timeout: float | None = None
    ) -> CommandResult:
        return self.run(["sh", "-c", script], become=become, timeout=timeout)

    def put(self, local: Path, remote: str, *, mode: int | None = None) -> str:
        return _copy_verified(local, Path(remote), mode, self.host)

    def get(self, remote: str, local: Path) -> str:
        return _copy_verified(Path(remote), local, None, self.host)

    def close(self) -> None:
        """Kill what still runs (an interrupted fan-out hangs up on every host)."""
        for proc in list(self._running):
            _kill_group(proc)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _copy_verified(src: Path, dest: Path, mode: int | None, host: str) -> str:
    try:
        digest = _sha256(src)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".agentctl-", dir=dest.parent)
        os.close(fd)
        shutil.copyfile(src, tmp)
        if mode is not None:
            os.chmod(tmp, mode)
        if _sha256(Path(tmp)) != digest:
            Path(tmp).unlink(missing_ok=True)
            raise TransferError(f"checksum mismatch copying {src} to {dest}", host=host)
        os.replace(tmp, dest)
        return digest
    except OSError as exc:
        raise TransferError(f"copy {src} -> {dest} failed: {exc}", host=host) from exc


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
