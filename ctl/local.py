"""The local connector: the control machine itself, through the same quoting as SSH.

Used for `ansible_connection: local` hosts and by `agentctl demo` where sshd cannot run.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
import selectors
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from agentctl.ctl.connector import (
    DEFAULT_OUTPUT_CAP,
    Become,
    CommandResult,
    OutputCapture,
    answer_sudo,
    build_command,
    check_sudo_present,
    effective_become,
    sudo_prompt,
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
        output_cap: int | None = None,
    ) -> CommandResult:
        deadline = timeout if timeout is not None else self.default_timeout
        become = effective_become(become, self.login_user)
        password = become.password if become is not None else None
        prompt = sudo_prompt() if password is not None else None
        if prompt is not None and stdin:
            raise ValueError("stdin cannot be combined with a sudo password")
        command = build_command(argv, become=become, env=env, prompt=prompt)
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
            status, out, err = _communicate(
                proc,
                stdin=stdin,
                password=password,
                prompt=prompt.encode() if prompt else None,
                deadline=started + deadline,
                cap=output_cap or self.output_cap,
            )
        except CommandTimeout as exc:
            raise CommandTimeout(
                f"command exceeded its {deadline:g}s deadline", host=self.host
            ) from exc
        finally:
            self._running.discard(proc)
        stdout, cut_out = out.result()
        stderr, cut_err = err.result()
        result = CommandResult(
            host=self.host,
            command=command,
            exit_status=status,
            stdout=stdout,
            stderr=stderr,
            duration_s=time.monotonic() - started,
            truncated=cut_out or cut_err,
        )
        return check_sudo_present(result, become)

    @property
    def login_user(self) -> str:
        """This process's effective user (sudo to it is a no-op)."""
        return pwd.getpwuid(os.geteuid()).pw_name

    def run_shell(
        self,
        script: str,
        *,
        become: Become | None = None,
        timeout: float | None = None,
        output_cap: int | None = None,
    ) -> CommandResult:
        return self.run(["sh", "-c", script], become=become, timeout=timeout, output_cap=output_cap)

    def put(self, local: Path, remote: str, *, mode: int | None = None) -> str:
        return _copy_verified(local, Path(remote), mode, self.host)

    def get(self, remote: str, local: Path) -> str:
        return _copy_verified(Path(remote), local, None, self.host)

    def close(self) -> None:
        """Kill what still runs (an interrupted fan-out hangs up on every host)."""
        for proc in list(self._running):
            _kill_group(proc)


def _communicate(
    proc: subprocess.Popen[bytes],
    *,
    stdin: bytes | None,
    password: str | None,
    prompt: bytes | None,
    deadline: float,
    cap: int,
) -> tuple[int, OutputCapture, OutputCapture]:
    """Read both pipes with bounded memory; answer sudo's prompt only if it appears."""
    assert proc.stdin and proc.stdout and proc.stderr
    out, err = OutputCapture(cap), OutputCapture(cap)
    if stdin:
        proc.stdin.write(stdin)
    if prompt is None:
        proc.stdin.close()
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, out)
    sel.register(proc.stderr, selectors.EVENT_READ, err)
    try:
        while sel.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                _kill_group(proc)
                raise CommandTimeout("deadline")
            for key, _ in sel.select(min(remaining, 0.5)):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                key.data.feed(chunk)
            if prompt is not None:
                prompt, password = answer_sudo(
                    err, prompt, password, _writer(proc), proc.stdin.close
                )
        # Output closed; a child that escaped the group may still hold nothing open, but `sh`
        # itself must end before the deadline too.
        try:
            status = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired as exc:
            _kill_group(proc)
            raise CommandTimeout("deadline") from exc
    finally:
        sel.close()
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            with contextlib.suppress(OSError):
                pipe.close()
        if proc.poll() is None:
            _kill_group(proc)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
    return status, out, err


def _writer(proc: subprocess.Popen[bytes]) -> Callable[[bytes], None]:
    def write(data: bytes) -> None:
        assert proc.stdin is not None
        proc.stdin.write(data)
        proc.stdin.flush()

    return write


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
