"""The loaded inventory: immutable hosts and groups, connection settings already resolved.

Resolution happens once, at load time, so a bad value fails `agentctl inventory check` rather
than the tenth host of a rollout. Secrets stay out of every repr and public dict.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..errors import InventoryError
from .frozen import FrozenVars, public
from .patterns import select_hosts
from .variables import to_gpu_count, to_install_root, to_role, to_roles

T = TypeVar("T")


def _frozen(obj: object, name: str) -> None:
    value = getattr(obj, name)
    if not isinstance(value, FrozenVars):
        object.__setattr__(obj, name, FrozenVars(value))


@dataclass(frozen=True)
class Host:
    """One machine and how to reach it. `vars` is the merged, read-only variable view."""

    name: str
    address: str
    port: int | None = None
    user: str | None = None
    key_file: str | None = None
    become: bool = False
    become_user: str | None = None
    become_password: str | None = field(default=None, repr=False)
    proxy_jump: str | None = None
    #: every group the host is in, ancestors included, in variable-precedence order (`all` first)
    groups: tuple[str, ...] = ("all",)
    vars: Mapping[str, Any] = field(default_factory=FrozenVars, hash=False)
    source: str | None = None
    line: int | None = None

    def __post_init__(self) -> None:
        _frozen(self, "vars")
        object.__setattr__(self, "groups", tuple(self.groups))

    def _var(self, name: str, convert: Callable[[Any], T]) -> T:
        try:
            return convert(self.vars.get(name))
        except ValueError as exc:
            raise InventoryError(str(exc), path=self.source, line=self.line, field=name) from None

    @property
    def roles(self) -> tuple[str, ...]:
        """agentctl roles from `agentctl_roles` (a list) or `agentctl_role` (one name)."""
        if "agentctl_roles" in self.vars:
            return self._var("agentctl_roles", to_roles)
        return self._var("agentctl_role", to_role)

    @property
    def expected_gpus(self) -> int | None:
        return self._var("agentctl_expected_gpus", to_gpu_count)

    @property
    def install_root(self) -> str:
        return self._var("agentctl_install_root", to_install_root)

    def to_public_dict(self) -> dict[str, Any]:
        """JSON-ready view without secrets (the become password shows only as set / not set)."""
        return {
            "name": self.name,
            "address": self.address,
            "port": self.port,
            "user": self.user,
            "key_file": self.key_file,
            "become": self.become,
            "become_user": self.become_user,
            "become_password_set": self.become_password is not None,
            "proxy_jump": self.proxy_jump,
            "groups": list(self.groups),
            "roles": list(self.roles),
            "expected_gpus": self.expected_gpus,
            "install_root": self.install_root,
            "vars": public(self.vars),
            "source": self.source,
            "line": self.line,
        }


@dataclass(frozen=True)
class Group:
    """A group as written: direct members only (selection walks `children` for the rest)."""

    name: str
    parents: tuple[str, ...] = ()
    children: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    #: the group's own variables (not merged); ansible_group_priority lives in `priority`
    vars: Mapping[str, Any] = field(default_factory=FrozenVars, hash=False)
    priority: int = 1
    #: longest distance from `all`; deeper groups override shallower ones
    depth: int = 0
    line: int | None = None

    def __post_init__(self) -> None:
        _frozen(self, "vars")

    def to_public_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "parents": list(self.parents),
            "children": list(self.children),
            "hosts": list(self.hosts),
            "vars": public(self.vars),
            "priority": self.priority,
            "depth": self.depth,
            "line": self.line,
        }


@dataclass(frozen=True)
class Inventory:
    """Hosts in file order and groups by name; `path` is None for an ad-hoc host list."""

    path: str | None
    hosts: dict[str, Host] = field(default_factory=dict, hash=False)
    groups: dict[str, Group] = field(default_factory=dict, hash=False)

    def select(self, pattern: str | None) -> list[Host]:
        """Hosts matching an Ansible pattern, in inventory order; UsageError if malformed."""
        return select_hosts(self, pattern)

    def to_public_dict(self) -> dict[str, Any]:
        """What `agentctl inventory show --json` prints: no secret anywhere."""
        return {
            "path": self.path,
            "hosts": [host.to_public_dict() for host in self.hosts.values()],
            "groups": [group.to_public_dict() for group in self.groups.values()],
        }
