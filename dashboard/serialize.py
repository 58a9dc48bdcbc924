"""Views to JSON and back: the web API sends read-model views, the remote TUI reads them into
the same classes, so widgets never care where their data came from.

JSON shapes: dataclass fields by name, datetimes as ISO-8601 strings, tuples as lists. Secrets
never reach a view (`UserRecord.password_hash` is dropped on the way out).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from datetime import datetime
from typing import Any, TypeVar, Union

T = TypeVar("T")
_DROP = frozenset({"password_hash"})


def to_json(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: to_json(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.name not in _DROP
        }
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, float) and value != value:  # NaN is not JSON
        return None
    return value


def from_json(cls: type[T], data: Any) -> T:
    """Build `cls` (a dataclass) from `to_json` output; raises ValueError on a shape mismatch."""
    return typing.cast(T, _decode(cls, data))


def _decode(tp: Any, data: Any) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return data
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if data is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _decode(arg, data)
            except (ValueError, TypeError):
                continue
        raise ValueError(f"{data!r} fits none of {tp}")
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if not isinstance(data, dict):
            raise ValueError(f"{tp.__name__}: expected an object")
        hints = typing.get_type_hints(tp)
        kwargs = {}
        for f in dataclasses.fields(tp):
            if f.name in data:
                kwargs[f.name] = _decode(hints[f.name], data[f.name])
        return tp(**kwargs)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(data, list):
            raise ValueError("expected a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], x) for x in data)
        return tuple(_decode(a, x) for a, x in zip(args, data, strict=True))
    if origin is list:
        (arg,) = typing.get_args(tp)
        if not isinstance(data, list):
            raise ValueError("expected a list")
        return [_decode(arg, x) for x in data]
    if origin is dict:
        _, val = typing.get_args(tp)
        if not isinstance(data, dict):
            raise ValueError("expected an object")
        return {str(k): _decode(val, v) for k, v in data.items()}
    if tp is datetime:
        if not isinstance(data, str):
            raise ValueError("expected an ISO-8601 string")
        return datetime.fromisoformat(data)
    if tp is float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            raise ValueError("expected a number")
        return float(data)
    if tp in (int, str, bool):
        if not isinstance(data, tp) or (tp is int and isinstance(data, bool)):
            raise ValueError(f"expected {tp.__name__}")
        return data
    if tp is type(None):
        if data is not None:
            raise ValueError("expected null")
        return None
    raise ValueError(f"cannot decode {tp}")
