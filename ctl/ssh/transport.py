"""Open an authenticated paramiko Transport to a Target, hop by hop, verifying every host key.

Every paramiko and socket exception is translated here into agentctl's errors, so nothing above
this module knows paramiko exists. Unreachable (no SSH session) is kept apart from refused
(host key or authentication), because retries and exit codes differ.

Connection set-up blocks (TCP connect, banner, key exchange, authentication) for up to the
configured timeouts. An `Aborter` shared by the connecting threads cuts all of that short: it
closes every socket and transport still being set up, and refuses new attempts.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
from paramiko.agent import Agent

from agentctl.ctl.errors import AgentctlError, AuthError, HostKeyError, UnreachableError
from agentctl.ctl.ssh.known_hosts import KnownHosts
from agentctl.ctl.ssh.target import Target

DEFAULT_KEY_NAMES = ("id_ed25519", "id_ecdsa", "id_rsa")
#: Keys offered per host at most: sshd's default MaxAuthTries is 6, and it hangs up after that.
MAX_KEYS = 6
#: OpenSSH records an RSA host key as `ssh-rsa`; the signature algorithms a server negotiates
#: for it are these (OpenSSH >= 8.8 no longer offers SHA-1 `ssh-rsa` at all).
_HOST_KEY_ALGORITHMS = {"ssh-rsa": ("rsa-sha2-512", "rsa-sha2-256", "ssh-rsa")}

_Closable = socket.socket | paramiko.Channel | paramiko.Transport


class Aborter:
    """Closes the sockets and transports of connections still being set up, from any thread.

    Connecting code registers what it is blocked on (`guard`); `abort()` closes all of it, so
    a TCP connect, a banner wait, a key exchange or an authentication in progress fails at once,
    and every later attempt raises UnreachableError("aborted"). One-shot: it stays aborted.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: set[_Closable] = set()
        self._aborted = False

    @property
    def aborted(self) -> bool:
        return self._aborted

    def check(self, host: str | None = None) -> None:
        """Raise UnreachableError("aborted") once `abort()` was called."""
        if self._aborted:
            raise UnreachableError("aborted", host=host)

    def register(self, thing: _Closable, host: str | None = None) -> None:
        with self._lock:
            if not self._aborted:
                self._live.add(thing)
                return
        _close_quietly(thing)
        raise UnreachableError("aborted", host=host)

    def unregister(self, thing: _Closable) -> None:
        with self._lock:
            self._live.discard(thing)

    @contextlib.contextmanager
    def guard(self, thing: _Closable, host: str | None = None) -> Iterator[None]:
        """Keep `thing` registered for the duration of the block."""
        self.register(thing, host)
        try:
            yield
        finally:
            self.unregister(thing)

    def abort(self) -> None:
        """Close everything registered now, and refuse every later connection attempt."""
        with self._lock:
            self._aborted = True
            live, self._live = list(self._live), set()
        for thing in live:
            _close_quietly(thing)


def _close_quietly(thing: _Closable) -> None:
    with contextlib.suppress(Exception):
        if isinstance(thing, socket.socket):
            # shutdown() wakes a thread blocked in connect() or recv() on it; close() does not.
            with contextlib.suppress(OSError):
                thing.shutdown(socket.SHUT_RDWR)
            thing.close()
        elif isinstance(thing, paramiko.Transport):
            # close() is a no-op before start_client(); closing the socket stops it anyway.
            thing.close()
            sock = thing.sock
            if isinstance(sock, socket.socket):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        else:
            thing.close()


@contextlib.contextmanager
def _guarded(aborter: Aborter | None, thing: _Closable, host: str) -> Iterator[None]:
    if aborter is None:
        yield
        return
    with aborter.guard(thing, host):
        yield


def _raise_if_aborted(aborter: Aborter | None, target: Target, exc: BaseException) -> None:
    """An error caused by `abort()` closing our socket is reported as the abort it is."""
    if aborter is not None and aborter.aborted:
        raise UnreachableError("aborted", host=target.name) from exc


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
    target: Target,
    opts: ConnectOptions,
    via: paramiko.Transport | None,
    aborter: Aborter | None = None,
) -> socket.socket | paramiko.Channel:
    """A TCP socket, or a direct-tcpip channel through the previous hop (ProxyJump)."""
    if aborter is not None:
        aborter.check(target.name)
    try:
        if via is None:
            return _tcp_connect(target, opts.connect_timeout, aborter)
        return via.open_channel(
            "direct-tcpip",
            dest_addr=(target.hostname, target.port),
            src_addr=("", 0),
            timeout=opts.connect_timeout,
        )
    except (OSError, paramiko.SSHException, EOFError) as exc:
        _raise_if_aborted(aborter, target, exc)
        how = "through jump host" if via is not None else "to"
        raise UnreachableError(
            f"cannot connect {how} {target.hostname}:{target.port}: {_reason(exc)}",
            host=target.name,
        ) from exc
    except (ValueError, OverflowError) as exc:
        # The idna codec rejects empty or over-long labels ("a..b", 64+ characters) with
        # UnicodeError; a port out of range is an OverflowError.
        raise UnreachableError(
            f"cannot connect to {target.hostname}:{target.port}: invalid address ({exc})",
            host=target.name,
        ) from exc


def _tcp_connect(target: Target, timeout: float, aborter: Aborter | None) -> socket.socket:
    """socket.create_connection, with each attempt's socket registered with the aborter."""
    infos = socket.getaddrinfo(target.hostname, target.port, 0, socket.SOCK_STREAM)
    error: OSError | None = None
    for family, kind, proto, _canonname, address in infos:
        sock = socket.socket(family, kind, proto)
        try:
            with _guarded(aborter, sock, target.name):
                sock.settimeout(timeout)
                sock.connect(address)
            return sock
        except OSError as exc:
            sock.close()
            error = exc
            if aborter is not None and aborter.aborted:
                break
        except BaseException:
            sock.close()
            raise
    raise error or OSError(f"no address found for {target.hostname}")


def _preferred_key_types(offered: tuple[str, ...], known: list[str]) -> list[str]:
    """The host key algorithms we offer, those that can verify a recorded key type first."""
    wanted: list[str] = []
    for key_type in known:
        for algorithm in _HOST_KEY_ALGORITHMS.get(key_type, (key_type,)):
            if algorithm in offered and algorithm not in wanted:
                wanted.append(algorithm)
    return wanted + [t for t in offered if t not in wanted]


def handshake(
    target: Target,
    sock: socket.socket | paramiko.Channel,
    known_hosts: KnownHosts,
    opts: ConnectOptions,
    aborter: Aborter | None = None,
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
        opts_sec.key_types = _preferred_key_types(tuple(opts_sec.key_types), known_types)
    try:
        with _guarded(aborter, transport, target.name):
            transport.start_client(timeout=opts.connect_timeout + opts.banner_timeout)
            # start_client returns, without raising, when its timeout passes mid-negotiation.
            key = transport.get_remote_server_key()
    except (paramiko.SSHException, OSError, EOFError) as exc:
        _close_quietly(transport)
        _raise_if_aborted(aborter, target, exc)
        raise UnreachableError(
            f"SSH handshake with {target.hostname}:{target.port} failed: {_reason(exc)}",
            host=target.name,
        ) from exc
    except BaseException:
        _close_quietly(transport)
        raise
    try:
        known_hosts.check(target.known_hosts_key, key, label=target.name)
    except HostKeyError:
        transport.close()
        raise
    return transport


def fetch_host_key(
    target: Target,
    opts: ConnectOptions,
    via: paramiko.Transport | None = None,
    aborter: Aborter | None = None,
) -> paramiko.PKey:
    """The key a host offers, without authenticating: the first half of `hosts trust`."""
    sock = open_socket(target, opts, via, aborter)
    transport = paramiko.Transport(sock)
    transport.banner_timeout = opts.banner_timeout
    try:
        with _guarded(aborter, transport, target.name):
            transport.start_client(timeout=opts.connect_timeout + opts.banner_timeout)
            return transport.get_remote_server_key()
    except (paramiko.SSHException, OSError, EOFError) as exc:
        _raise_if_aborted(aborter, target, exc)
        raise UnreachableError(
            f"SSH handshake with {target.hostname}:{target.port} failed: {_reason(exc)}",
            host=target.name,
        ) from exc
    finally:
        _close_quietly(transport)


def authenticate(
    transport: paramiko.Transport,
    target: Target,
    opts: ConnectOptions,
    aborter: Aborter | None = None,
) -> None:
    """Public-key auth from explicit key files, then ssh-agent, then ~/.ssh defaults.

    At most MAX_KEYS keys are offered. Once the server has refused a key, losing the connection
    is an authentication failure (sshd hangs up after MaxAuthTries refusals), not unreachable.
    """
    candidates, skipped = _candidate_keys(target, opts)
    tried: list[str] = []
    for label, key in candidates:
        lost: BaseException | None = None
        try:
            transport.auth_publickey(target.user, key)
        except paramiko.BadAuthenticationType as exc:
            transport.close()
            _raise_if_aborted(aborter, target, exc)
            allowed = ", ".join(exc.allowed_types) or "none"
            raise AuthError(
                f"{target.label} does not accept public-key authentication (allows: {allowed})",
                host=target.name,
            ) from exc
        except paramiko.AuthenticationException as exc:
            # paramiko reports a connection closed while waiting for the answer this way too.
            if not transport.is_active():
                lost = exc
        except (paramiko.SSHException, OSError, EOFError) as exc:
            lost = exc
        tried.append(label)
        if lost is not None:
            transport.close()
            _raise_if_aborted(aborter, target, lost)
            refused = len(tried) - 1  # every key before this one was refused
            if refused:
                raise AuthError(
                    f"authentication refused for {target.label}: the server hung up after "
                    f"refusing {refused} key(s) (tried: {', '.join(tried)})",
                    host=target.name,
                    hint="sshd allows only MaxAuthTries attempts: offer the right key first "
                    "(ansible_ssh_private_key_file, or IdentityFile with IdentitiesOnly yes)",
                ) from lost
            raise UnreachableError(
                f"connection lost during authentication: {_reason(lost)}", host=target.name
            ) from lost
        if transport.is_authenticated():
            transport.set_keepalive(opts.keepalive_interval)
            return
    transport.close()
    if aborter is not None:
        aborter.check(target.name)
    what = ", ".join(tried) if tried else "no usable keys found"
    if skipped:
        what += f"; not offered: {', '.join(skipped)}"
    raise AuthError(
        f"authentication refused for {target.label} (tried: {what})",
        host=target.name,
        hint="set ansible_ssh_private_key_file or IdentityFile, or load the key into ssh-agent",
    )


def _candidate_keys(
    target: Target, opts: ConnectOptions
) -> tuple[list[tuple[str, paramiko.PKey]], list[str]]:
    """(label, key) to offer, in order, at most MAX_KEYS; and what was left out, and why.

    Explicit key files first, then ssh-agent, then ~/.ssh defaults. With `IdentitiesOnly yes`
    (ssh_config) and explicit key files, only those files are offered, as OpenSSH does: agent
    keys only when they are one of those files, and no defaults.
    """
    keys: list[tuple[str, paramiko.PKey]] = []
    seen: set[str] = set()
    # Fingerprints of the explicit files' public keys (for IdentitiesOnly agent matching).
    explicit_fps: set[str] = set()
    locked: list[str] = []  # encrypted explicit keys left to ssh-agent, and why

    def add(label: str, key: paramiko.PKey) -> None:
        if key.fingerprint not in seen:
            seen.add(key.fingerprint)
            keys.append((label, key))

    paths = [Path(os.path.expanduser(p)) for p in target.key_files]
    agent_usable = opts.use_agent and bool(os.environ.get("SSH_AUTH_SOCK"))
    for path in paths:
        try:
            key = _load_key(path, opts, target, explicit=True, agent_may_have_it=agent_usable)
        except _KeyLocked as exc:  # ssh-agent may hold it: offer the agent's copy
            locked.append(f"{path} ({exc})")
            public = _public_key_fingerprint(path)
            if public is not None:
                explicit_fps.add(public)
            continue
        if key is not None:
            explicit_fps.add(key.fingerprint)
            add(str(path), key)
    only_explicit = target.identities_only and bool(paths)
    if agent_usable:
        try:
            for agent_key in Agent().get_keys():
                if only_explicit and agent_key.fingerprint not in explicit_fps:
                    continue
                add(f"agent:{agent_key.fingerprint}", agent_key)
        except paramiko.SSHException:
            pass
    if opts.look_for_keys and not only_explicit:
        for name in DEFAULT_KEY_NAMES:
            path = Path.home() / ".ssh" / name
            if path.exists() and path not in paths:
                key = _load_key(path, opts, target, explicit=False)
                if key is not None:
                    add(str(path), key)
    if not keys and locked:
        raise AuthError(
            f"private key {locked[0]}; ssh-agent does not hold it either",
            host=target.name,
            hint="load the key into ssh-agent, or set AGENTCTL_KEY_PASSPHRASE",
        )
    skipped = locked + [f"{label} (over the limit of {MAX_KEYS})" for label, _ in keys[MAX_KEYS:]]
    return keys[:MAX_KEYS], skipped


def _public_key_fingerprint(private_path: Path) -> str | None:
    """The SHA256 fingerprint of `<key>.pub`, as PKey.fingerprint writes it; None if unreadable."""
    try:
        fields = Path(f"{private_path}.pub").read_text().split()
        blob = base64.b64decode(fields[1], validate=True)
    except (OSError, UnicodeDecodeError, IndexError, ValueError):
        return None
    digest = base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


class _KeyLocked(Exception):
    """An encrypted private key that the passphrase given (if any) does not open."""


def _read_key(path: Path, passphrase: str | None) -> paramiko.PKey:
    """Load a private key; raises _KeyLocked when it is encrypted and cannot be opened.

    paramiko's from_path raises TypeError both for an encrypted key without a password and for
    a password given with a key that is not encrypted, and wants the password as bytes.
    """
    try:
        return paramiko.PKey.from_path(path)
    except (TypeError, paramiko.PasswordRequiredException) as exc:
        if passphrase is None:
            raise _KeyLocked("encrypted, and no passphrase was given") from exc
    try:
        # The stubs say str; paramiko 5 hands it to `cryptography`, which wants bytes.
        return paramiko.PKey.from_path(path, password=passphrase.encode())  # type: ignore[arg-type]
    except (TypeError, ValueError, paramiko.SSHException) as exc:
        raise _KeyLocked("encrypted, and the passphrase given does not decrypt it") from exc


def _load_key(
    path: Path,
    opts: ConnectOptions,
    target: Target,
    *,
    explicit: bool,
    agent_may_have_it: bool = False,
) -> paramiko.PKey | None:
    """The key at `path`; None for an unusable default key. An unusable explicit key is an
    AuthError, except an encrypted one that ssh-agent may hold (_KeyLocked, for the caller)."""
    try:
        return _read_key(path, opts.key_passphrase)
    except FileNotFoundError as exc:
        if explicit:
            raise AuthError(f"private key file not found: {path}", host=target.name) from exc
        return None
    except _KeyLocked as exc:
        if not explicit:
            return None
        if agent_may_have_it:
            raise
        raise AuthError(
            f"private key {path} is {exc}",
            host=target.name,
            hint="load the key into ssh-agent, or set AGENTCTL_KEY_PASSPHRASE",
        ) from exc
    except (paramiko.SSHException, OSError, ValueError) as exc:
        if explicit:
            raise AuthError(
                f"cannot load private key {path}: {_reason(exc)}", host=target.name
            ) from exc
        return None


def connect_chain(
    target: Target,
    known_hosts: KnownHosts,
    opts: ConnectOptions,
    aborter: Aborter | None = None,
) -> list[paramiko.Transport]:
    """Transports for every hop and the target, outermost first; close them in reverse.

    With an `aborter`, every socket and transport of the chain stays registered with it until
    the whole chain is up, so `aborter.abort()` interrupts any step of it.
    """
    transports: list[paramiko.Transport] = []
    via: paramiko.Transport | None = None
    try:
        for hop in (*target.jumps, target):
            sock = open_socket(hop, opts, via, aborter)
            transport = handshake(hop, sock, known_hosts, opts, aborter)
            transports.append(transport)
            if aborter is not None:
                aborter.register(transport, hop.name)
            authenticate(transport, hop, opts, aborter)
            via = transport
    except BaseException as exc:
        for t in reversed(transports):
            _close_quietly(t)
        if isinstance(exc, Exception) and not isinstance(exc, AgentctlError):
            _raise_if_aborted(aborter, target, exc)
        raise
    finally:
        if aborter is not None:
            for t in transports:
                aborter.unregister(t)
    return transports


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return text
