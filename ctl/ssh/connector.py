"""The SSH implementation of `Connector`: commands with deadlines, sudo, verified SFTP."""

from __future__ import annotations

import hashlib
import posixpath
import shlex
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path

import paramiko

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
from agentctl.ctl.errors import CommandTimeout, RemoteError, TransferError, UnreachableError
from agentctl.ctl.ssh.known_hosts import KnownHosts
from agentctl.ctl.ssh.target import Target
from agentctl.ctl.ssh.transport import Aborter, ConnectOptions, connect_chain

_CHUNK = 32768
#: how long one wait for output lasts before deadlines and the link are checked again
_POLL_S = 0.1


class SSHConnector:
    """One authenticated session (plus its jump hops) to one host; channels per command."""

    def __init__(
        self,
        target: Target,
        known_hosts: KnownHosts,
        opts: ConnectOptions | None = None,
        *,
        default_timeout: float = 300.0,
        output_cap: int = DEFAULT_OUTPUT_CAP,
        aborter: Aborter | None = None,
    ) -> None:
        self.host = target.name
        self.target = target
        self.default_timeout = default_timeout
        self.output_cap = output_cap
        self._transports = connect_chain(
            target, known_hosts, opts or ConnectOptions(), aborter=aborter
        )

    @property
    def login_user(self) -> str:
        """Who the session runs as on the host (sudo to this user is a no-op)."""
        return self.target.user

    @property
    def _transport(self) -> paramiko.Transport:
        return self._transports[-1]

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
        deadline_s = timeout if timeout is not None else self.default_timeout
        become = effective_become(become, self.login_user)
        prompt = sudo_prompt() if become is not None and become.password is not None else None
        if prompt is not None and stdin:
            raise ValueError("stdin cannot be combined with a sudo password")
        command = build_command(argv, become=become, env=env, deadline_s=deadline_s, prompt=prompt)
        result = self._exec(
            command,
            password=become.password if become is not None else None,
            prompt=prompt,
            deadline_s=deadline_s,
            stdin=stdin,
            output_cap=output_cap or self.output_cap,
        )
        return check_sudo_present(result, become)

    def run_shell(
        self,
        script: str,
        *,
        become: Become | None = None,
        timeout: float | None = None,
        output_cap: int | None = None,
    ) -> CommandResult:
        return self.run(["sh", "-c", script], become=become, timeout=timeout, output_cap=output_cap)

    def _exec(
        self,
        command: str,
        *,
        password: str | None,
        prompt: str | None,
        deadline_s: float,
        stdin: bytes | None,
        output_cap: int,
    ) -> CommandResult:
        started = time.monotonic()
        transport = self._transport
        try:
            chan = transport.open_session(timeout=min(deadline_s, 30.0))
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise UnreachableError(f"cannot open a session: {exc}", host=self.host) from exc
        out, err = OutputCapture(output_cap), OutputCapture(output_cap)
        waiting_prompt = prompt.encode() if prompt and password is not None else None
        try:
            chan.settimeout(deadline_s)
            chan.exec_command(command)
            if stdin:
                chan.sendall(stdin)
            chan.settimeout(_POLL_S)
            if waiting_prompt is None:
                chan.shutdown_write()
            eof = False
            while True:
                if time.monotonic() - started > deadline_s:
                    raise CommandTimeout(
                        f"command exceeded its {deadline_s:g}s deadline", host=self.host
                    )
                if not eof:
                    # Blocks up to _POLL_S for stdout; returns b"" once the channel is at EOF.
                    try:
                        data = chan.recv(_CHUNK)
                    except TimeoutError:
                        data = None
                    if data:
                        out.feed(data)
                    elif data == b"":
                        eof = True
                while chan.recv_stderr_ready():
                    err.feed(chan.recv_stderr(_CHUNK))
                if waiting_prompt is not None:
                    waiting_prompt, password = answer_sudo(
                        err, waiting_prompt, password, chan.sendall, chan.shutdown_write
                    )
                if not transport.is_active():
                    raise UnreachableError(
                        "connection lost while running a command", host=self.host
                    )
                if eof:
                    # EOF on both streams; the exit status follows (or the command, having
                    # closed its output, is still running: wait without spinning).
                    while chan.recv_stderr_ready():
                        err.feed(chan.recv_stderr(_CHUNK))
                    if chan.status_event.wait(_POLL_S) or chan.closed:
                        break
            if not chan.exit_status_ready() and not transport.is_active():
                raise UnreachableError("connection lost while running a command", host=self.host)
            status = chan.recv_exit_status()
        except TimeoutError as exc:  # stdin could not be delivered in time
            raise CommandTimeout(
                f"command exceeded its {deadline_s:g}s deadline", host=self.host
            ) from exc
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise UnreachableError(f"connection lost: {exc}", host=self.host) from exc
        finally:
            # On a deadline the remote `timeout` wrapper kills the command shortly after.
            chan.close()
        stdout, cut_out = out.result()
        stderr, cut_err = err.result()
        return CommandResult(
            host=self.host,
            command=command,
            exit_status=status,
            stdout=stdout,
            stderr=stderr,
            duration_s=time.monotonic() - started,
            truncated=cut_out or cut_err,
        )

    def put(self, local: Path, remote: str, *, mode: int | None = None) -> str:
        """Upload to a temporary name, verify sha256 remotely, then rename into place."""
        digest = _sha256_file(local)
        tmp = posixpath.join(posixpath.dirname(remote) or ".", f".agentctl-{uuid.uuid4().hex}.tmp")
        try:
            with self._transport.open_sftp_client() as sftp:
                sftp.put(str(local), tmp)
                if mode is not None:
                    sftp.chmod(tmp, mode)
                remote_digest = self._remote_sha256(sftp, tmp)
                if remote_digest != digest:
                    sftp.remove(tmp)
                    raise TransferError(
                        f"checksum mismatch uploading {local} to {remote}", host=self.host
                    )
                sftp.posix_rename(tmp, remote)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise TransferError(
                f"upload of {local} to {remote} failed: {exc}", host=self.host
            ) from exc
        return digest

    def get(self, remote: str, local: Path) -> str:
        """Download, then compare the local sha256 with the one computed on the host."""
        local.parent.mkdir(parents=True, exist_ok=True)
        try:
            with self._transport.open_sftp_client() as sftp:
                remote_digest = self._remote_sha256(sftp, remote)
                sftp.get(remote, str(local))
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise TransferError(f"download of {remote} failed: {exc}", host=self.host) from exc
        digest = _sha256_file(local)
        if digest != remote_digest:
            raise TransferError(f"checksum mismatch downloading {remote}", host=self.host)
        return digest

    def _remote_sha256(self, sftp: paramiko.SFTPClient, path: str) -> str:
        result = self.run(["sha256sum", "--", path], timeout=120)
        if result.ok and result.stdout:
            return result.stdout.split()[0]
        # No sha256sum on the host: hash the bytes as the SFTP server returns them.
        h = hashlib.sha256()
        with sftp.open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()

    def open_tcp(self, host: str, port: int, timeout: float) -> paramiko.Channel:
        """A TCP stream to `host:port` as the node sees it (its loopback included): a
        `direct-tcpip` channel on this session's transport, so a node's loopback-only service
        is reached through SSH and nothing new listens on the node. Socket-like (`sendall`,
        `recv`, `settimeout`, `close`), with `timeout` set on it; the caller closes it.

        Raises `RemoteError` when the node refuses the forward (forwarding disabled, or nothing
        listens at `host:port`) and `UnreachableError` when the session is gone or the node
        does not answer within `timeout`.
        """
        where = f"{host}:{port}"
        try:
            chan = self._transport.open_channel(
                "direct-tcpip", (host, port), ("127.0.0.1", 0), timeout=timeout
            )
        except paramiko.ChannelException as exc:
            if exc.code == paramiko.common.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED:
                raise RemoteError(
                    f"TCP forwarding to {where} is disabled on this node ({exc.text})",
                    host=self.host,
                    hint="the node's sshd needs AllowTcpForwarding yes (or local)",
                ) from exc
            raise RemoteError(
                f"the node could not connect to {where}: {exc.text or exc.code}", host=self.host
            ) from exc
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise UnreachableError(
                f"cannot open a TCP forward to {where}: {exc or 'timed out'}", host=self.host
            ) from exc
        chan.settimeout(timeout)
        return chan

    def close(self) -> None:
        for transport in reversed(self._transports):
            transport.close()

    def __repr__(self) -> str:
        return f"SSHConnector({shlex.quote(self.target.label)})"


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
