"""What a reader collects before the inventory is assembled: definitions with their origin.

Every variable and child link remembers the line and field that wrote it, so errors found while
assembling (cycles, conflicts) still point at the text the operator has to fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Origin:
    line: int | None
    field: str


@dataclass(frozen=True)
class VarDef:
    value: Any
    origin: Origin


@dataclass
class RawGroup:
    name: str
    origin: Origin
    vars: dict[str, VarDef] = field(default_factory=dict)
    #: child group name -> where the link was written
    children: dict[str, Origin] = field(default_factory=dict)
    #: direct hosts, in order (a dict used as an ordered set)
    hosts: dict[str, None] = field(default_factory=dict)


@dataclass
class RawHost:
    name: str
    origin: Origin
    vars: dict[str, VarDef] = field(default_factory=dict)
    #: groups the host was listed under, in order (a dict used as an ordered set)
    groups: dict[str, None] = field(default_factory=dict)


@dataclass
class RawInventory:
    """Groups and hosts in definition order; `all` and `ungrouped` always exist, as in Ansible."""

    path: str | None
    groups: dict[str, RawGroup] = field(default_factory=dict)
    hosts: dict[str, RawHost] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.group("all", Origin(None, "all"))
        self.group("ungrouped", Origin(None, "ungrouped"))
        self.link("all", "ungrouped", Origin(None, "ungrouped"))

    def group(self, name: str, origin: Origin) -> RawGroup:
        """The group called `name`, created on first mention (later mentions add to it)."""
        group = self.groups.setdefault(name, RawGroup(name, origin))
        if group.origin.line is None:  # `all` / `ungrouped` exist before they are written
            group.origin = origin
        return group

    def host(self, name: str, origin: Origin) -> RawHost:
        if name not in self.hosts:
            self.hosts[name] = RawHost(name, origin)
        return self.hosts[name]

    def link(self, parent: str, child: str, origin: Origin) -> None:
        self.groups[parent].children.setdefault(child, origin)

    def place(self, group: str, host: str) -> None:
        self.groups[group].hosts[host] = None
        self.hosts[host].groups[group] = None
