"""Turn inventory hosts into connectors: SSH by default, local for `ansible_connection: local`.

A passphrase for encrypted private keys comes only from the environment variable
`AGENTCTL_KEY_PASSPHRASE` (never a setting, never logged or shown).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

from agentctl.ctl.connector import Become, Connector
from agentctl.ctl.errors import SudoError
from agentctl.ctl.inventory import Host, Inventory
from agentctl.ctl.local import LocalConnector
from agentctl.ctl.settings import Settings
from agentctl.ctl.ssh import (
    Aborter,
    ConnectOptions,
    HostValues,
    KnownHosts,
    SSHConnector,
    Target,
    load_ssh_config,
    resolve_target,
)

#: Holds the passphrase of encrypted private keys (ssh-agent is the better place for them).
KEY_PASSPHRASE_ENV = "AGENTCTL_KEY_PASSPHRASE"  # noqa: S105 (a variable's name, not a secret)


def connect_options(settings: Settings) -> ConnectOptions:
    return ConnectOptions(
        connect_timeout=settings.connect_timeout,
        banner_timeout=settings.banner_timeout,
        auth_timeout=settings.auth_timeout,
        keepalive_interval=settings.keepalive_interval,
        use_agent=settings.use_agent,
        look_for_keys=settings.look_for_keys,
        # An empty variable counts as unset, as for every AGENTCTL_* variable.
        key_passphrase=os.environ.get(KEY_PASSPHRASE_ENV) or None,
    )


def is_local(host: Host) -> bool:
    return str(host.vars.get("ansible_connection", "ssh")) == "local"


@dataclass
class Connections:
    """Everything needed to reach the inventory's hosts, built once per command.

    `abort()` (from a fan-out's cancel, on Ctrl-C) cuts short every connection still being set
    up, and makes later ones fail at once as unreachable ("aborted").
    """

    settings: Settings
    inventory: Inventory
    known_hosts: KnownHosts = field(init=False)
    warnings: list[str] = field(default_factory=list)
    aborter: Aborter = field(default_factory=Aborter, init=False, repr=False)

    def __post_init__(self) -> None:
        self.known_hosts = KnownHosts(self.settings.effective_known_hosts())
        path = self.settings.ssh_config if self.settings.use_ssh_config else None
        self._ssh_lookup, warnings = load_ssh_config(path)
        self.warnings.extend(warnings)
        self.options = connect_options(self.settings)

    def target(self, host: Host) -> Target:
        return resolve_target(
            _values(host),
            ssh_config=self._ssh_lookup,
            inventory=self._inventory_values,
            extra_key_files=tuple(str(p) for p in self.settings.identity_files),
        )

    def _inventory_values(self, name: str) -> HostValues | None:
        host = self.inventory.hosts.get(name)
        return _values(host) if host else None

    def connect(self, host: Host) -> Connector:
        self.aborter.check(host.name)
        if is_local(host):
            return LocalConnector(
                host.name,
                default_timeout=self.settings.command_timeout,
                output_cap=self.settings.output_cap_bytes,
            )
        return SSHConnector(
            self.target(host),
            self.known_hosts,
            self.options,
            default_timeout=self.settings.command_timeout,
            output_cap=self.settings.output_cap_bytes,
            aborter=self.aborter,
        )

    def connector_factory(self) -> Callable[[Host], Connector]:
        return self.connect

    def abort(self) -> None:
        """Close every connection still being set up; refuse new ones. Safe from any thread."""
        self.aborter.abort()

    def become_for(self, host: Host, *, sudo: bool, user: str | None = None) -> Become | None:
        """sudo for this host: `--sudo` or `ansible_become`; password only from the environment."""
        if not (sudo or host.become):
            return None
        password = None
        if self.settings.sudo_password_env:
            password = os.environ.get(self.settings.sudo_password_env)
            if password is None:
                raise SudoError(
                    f"sudo_password_env names ${self.settings.sudo_password_env}, which is unset",
                    host=host.name,
                )
        if password is None and host.become_password is not None:
            password = host.become_password
        return Become(user=user or host.become_user or "root", password=password)


def _values(host: Host) -> HostValues:
    explicit_address = "ansible_host" in host.vars
    return HostValues(
        name=host.name,
        # ssh_config is looked up by ansible_host when set (what Ansible hands to ssh), else by
        # the name, which may be an alias that HostName resolves.
        address=host.address if explicit_address else None,
        port=host.port,
        user=host.user,
        key_file=host.key_file,
        proxy_jump=host.proxy_jump,
    )
