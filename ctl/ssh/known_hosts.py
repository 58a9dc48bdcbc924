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
from paramiko.hostkeys import InvalidHostKey

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
        """(Re)read the file; anything unreadable is a ConfigError naming the file."""
        keys = paramiko.HostKeys()
        if self.path.exists():
            try:
                keys.load(str(self.path))
            except UnicodeDecodeError as exc:
                raise ConfigError(
                    f"cannot read known_hosts {self.path}: not a text file ({exc.reason})",
                    hint="point the known_hosts setting at an OpenSSH known_hosts file",
                ) from exc
            except InvalidHostKey as exc:
                line = " ".join(str(exc.line).split())[:80]
                marker = line.startswith("@")
                raise ConfigError(
                    f"cannot read known_hosts {self.path}: invalid entry {line!r}"
                    + (" (@cert-authority and @revoked lines are not supported)" if marker else ""),
                    hint="fix or remove that line (`ssh-keygen -F HOST -f FILE` shows entries)",
                ) from exc
            except Exception as exc:  # paramiko raises assorted types for malformed key data
                raise ConfigError(
                    f"cannot read known_hosts {self.path}: {exc or type(exc).__name__}",
                    hint="fix or remove the malformed line",
                ) from exc
        self._keys = keys

    def key_types(self, host: str) -> list[str]:
        entry = self._keys.lookup(host)
        return list(entry.keys()) if entry else []

    def check(self, host: str, key: paramiko.PKey, *, label: str | None = None) -> None:
        """Raise HostKeyError unless `key` is recorded for `host`.

        A host with no entry is "unknown" (trust it explicitly); so is a key of a type not
        recorded for a known host (as OpenSSH says, "keys of a different type are already
        known"). A host whose recorded key of this type differs is "changed", which may mean
        interception and is never auto-fixed.
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
        if known is None:
            recorded_types = ", ".join(entry.keys())
            raise HostKeyError(
                f"unknown key type for a known host: {host} offered {info.key_type} "
                f"{info.fingerprint}, but only {recorded_types} is recorded for it",
                host=name,
                hint="check the fingerprint out of band, then run: "
                f"agentctl hosts trust {name} (adds this key type; the recorded one stays)",
                fingerprint=info.fingerprint,
            )
        if known.asbytes() != key.asbytes():
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
