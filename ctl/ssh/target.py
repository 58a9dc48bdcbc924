"""Where and as whom to connect: inventory values merged with ~/.ssh/config, OpenSSH-style.

Pure data and parsing, no sockets: the connection code takes a resolved `Target`.
Precedence follows Ansible: inventory connection variables win over ssh_config, which wins
over defaults. The name looked up in ssh_config is the one Ansible hands to ssh: `ansible_host`
when set, else the inventory name. ProxyJump hops are resolved the same way, each with its own
config lookup; as in OpenSSH (`ssh -J a,b` runs `ssh -J a -W %h:%p b`), only the first hop's
own ProxyJump is followed, the later hops' are ignored.
"""

from __future__ import annotations

import dataclasses
import getpass
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agentctl.ctl.errors import ConfigError, UsageError

_JUMP_RE = re.compile(
    r"^(?:(?P<user>[^@\s]+)@)?(?P<host>\[[^\]]+\]|[^:\s@\[\]]+)(?::(?P<port>\d+))?$"
)


@dataclass(frozen=True)
class Target:
    """A fully resolved SSH destination, jump chain included (outermost hop first)."""

    name: str
    hostname: str
    port: int = 22
    user: str = field(default_factory=getpass.getuser)
    key_files: tuple[str, ...] = ()
    jumps: tuple[Target, ...] = ()
    #: ssh_config `IdentitiesOnly yes`: offer only `key_files` (agent keys only if they match)
    identities_only: bool = False

    @property
    def known_hosts_key(self) -> str:
        """The name OpenSSH writes in known_hosts: `host` on port 22, else `[host]:port`."""
        return self.hostname if self.port == 22 else f"[{self.hostname}]:{self.port}"

    @property
    def label(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"


@dataclass(frozen=True)
class JumpSpec:
    user: str | None
    host: str
    port: int | None


def parse_jump_chain(value: str) -> list[JumpSpec]:
    """`[user@]host[:port]` hops separated by commas, as in OpenSSH's ProxyJump / -J."""
    hops: list[JumpSpec] = []
    if value.strip().lower() == "none":
        return hops
    for raw in value.split(","):
        raw = raw.strip()
        if raw.startswith("ssh://"):
            raw = raw[len("ssh://") :]
        m = _JUMP_RE.match(raw)
        if not m:
            raise UsageError(f"invalid ProxyJump hop {raw!r}: expected [user@]host[:port]")
        port = int(m.group("port")) if m.group("port") else None
        if port is not None and not 0 < port < 65536:
            raise UsageError(f"invalid ProxyJump port in {raw!r}")
        hops.append(JumpSpec(m.group("user"), m.group("host").strip("[]"), port))
    return hops


#: Looks a name up in ssh_config; returns paramiko-style keys (hostname, user, port, ...).
ConfigLookup = Callable[[str], Mapping[str, Any]]
#: Finds connection values for a jump-host name that is also an inventory host, else None.
InventoryLookup = Callable[[str], "HostValues | None"]


@dataclass(frozen=True)
class HostValues:
    """What the inventory says about a host's connection (all optional)."""

    name: str
    address: str | None = None
    port: int | None = None
    user: str | None = None
    key_file: str | None = None
    proxy_jump: str | None = None


def resolve_target(
    values: HostValues,
    *,
    ssh_config: ConfigLookup | None = None,
    inventory: InventoryLookup | None = None,
    extra_key_files: tuple[str, ...] = (),
    _depth: int = 0,
    _follow_jumps: bool = True,
) -> Target:
    """Merge inventory values with ssh_config for the host and, recursively, its jump hosts."""
    if _depth > 8:
        raise UsageError(f"{values.name}: ProxyJump chain too deep (loop?)")
    # Ansible runs `ssh ... <ansible_host or name>`, so that is the name ssh_config matches, and
    # its HostName, User, Port and IdentityFile apply to an ansible_host address too.
    lookup_name = values.address or values.name
    cfg: Mapping[str, Any] = ssh_config(lookup_name) if ssh_config else {}
    hostname = str(cfg.get("hostname") or lookup_name)
    port = values.port or _config_port(cfg, lookup_name)
    user = values.user or str(cfg.get("user") or getpass.getuser())
    keys: list[str] = []
    if values.key_file:
        keys.append(values.key_file)
    keys.extend(str(k) for k in cfg.get("identityfile", []) if str(k) not in keys)
    keys.extend(k for k in extra_key_files if k not in keys)
    jump_value = (values.proxy_jump or cfg.get("proxyjump")) if _follow_jumps else None
    jumps: list[Target] = []
    if jump_value:
        for index, hop in enumerate(parse_jump_chain(str(jump_value))):
            known = inventory(hop.host) if inventory else None
            hop_values = HostValues(
                name=hop.host,
                address=known.address if known else None,
                port=hop.port or (known.port if known else None),
                user=hop.user or (known.user if known else None),
                key_file=known.key_file if known else None,
            )
            hop_target = resolve_target(
                hop_values,
                ssh_config=ssh_config,
                inventory=None,
                extra_key_files=extra_key_files,
                _depth=_depth + 1,
                # `-J a,b` reaches b with `-J a` on the command line, which overrides b's own
                # ProxyJump; a is reached on its own terms, its ProxyJump included.
                _follow_jumps=index == 0,
            )
            jumps.extend(hop_target.jumps)
            jumps.append(dataclasses.replace(hop_target, jumps=()))
    return Target(
        name=values.name,
        hostname=hostname,
        port=port,
        user=user,
        key_files=tuple(keys),
        jumps=tuple(jumps),
        identities_only=str(cfg.get("identitiesonly", "no")).lower() == "yes",
    )


def _config_port(cfg: Mapping[str, Any], name: str) -> int:
    raw = cfg.get("port")
    if raw is None:
        return 22
    try:
        port = int(str(raw).strip())
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise ConfigError(
            f"ssh_config: Port {str(raw)!r} for host {name} is not a port number (1-65535)",
            hint="fix the Port line of the Host block that matches it (setting: ssh_config)",
        )
    return port
