"""JSON Lines framing: a header line, the records, a trailer with their count and sha256.

One record a line streams, appends and survives `split`; the frame makes a cut-off or edited
file detectable. The sha256 covers the record lines exactly as written, each with its
newline (not the header or trailer), so `sed 1d;$d file | sha256sum` reproduces it.
Collectors that ingest the file as is should drop the two framing lines (their only key is
`agentctl_export` / `agentctl_export_end`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final, TextIO

from agentctl.ctl import __version__
from agentctl.ctl.envelope import TOOL, utc_now_iso
from agentctl.ctl.export.bounds import json_line
from agentctl.ctl.export.formats.base import SCHEMA

HEADER_KEY: Final = "agentctl_export"
TRAILER_KEY: Final = "agentctl_export_end"
FRAME_VERSION: Final = 1


@dataclass(frozen=True)
class Trailer:
    count: int
    sha256: str
    bytes: int
    truncated_records: int


class FramedWriter:
    """Writes the header at once, records as they come, the trailer on `close`."""

    def __init__(
        self,
        out: TextIO,
        *,
        fmt: str,
        kind: str,
        since: datetime | None,
        created_at: datetime | None = None,
        tool_version: str = __version__,
    ) -> None:
        self._out = out
        self._sha = hashlib.sha256()
        self.count = 0
        self.bytes = 0
        self.truncated = 0
        header = {
            "version": FRAME_VERSION,
            "schema": SCHEMA,
            "format": fmt,
            "kind": kind,
            "since": utc_now_iso(since) if since else None,
            "created_at": utc_now_iso(created_at),
            "tool": TOOL,
            "tool_version": tool_version,
        }
        out.write(json_line({HEADER_KEY: header}) + "\n")

    def write(self, doc: Mapping[str, Any], *, truncated: bool = False) -> None:
        line = json_line(doc) + "\n"
        data = line.encode("utf-8")
        self._sha.update(data)
        self.count += 1
        self.bytes += len(data)
        self.truncated += truncated
        self._out.write(line)

    def close(self) -> Trailer:
        trailer = Trailer(self.count, self._sha.hexdigest(), self.bytes, self.truncated)
        end = {
            "count": trailer.count,
            "sha256": trailer.sha256,
            "bytes": trailer.bytes,
            "truncated_records": trailer.truncated_records,
        }
        self._out.write(json_line({TRAILER_KEY: end}) + "\n")
        self._out.flush()
        return trailer


@dataclass
class Verification:
    """What `verify_file` found; `ok` only when every check passed."""

    path: str
    problems: list[str] = field(default_factory=list)
    header: dict[str, Any] | None = None
    trailer: dict[str, Any] | None = None
    records: int = 0
    sha256: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "ok": self.ok,
            "problems": list(self.problems),
            "records": self.records,
            "sha256": self.sha256,
            "header": self.header,
            "trailer": self.trailer,
        }


def _frame(line: bytes, key: str) -> dict[str, Any] | None:
    try:
        doc = json.loads(line)
    except ValueError:
        return None
    if isinstance(doc, dict) and set(doc) == {key} and isinstance(doc[key], dict):
        value: dict[str, Any] = doc[key]
        return value
    return None


def _check_records(lines: list[bytes], result: Verification) -> None:
    sha = hashlib.sha256()
    for number, line in enumerate(lines, start=2):
        sha.update(line + b"\n")
        try:
            doc = json.loads(line)
        except ValueError:
            result.problems.append(f"line {number} is not JSON")
            continue
        if not isinstance(doc, dict):
            result.problems.append(f"line {number} is not a JSON object")
        elif HEADER_KEY in doc or TRAILER_KEY in doc:
            result.problems.append(f"line {number} is a frame line inside the records")
    result.records = len(lines)
    result.sha256 = sha.hexdigest()


def verify_file(path: str | Path) -> Verification:
    """Check the frame of an export file: header, trailer, count, sha256, no cut line."""
    result = Verification(str(path))
    data = Path(path).read_bytes()
    if not data:
        result.problems.append("the file is empty")
        return result
    if not data.endswith(b"\n"):
        result.problems.append("the last line is incomplete: the file was cut off mid-line")
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    result.header = _frame(lines[0], HEADER_KEY)
    if result.header is None:
        result.problems.append("no header line: this is not an agentctl export")
        return result
    if result.header.get("version") != FRAME_VERSION:
        result.problems.append(f"unknown frame version {result.header.get('version')!r}")
    result.trailer = _frame(lines[-1], TRAILER_KEY) if len(lines) > 1 else None
    body = lines[1:-1] if result.trailer is not None else lines[1:]
    if result.trailer is None:
        result.problems.append(
            f"no trailer line: the file was cut off ({len(body)} lines after the header)"
        )
        if body and not data.endswith(b"\n"):
            body = body[:-1]  # the cut line is reported above, not as "not JSON"
    _check_records(body, result)
    if result.trailer is not None:
        if result.trailer.get("count") != result.records:
            result.problems.append(
                f"the trailer counts {result.trailer.get('count')} records, the file holds "
                f"{result.records}"
            )
        if result.trailer.get("sha256") != result.sha256:
            result.problems.append("the records' sha256 differs from the trailer's")
    return result


def iter_records(path: str | Path) -> Iterator[str]:
    """The record lines of an export file (no newline), frame lines skipped; unverified."""
    with Path(path).open(encoding="utf-8") as fh:
        for line in fh:
            text = line.rstrip("\n")
            if not text:
                continue
            if text.startswith('{"agentctl_export'):
                try:
                    doc = json.loads(text)
                except ValueError:
                    doc = None
                if isinstance(doc, dict) and (HEADER_KEY in doc or TRAILER_KEY in doc):
                    continue
            yield text
