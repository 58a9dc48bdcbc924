"""Assemble read definitions into an Inventory with Ansible's variable precedence.

Ansible merges group variables in order of (depth, ansible_group_priority, name), `all` first
(depth 0) and deeper groups later, then host variables on top; later wins. Depth is the longest
path from `all`, so a group nested anywhere below another always overrides it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import InventoryError
from .model import Group, Host, Inventory
from .raw import Origin, RawInventory, VarDef
from .sshargs import find_proxy_jump, parse_jump
from .variables import (
    PRIORITY_VAR,
    to_address,
    to_bool,
    to_int,
    to_port,
    to_proxy_jump,
    to_str,
)

T = TypeVar("T")
#: merged variables: name -> (definition, rank of the level that set it; higher wins)
Merged = dict[str, tuple[VarDef, int]]


def build(raw: RawInventory) -> Inventory:
    _check_names(raw)
    _check_cycles(raw)
    _adopt_orphans(raw)
    parents: dict[str, list[str]] = {name: [] for name in raw.groups}
    for group in raw.groups.values():
        for child in group.children:
            parents[child].append(group.name)
    depth: dict[str, int] = {}
    ancestors: dict[str, frozenset[str]] = {}

    def depth_of(name: str) -> int:
        if name not in depth:
            depth[name] = max((depth_of(p) + 1 for p in parents[name]), default=0)
        return depth[name]

    def ancestors_of(name: str) -> frozenset[str]:
        if name not in ancestors:
            found = {name}
            for parent in parents[name]:
                found |= ancestors_of(parent)
            ancestors[name] = frozenset(found)
        return ancestors[name]

    priority = {name: _priority(raw, name) for name in raw.groups}
    memberships = _reconcile_ungrouped(raw, ancestors_of)

    def precedence(name: str) -> tuple[int, int, str]:
        return (depth_of(name), priority[name], name)

    hosts = {
        name: _host(raw, name, sorted(memberships[name], key=precedence)) for name in raw.hosts
    }
    groups = {
        name: Group(
            name=name,
            parents=tuple(parents[name]),
            children=tuple(group.children),
            hosts=tuple(group.hosts),
            vars={k: d.value for k, d in group.vars.items() if k != PRIORITY_VAR},
            priority=priority[name],
            depth=depth_of(name),
            line=group.origin.line,
        )
        for name, group in raw.groups.items()
    }
    return Inventory(path=raw.path, hosts=hosts, groups=groups)


def _error(raw: RawInventory, message: str, origin: Origin) -> InventoryError:
    return InventoryError(message, path=raw.path, line=origin.line, field=origin.field)


def _check_names(raw: RawInventory) -> None:
    """A name that is both a host and a group would make patterns ambiguous."""
    for name, host in raw.hosts.items():
        if name in raw.groups:
            where = raw.groups[name].origin.line
            also = f" (group on line {where})" if where is not None else ""
            raise _error(raw, f"{name!r} is both a host and a group{also}", host.origin)


def _adopt_orphans(raw: RawInventory) -> None:
    """Groups nobody lists as a child hang below `all`, as Ansible's reconcile step does."""
    adopted = set(raw.groups["all"].children)
    for group in raw.groups.values():
        adopted.update(group.children)
    for name, group in raw.groups.items():
        if name != "all" and name not in adopted:
            raw.link("all", name, group.origin)


def _check_cycles(raw: RawInventory) -> None:
    """Depth-first over every group, in definition order; a back edge is a cycle."""
    done: set[str] = set()
    path: list[str] = []

    def visit(name: str) -> None:
        path.append(name)
        for child, origin in raw.groups[name].children.items():
            if child in path:
                cycle = " -> ".join([*path[path.index(child) :], child])
                raise _error(raw, f"group cycle: {cycle}", origin)
            if child not in done:
                visit(child)
        path.pop()
        done.add(name)

    for name in raw.groups:
        if name not in done:
            visit(name)


def _priority(raw: RawInventory, name: str) -> int:
    definition = raw.groups[name].vars.get(PRIORITY_VAR)
    return 1 if definition is None else to_int(definition.value)


def _reconcile_ungrouped(
    raw: RawInventory, ancestors_of: Callable[[str], frozenset[str]]
) -> dict[str, set[str]]:
    """Every host's groups with ancestors; hosts in no real group go to `ungrouped` (Ansible)."""
    memberships: dict[str, set[str]] = {}
    for name, host in raw.hosts.items():
        groups: set[str] = {"all"}
        for direct in host.groups:
            groups |= ancestors_of(direct)
        if groups <= {"all", "ungrouped"}:
            groups |= ancestors_of("ungrouped")
        else:
            groups.discard("ungrouped")
        memberships[name] = groups
    raw.groups["ungrouped"].hosts = {
        name: None for name, groups in memberships.items() if "ungrouped" in groups
    }
    return memberships


def _host(raw: RawInventory, name: str, groups: list[str]) -> Host:
    entry = raw.hosts[name]
    merged: Merged = {}
    for rank, group in enumerate(groups):
        for var, definition in raw.groups[group].vars.items():
            if var != PRIORITY_VAR:
                merged[var] = (definition, rank)
    for var, definition in entry.vars.items():
        merged[var] = (definition, len(groups))
    shadowed = _role_spelling_shadowed(raw, merged)
    jump = _proxy_jump(raw, merged)
    password = _pick(raw, merged, ("ansible_become_password", "ansible_become_pass"), to_str)
    return Host(
        name=name,
        address=_pick(raw, merged, ("ansible_host", "ansible_ssh_host"), to_address) or name,
        port=_pick(raw, merged, ("ansible_port", "ansible_ssh_port"), to_port),
        user=_pick(raw, merged, ("ansible_user", "ansible_ssh_user"), to_str),
        key_file=_pick(
            raw, merged, ("ansible_ssh_private_key_file", "ansible_private_key_file"), to_str
        ),
        become=bool(_pick(raw, merged, ("ansible_become",), to_bool)),
        become_user=_pick(raw, merged, ("ansible_become_user",), to_str),
        become_password=password,
        proxy_jump=jump,
        groups=tuple(groups),
        vars={var: d.value for var, (d, _) in merged.items() if var != shadowed},
        source=raw.path,
        line=entry.origin.line,
    )


def _winner(merged: Merged, names: tuple[str, ...]) -> str | None:
    """The most specific of several spellings of one setting; ties go to the first spelling."""
    best: str | None = None
    for name in names:
        if name in merged and (best is None or merged[name][1] > merged[best][1]):
            best = name
    return best


def _pick(
    raw: RawInventory, merged: Merged, names: tuple[str, ...], convert: Callable[[Any], T | None]
) -> T | None:
    name = _winner(merged, names)
    if name is None:
        return None
    definition = merged[name][0]
    try:
        return convert(definition.value)
    except ValueError as exc:  # already checked per definition; kept for hand-made raw input
        raise _error(raw, str(exc), definition.origin) from None


def _role_spelling_shadowed(raw: RawInventory, merged: Merged) -> str | None:
    """agentctl_roles / agentctl_role are one setting: the more specific one hides the other."""
    if "agentctl_roles" not in merged or "agentctl_role" not in merged:
        return None
    (_, many_rank), (one, one_rank) = merged["agentctl_roles"], merged["agentctl_role"]
    if many_rank == one_rank:
        raise _error(raw, "set agentctl_roles or agentctl_role, not both", one.origin)
    return "agentctl_role" if many_rank > one_rank else "agentctl_roles"


def _proxy_jump(raw: RawInventory, merged: Merged) -> str | None:
    """agentctl_proxy_jump wins over anything in ssh arguments; else common args, then extra."""
    if "agentctl_proxy_jump" in merged:
        return _pick(raw, merged, ("agentctl_proxy_jump",), to_proxy_jump)
    for name in ("ansible_ssh_common_args", "ansible_ssh_extra_args"):
        args = _pick(raw, merged, (name,), to_str)
        jump = None if args is None else find_proxy_jump(args)
        if jump is not None:
            return parse_jump(jump)
    return None
