"""Host and group names, and Ansible's host ranges (`node[01:20].example`, `rack-[a:c]`).

Names are what patterns select by, so a name containing a pattern operator could never be
selected on its own; such names are rejected when the inventory is read.
"""

from __future__ import annotations

import re
import string

#: a range may not expand to more hosts than this (a typo like [1:100000000] must not hang)
MAX_RANGE_HOSTS = 65_536

_OPERATORS = {":": "':'", ",": "','", "!": "'!'", "&": "'&'"}
_RANGE = re.compile(r"\[([^\[\]]*)\]")
_DIGITS = re.compile(r"[0-9]+")


def check_name(name: str, what: str) -> None:
    """Raise ValueError unless `name` can be written in a pattern (`what`: "host"/"group")."""
    if not name:
        raise ValueError(f"{what} name must not be empty")
    if any(ch.isspace() for ch in name):
        raise ValueError(f"{what} name {name!r} contains whitespace")
    for char, shown in _OPERATORS.items():
        if char in name:
            hint = ""
            if char == ":" and what == "host":
                hint = " (set ansible_port for a port, ansible_host for an IPv6 address)"
            raise ValueError(f"{what} name {name!r} contains {shown}, a pattern operator{hint}")
    if name.startswith("~"):
        raise ValueError(f"{what} name {name!r} starts with '~', which marks a regex pattern")


def expand_hosts(pattern: str) -> list[str]:
    """All names a host key stands for; several ranges multiply. Raises ValueError."""
    if "[" not in pattern and "]" not in pattern:
        return [pattern]
    match = _RANGE.search(pattern)
    head = pattern[: match.start()] if match else pattern
    if match is None or "[" in head or "]" in head:
        raise ValueError(f"unbalanced '[' or ']' in host {pattern!r}")
    items = _range_items(match.group(1), pattern)
    tails = expand_hosts(pattern[match.end() :])
    if len(items) * len(tails) > MAX_RANGE_HOSTS:
        raise ValueError(f"host range {pattern!r} expands to more than {MAX_RANGE_HOSTS} hosts")
    return [head + item + tail for item in items for tail in tails]


def _range_items(body: str, pattern: str) -> list[str]:
    """Ansible's rules: [01:20] keeps the zero padding, [a:c] is letters, [1:9:2] has a step."""
    parts = body.split(":")
    if len(parts) not in (2, 3):
        raise ValueError(
            f"host range [{body}] in {pattern!r} must be [begin:end] or [begin:end:step]"
        )
    begin, end = parts[0] or "0", parts[1]
    step_text = parts[2] if len(parts) == 3 else "1"
    if not _DIGITS.fullmatch(step_text) or int(step_text) < 1:
        raise ValueError(f"host range [{body}] in {pattern!r} needs a positive integer step")
    step = int(step_text)
    if not end:
        raise ValueError(f"host range [{body}] in {pattern!r} needs an end value")
    if _DIGITS.fullmatch(begin) and _DIGITS.fullmatch(end):
        width = len(begin) if begin.startswith("0") and len(begin) > 1 else 0
        if width and len(end) != width:
            raise ValueError(
                f"host range [{body}] in {pattern!r}: zero-padded begin and end need equal length"
            )
        first, last = int(begin), int(end)
        if first > last:
            raise ValueError(f"host range [{body}] in {pattern!r} has begin > end")
        if (last - first) // step + 1 > MAX_RANGE_HOSTS:
            raise ValueError(f"host range {pattern!r} expands to more than {MAX_RANGE_HOSTS} hosts")
        return [str(n).zfill(width) for n in range(first, last + 1, step)]
    letters = string.ascii_letters
    if len(begin) == 1 and len(end) == 1 and begin in letters and end in letters:
        if letters.index(begin) > letters.index(end):
            raise ValueError(f"host range [{body}] in {pattern!r} has begin > end")
        return list(letters[letters.index(begin) : letters.index(end) + 1 : step])
    raise ValueError(
        f"host range [{body}] in {pattern!r} must be numbers ([01:20]) or single letters ([a:c])"
    )
