"""Turn inventory hosts into connectors: SSH by default, local for `ansible_connection: local`."""

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
    ConnectOptions,
    HostValues,
    KnownHosts,
    SSHConnector,
    Target,
    load_ssh_config,
    resolve_target,
)


def connect_options(settings: Settings) -> ConnectOptions:
    return ConnectOptions(
        connect_timeout=settings.connect_timeout,
        banner_timeout=settings.banner_timeout,
        auth_timeout=settings.auth_timeout,
        keepalive_interval=settings.keepalive_interval,
        use_agent=settings.use_agent,
        look_for_keys=settings.look_for_keys,
    )


def is_local(host: Host) -> bool:
    return str(host.vars.get("ansible_connection", "ssh")) == "local"


@dataclass
class Connections:
    """Everything needed to reach the inventory's hosts, built once per command."""

    settings: Settings
    inventory: Inventory
    known_hosts: KnownHosts = field(init=False)
    warnings: list[str] = field(default_factory=list)

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
        )

    def connector_factory(self) -> Callable[[Host], Connector]:
        return self.connect

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
        # Without ansible_host the name may be an ssh_config alias: let HostName resolve it.
        address=host.address if explicit_address else None,
        port=host.port,
        user=host.user,
        key_file=host.key_file,
        proxy_jump=host.proxy_jump,
    )
