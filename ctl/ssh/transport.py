"""Open an authenticated paramiko Transport to a Target, hop by hop, verifying every host key.

Every paramiko and socket exception is translated here into agentctl's errors, so nothing above
this module knows paramiko exists. Unreachable (no SSH session) is kept apart from refused
(host key or authentication), because retries and exit codes differ.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
from paramiko.agent import Agent

from agentctl.ctl.errors import AuthError, HostKeyError, UnreachableError
from agentctl.ctl.ssh.known_hosts import KnownHosts
from agentctl.ctl.ssh.target import Target

DEFAULT_KEY_NAMES = ("id_ed25519", "id_ecdsa", "id_rsa")


@dataclass(frozen=True)
class ConnectOptions:
    connect_timeout: float = 10.0
    banner_timeout: float = 15.0
    auth_timeout: float = 15.0
    keepalive_interval: int = 15
    use_agent: bool = True
    look_for_keys: bool = True
    key_passphrase: str | None = field(default=None, repr=False)


def open_socket(
    target: Target, opts: ConnectOptions, via: paramiko.Transport | None
) -> socket.socket | paramiko.Channel:
    """A TCP socket, or a direct-tcpip channel through the previous hop (ProxyJump)."""
    try:
        if via is None:
            return socket.create_connection(
                (target.hostname, target.port), timeout=opts.connect_timeout
            )
        return via.open_channel(
            "direct-tcpip",
            dest_addr=(target.hostname, target.port),
            src_addr=("", 0),
            timeout=opts.connect_timeout,
        )
    except (OSError, paramiko.SSHException, EOFError) as exc:
        how = "through jump host" if via is not None else "to"
        raise UnreachableError(
            f"cannot connect {how} {target.hostname}:{target.port}: {_reason(exc)}",
            host=target.name,
        ) from exc


def handshake(
    target: Target,
    sock: socket.socket | paramiko.Channel,
    known_hosts: KnownHosts,
    opts: ConnectOptions,
) -> paramiko.Transport:
    """Key exchange and strict host-key check; no authentication yet."""
    transport = paramiko.Transport(sock)
    transport.banner_timeout = opts.banner_timeout
    transport.auth_timeout = opts.auth_timeout
    known_types = known_hosts.key_types(target.known_hosts_key)
    if known_types:
        # Ask for the key type we already trust, as OpenSSH does, so a host offering several
        # types is not reported as "changed" only because it picked another one.
        opts_sec = transport.get_security_options()
        preferred = [t for t in opts_sec.key_types if t in known_types]
        preferred += [t for t in opts_sec.key_types if t not in known_types]
        opts_sec.key_types = preferred
    try:
        transport.start_client(timeout=opts.connect_timeout + opts.banner_timeout)
    except (paramiko.SSHException, OSError, EOFError) as exc:
        transport.close()
        raise UnreachableError(
            f"SSH handshake with {target.hostname}:{target.port} failed: {_reason(exc)}",
            host=target.name,
        ) from exc
    key = transport.get_remote_server_key()
    try:
        known_hosts.check(target.known_hosts_key, key, label=target.name)
    except HostKeyError:
        transport.close()
        raise
    return transport


def fetch_host_key(
    target: Target, opts: ConnectOptions, via: paramiko.Transport | None = None
) -> paramiko.PKey:
    """The key a host offers, without authenticating: the first half of `hosts trust`."""
    sock = open_socket(target, opts, via)
    transport = paramiko.Transport(sock)
    transport.banner_timeout = opts.banner_timeout
    try:
        transport.start_client(timeout=opts.connect_timeout + opts.banner_timeout)
        return transport.get_remote_server_key()
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise UnreachableError(
            f"SSH handshake with {target.hostname}:{target.port} failed: {_reason(exc)}",
            host=target.name,
        ) from exc
    finally:
        transport.close()


def authenticate(transport: paramiko.Transport, target: Target, opts: ConnectOptions) -> None:
    """Public-key auth from explicit key files, then ssh-agent, then ~/.ssh defaults."""
    tried: list[str] = []
    for key in _candidate_keys(target, opts, tried):
        try:
            transport.auth_publickey(target.user, key)
        except paramiko.AuthenticationException:
            continue
        except (paramiko.SSHException, OSError, EOFError) as exc:
            transport.close()
            raise UnreachableError(
                f"connection lost during authentication: {_reason(exc)}", host=target.name
            ) from exc
        if transport.is_authenticated():
            transport.set_keepalive(opts.keepalive_interval)
            return
    transport.close()
    what = ", ".join(tried) if tried else "no usable keys found"
    raise AuthError(
        f"authentication refused for {target.label} (tried: {what})",
        host=target.name,
        hint="set ansible_ssh_private_key_file or IdentityFile, or load the key into ssh-agent",
    )


def _candidate_keys(target: Target, opts: ConnectOptions, tried: list[str]) -> list[paramiko.PKey]:
    keys: list[paramiko.PKey] = []
    seen: set[str] = set()
    paths = [Path(os.path.expanduser(p)) for p in target.key_files]
    for path in paths:
        key = _load_key(path, opts, target, explicit=True)
        if key is not None and key.fingerprint not in seen:
            seen.add(key.fingerprint)
            keys.append(key)
            tried.append(str(path))
    if opts.use_agent and os.environ.get("SSH_AUTH_SOCK"):
        try:
            for agent_key in Agent().get_keys():
                if agent_key.fingerprint not in seen:
                    seen.add(agent_key.fingerprint)
                    keys.append(agent_key)
                    tried.append(f"agent:{agent_key.fingerprint}")
        except paramiko.SSHException:
            pass
    if opts.look_for_keys:
        for name in DEFAULT_KEY_NAMES:
            path = Path.home() / ".ssh" / name
            if path.exists() and path not in paths:
                key = _load_key(path, opts, target, explicit=False)
                if key is not None and key.fingerprint not in seen:
                    seen.add(key.fingerprint)
                    keys.append(key)
                    tried.append(str(path))
    return keys


def _load_key(
    path: Path, opts: ConnectOptions, target: Target, *, explicit: bool
) -> paramiko.PKey | None:
    try:
        return paramiko.PKey.from_path(path, password=opts.key_passphrase)
    except FileNotFoundError as exc:
        if explicit:
            raise AuthError(f"private key file not found: {path}", host=target.name) from exc
        return None
    except (paramiko.PasswordRequiredException, paramiko.SSHException, OSError, ValueError) as exc:
        if explicit:
            raise AuthError(
                f"cannot load private key {path}: {_reason(exc)}", host=target.name
            ) from exc
        return None


def connect_chain(
    target: Target, known_hosts: KnownHosts, opts: ConnectOptions
) -> list[paramiko.Transport]:
    """Transports for every hop and the target, outermost first; close them in reverse."""
    transports: list[paramiko.Transport] = []
    via: paramiko.Transport | None = None
    try:
        for hop in (*target.jumps, target):
            sock = open_socket(hop, opts, via)
            transport = handshake(hop, sock, known_hosts, opts)
            transports.append(transport)
            authenticate(transport, hop, opts)
            via = transport
    except BaseException:
        for t in reversed(transports):
            t.close()
        raise
    return transports


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return text
