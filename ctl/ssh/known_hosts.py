"""agentctl's own known_hosts: strict checking, explicit trust, atomic writes.

The file uses OpenSSH's format so operators can inspect it with `ssh-keygen -F`. Writes go to a
temporary file and are renamed over the old one under an exclusive lock, so concurrent
`hosts trust` runs never lose or duplicate an entry (paramiko's HostKeys.add duplicates
hashed entries and its save is not atomic).
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import paramiko

from agentctl.ctl.errors import ConfigError, HostKeyError


@dataclass(frozen=True)
class KeyInfo:
    """A host key as shown to an operator before trusting it."""

    host: str
    key_type: str
    fingerprint: str  # "SHA256:..." as `ssh-keygen -l` prints it
    base64: str


def describe(host: str, key: paramiko.PKey) -> KeyInfo:
    return KeyInfo(host, key.get_name(), key.fingerprint, key.get_base64())


class KnownHosts:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._keys = paramiko.HostKeys()
        self.reload()

    def reload(self) -> None:
        self._keys = paramiko.HostKeys()
        if self.path.exists():
            try:
                self._keys.load(str(self.path))
            except (OSError, paramiko.SSHException) as exc:
                raise ConfigError(f"cannot read known_hosts {self.path}: {exc}") from exc

    def key_types(self, host: str) -> list[str]:
        entry = self._keys.lookup(host)
        return list(entry.keys()) if entry else []

    def check(self, host: str, key: paramiko.PKey, *, label: str | None = None) -> None:
        """Raise HostKeyError unless `key` is recorded for `host`.

        A host with no entry is "unknown" (trust it explicitly); a host whose entry for this
        key type differs is "changed", which may mean interception and is never auto-fixed.
        """
        name = label or host
        entry = self._keys.lookup(host)
        info = describe(host, key)
        if not entry:
            raise HostKeyError(
                f"unknown host key {info.key_type} {info.fingerprint} for {host}",
                host=name,
                hint=f"check the fingerprint out of band, then run: agentctl hosts trust {name}",
                fingerprint=info.fingerprint,
            )
        known = entry.get(key.get_name())
        if known is None or known.asbytes() != key.asbytes():
            recorded = ", ".join(f"{k.get_name()} {k.fingerprint}" for k in entry.values())
            raise HostKeyError(
                "REMOTE HOST KEY HAS CHANGED for "
                f"{host}: offered {info.key_type} {info.fingerprint}, recorded {recorded}. "
                "Someone could be intercepting the connection, or the host was reinstalled.",
                host=name,
                hint=f"if the change is expected, remove the old entry from {self.path} "
                "and trust the host again",
                changed=True,
                fingerprint=info.fingerprint,
            )

    def add(self, host: str, key: paramiko.PKey) -> bool:
        """Record `key` for `host` atomically; False when it was already recorded."""
        with self._locked():
            self.reload()
            current = self._keys.lookup(host)
            if current and key.get_name() in current:
                if current[key.get_name()].asbytes() == key.asbytes():
                    return False
                raise HostKeyError(
                    f"a different {key.get_name()} key is already recorded for {host}",
                    host=host,
                    changed=True,
                    hint=f"remove the old entry from {self.path} first",
                )
            self._keys.add(host, key.get_name(), key)
            self._write()
            return True

    def entries(self) -> Iterator[KeyInfo]:
        for host in self._keys:
            for key in self._keys[host].values():
                yield describe(host, key)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with open(lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write(self) -> None:
        fd, tmp = tempfile.mkstemp(prefix=".known_hosts.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as fh:
                for host in self._keys:
                    for key in self._keys[host].values():
                        fh.write(f"{host} {key.get_name()} {key.get_base64()}\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp, 0o600)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
