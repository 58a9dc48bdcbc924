"""Byte caps per field and per record, with explicit truncation markers.

SIEMs refuse or silently cut oversized events (Splunk's default `TRUNCATE` is 10,000 bytes a
line, Elastic's `http.max_content_length` 100 MB a request, a keyword `ignore_above`...), so
the export cuts first and says so: a cut string keeps its head and tail around
``…[truncated N bytes]…``, a cut array keeps its first items, and the record carries a flag
plus the list of what was cut (where depends on the format: `mark`). Nothing disappears
without a trace.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

MARKER: Final = "…[truncated {n} bytes]…"
#: at most this many cut paths are listed in a record's truncation note
MAX_LISTED: Final = 32

Path = tuple[str, ...]
Mark = Callable[[dict[str, Any], dict[str, Any]], None]


def json_line(doc: Mapping[str, Any]) -> str:
    """The one serialisation of a record: compact, sorted keys, UTF-8 (byte-identical output
    for identical input, and the bytes the caps and the trailer's sha256 are about)."""
    return json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def size_of(doc: Any) -> int:
    return len(json.dumps(doc, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode())


@dataclass(frozen=True)
class Limits:
    field_bytes: int = 8 * 1024
    record_bytes: int = 64 * 1024
    array_items: int = 64

    def __post_init__(self) -> None:
        if self.field_bytes < 64 or self.record_bytes < 1024 or self.array_items < 1:
            raise ValueError("limits too small: field >= 64 B, record >= 1 KiB, array >= 1")
        if self.field_bytes > self.record_bytes:
            raise ValueError("the field cap must not exceed the record cap")


def cut_text(text: str, cap: int) -> tuple[str, int]:
    """`text` in at most `cap` UTF-8 bytes: head, marker, tail; returns it and the bytes cut."""
    data = text.encode("utf-8", errors="replace")
    if len(data) <= cap:
        return text, 0
    budget = cap - len(MARKER.format(n=len(data)).encode())
    if budget <= 0:
        head = data[:cap].decode("utf-8", errors="ignore")
        return head, len(data) - len(head.encode())
    head_len = budget // 2
    head = data[:head_len].decode("utf-8", errors="ignore")  # drops a split character only
    tail = data[len(data) - (budget - head_len) :].decode("utf-8", errors="ignore")
    cut = len(data) - len(head.encode()) - len(tail.encode())
    return head + MARKER.format(n=cut) + tail, cut


@dataclass
class Cuts:
    """What capping did to one record."""

    fields: list[str] = field(default_factory=list)
    arrays: dict[str, int] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.fields or self.arrays or self.dropped)

    def note(self, original_bytes: int) -> dict[str, Any]:
        """The truncation note a format puts on the record (bounded itself)."""
        note: dict[str, Any] = {"truncated": True, "original_bytes": original_bytes}
        if self.fields:
            note["fields"] = self.fields[:MAX_LISTED]
        if self.arrays:
            note["arrays_omitted"] = dict(list(self.arrays.items())[:MAX_LISTED])
        if self.dropped:
            note["dropped"] = self.dropped[:MAX_LISTED]
        listed = len(self.fields) + len(self.arrays) + len(self.dropped)
        if listed > 3 * MAX_LISTED or any(
            len(x) > MAX_LISTED for x in (self.fields, self.arrays, self.dropped)
        ):
            note["paths_not_listed"] = True
        return note


def _dotted(path: Path) -> str:
    return ".".join(path) or "."


def _cap(value: Any, path: Path, field_bytes: int, items: int, cuts: Cuts) -> Any:
    if isinstance(value, str):
        text, cut = cut_text(value, field_bytes)
        if cut:
            cuts.fields.append(_dotted(path))
        return text
    if isinstance(value, Mapping):
        return {
            str(k): _cap(v, (*path, str(k)), field_bytes, items, cuts) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        if len(value) > items:
            cuts.arrays[_dotted(path)] = len(value) - items
        return [_cap(v, path, field_bytes, items, cuts) for v in list(value)[:items]]
    return value


def _subtrees(doc: Mapping[str, Any], path: Path = ()) -> Iterator[tuple[Path, Any]]:
    for key, value in doc.items():
        here = (*path, key)
        yield here, value
        if isinstance(value, Mapping):
            yield from _subtrees(value, here)


def _largest(doc: Mapping[str, Any], protect: frozenset[Path]) -> Path | None:
    """The biggest subtree that is neither protected nor holds a protected path."""
    best: tuple[int, Path] | None = None
    for path, value in _subtrees(doc):
        if any(p[: len(path)] == path for p in protect):
            continue
        size = size_of(value)
        if best is None or size > best[0]:
            best = (size, path)
    return None if best is None else best[1]


def _delete(doc: dict[str, Any], path: Path) -> None:
    node: Any = doc
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]


def bound(
    doc: Mapping[str, Any], limits: Limits, mark: Mark, protect: frozenset[Path] = frozenset()
) -> tuple[dict[str, Any], bool]:
    """`doc` within `limits`, marked by `mark` when anything was cut; returns (doc, cut?).

    First every string and array is capped; if the record is still too big the caps shrink
    (down to 256 B and 8 items), and as a last resort the biggest subtrees that are not in
    `protect` (the format's required fields) are dropped and listed.
    """
    original = size_of(doc)
    field_cap, items = limits.field_bytes, limits.array_items
    while True:
        cuts = Cuts()
        out: dict[str, Any] = _cap(doc, (), field_cap, items, cuts)
        if cuts:
            mark(out, cuts.note(original))
        if size_of(out) <= limits.record_bytes:
            return out, bool(cuts)
        if field_cap <= 256 and items <= 8:
            break
        field_cap, items = max(256, field_cap // 2), max(8, items // 2)
    while size_of(out) > limits.record_bytes:
        path = _largest(out, protect)
        if path is None:
            raise ValueError("a record's protected fields alone exceed the record cap")
        _delete(out, path)
        cuts.dropped.append(_dotted(path))
        mark(out, cuts.note(original))
    return out, True
