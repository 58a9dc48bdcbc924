"""Ansible host patterns: `web*`, `~regex`, `a,b` / `a:b`, `&group`, `!host`, `all`.

As in Ansible, plain elements are united first, then each `&` element intersects and each `!`
element subtracts, whatever the order they were written in; a pattern made only of `&`/`!`
elements starts from `all`. Unlike Ansible the result is always in inventory order.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import UsageError

if TYPE_CHECKING:
    from .model import Host, Inventory

_GLOB_CHARS = frozenset("*?[")


@dataclass(frozen=True)
class Element:
    """One comma/colon separated part of a pattern; `op` is "", "&" or "!"."""

    op: str
    text: str


def split_pattern(pattern: str) -> list[Element]:
    """Parse a pattern into elements; UsageError for an empty element or a bad regex.

    Separators inside (), [] or {} are not split on, so `~node(?:0|1)` and `gpu[0-9]` survive.
    """
    elements = []
    for part in _split(pattern):
        text = part.strip()
        op = text[:1] if text[:1] in ("&", "!") else ""
        text = text[len(op) :].strip()
        if not text:
            raise UsageError(f"empty element in host pattern {pattern!r}")
        if text[0] in "&!":
            raise UsageError(f"element {part.strip()!r} of {pattern!r} has two operators")
        if text.startswith("~"):
            try:
                re.compile(text[1:])
            except re.error as exc:
                raise UsageError(f"bad regex {text!r} in host pattern: {exc}") from None
        elements.append(Element(op, text))
    return elements


def _split(pattern: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth, in_class, escaped = 0, False, False
    for char in pattern:
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
        elif char in "({":
            depth += 1
        elif char in ")}":
            depth = max(0, depth - 1)
        elif char in ",:" and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def select_hosts(inventory: Inventory, pattern: str | None) -> list[Host]:
    """Hosts matching `pattern` in inventory order, each once; [] when nothing matches."""
    hosts = list(inventory.hosts.values())
    if pattern is None:
        return hosts
    elements = split_pattern(pattern)
    plain = [e for e in elements if not e.op] or [Element("", "all")]
    chosen: set[str] = set()
    for element in plain:
        chosen |= _match(inventory, element.text)
    for element in elements:
        if element.op == "&":
            chosen &= _match(inventory, element.text)
        elif element.op == "!":
            chosen -= _match(inventory, element.text)
    return [host for host in hosts if host.name in chosen]


def _match(inventory: Inventory, text: str) -> set[str]:
    """Names of hosts one element selects: matching hosts plus members of matching groups."""
    if text in ("all", "*"):
        return set(inventory.hosts)
    if text.startswith("~"):
        regex = re.compile(text[1:])
        matches = regex.match  # Ansible anchors regexes at the start only
    elif _GLOB_CHARS & set(text):
        glob = re.compile(fnmatch.translate(text))
        matches = glob.match
    else:
        return _exact(inventory, text)
    groups = {name for name in inventory.groups if matches(name)}
    return {
        host.name
        for host in inventory.hosts.values()
        if matches(host.name) or groups.intersection(host.groups)
    }


def _exact(inventory: Inventory, text: str) -> set[str]:
    if text in inventory.hosts:
        return {text}
    if text in inventory.groups:
        return {h.name for h in inventory.hosts.values() if text in h.groups}
    return set()
