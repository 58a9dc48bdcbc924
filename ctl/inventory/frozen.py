"""Read-only variable mappings that never print a secret.

Inventory variables are shared by every host of a group; freezing them deeply means one consumer
cannot change what another sees, and masking in `repr` keeps passwords out of logs and tracebacks.
"""

from __future__ import annotations

import base64
import datetime as dt
import math
import re
from collections.abc import Iterator, Mapping
from typing import Any

MASK = "***"

# `_pass` covers Ansible's ansible_become_pass / ansible_ssh_pass, which contain no "password".
_SECRET_NAME = re.compile(
    r"password|passwd|passphrase|secret|token|credential|api_?key|(?:^|_)pass(?:_|$)",
    re.IGNORECASE,
)


def is_secret_name(name: object) -> bool:
    """True for variable names whose values must never be shown."""
    return isinstance(name, str) and _SECRET_NAME.search(name) is not None


class FrozenVars(Mapping[Any, Any]):
    """An immutable mapping (nested dicts frozen, lists turned into tuples)."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[Any, Any] | None = None) -> None:
        self._data: dict[Any, Any] = {k: freeze(v) for k, v in (data or {}).items()}

    def __getitem__(self, key: Any) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"FrozenVars({public(self)!r})"


def freeze(value: Any) -> Any:
    """Deep read-only copy of a YAML value."""
    if isinstance(value, FrozenVars):
        return value
    if isinstance(value, Mapping):
        return FrozenVars(value)
    if isinstance(value, list | tuple):
        return tuple(freeze(item) for item in value)
    if isinstance(value, set):
        return frozenset(value)
    if isinstance(value, bytearray):
        return bytes(value)
    return value


def thaw(value: Any) -> Any:
    """Plain dicts and lists again (templates and YAML/JSON writers want them); secrets kept."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [thaw(item) for item in value]
    return value


def public(value: Any) -> Any:
    """JSON-ready copy of a value, with every secret-named entry (at any depth) masked."""
    if isinstance(value, Mapping):
        return {str(k): MASK if is_secret_name(k) else public(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [public(item) for item in value]
    if isinstance(value, set | frozenset):
        return sorted((public(item) for item in value), key=repr)
    if isinstance(value, dt.date):  # datetime is a date too
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, str | int | float):
        return value
    return str(value)
