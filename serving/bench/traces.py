"""Pure, streaming readers for the replay traces: Mooncake JSONL and WEKA Claude Code conversations.

Readers only parse and validate; turning rows into timed `RequestSpec`s is `workload.py`'s job, so
the same rows can feed the simulator, the live replay and offline statistics. Files are read line
by line (`.xz` and `.gz` decompressed on the fly): the WEKA corpus is 461 MB of JSON uncompressed,
and only one conversation is ever held in memory by the reader. A malformed line raises
`TraceFormatError` naming the file and the 1-based line number, never a bare `KeyError`.
"""

from __future__ import annotations

import gzip
import json
import lzma
from collections.abc import Container, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

TraceFormat = Literal["mooncake", "weka"]

#: Mooncake FAST'25 traces hash 512-token blocks (README of FAST25-release)
MOONCAKE_BLOCK_SIZE = 512
#: WEKA kv-cache-tester traces hash 64-token blocks (their `block_size` field)
WEKA_BLOCK_SIZE = 64


class TraceFormatError(ValueError):
    """A trace line that cannot be read; carries where, so a 461 MB file is debuggable."""

    def __init__(self, path: str | Path, line_no: int, message: str) -> None:
        self.path = str(path)
        self.line_no = line_no
        self.reason = message
        super().__init__(f"{path}: line {line_no}: {message}")


@dataclass(frozen=True, slots=True)
class MooncakeRequest:
    """One Mooncake row; `hash_ids` are prefix hashes of 512-token blocks (last maybe partial)."""

    line_no: int
    timestamp_ms: float
    input_length: int
    output_length: int
    hash_ids: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class WekaRequest:
    """One LLM call of a conversation. `hash_ids` cover full blocks only (`in // block_size`)."""

    #: seconds from the start of the conversation (or of the sub-agent, for its requests)
    t: float
    #: "n" (non-streaming) or "s" (streaming)
    kind: str
    input_tokens: int
    output_tokens: int
    hash_ids: tuple[int, ...]
    #: client/tool delay before this request, seconds (derived from `t` when the trace omits it)
    think_time: float
    #: recorded server time in seconds; None when the trace does not say
    api_time: float | None
    model: str | None = None


@dataclass(frozen=True, slots=True)
class WekaSubagent:
    """A sub-agent spawned by its parent; replayed as an extra session in the parent's namespace."""

    agent_id: str
    #: seconds from the start of the parent conversation
    t: float
    #: number of the parent's own requests listed before this entry: it is spawned after
    #: `parent.requests[after - 1]` (or at the parent's start when 0)
    after: int
    requests: tuple[WekaRequest, ...]
    #: sub-agents nested inside this one (none in the public corpus; kept for completeness)
    subagents: tuple[WekaSubagent, ...] = ()


@dataclass(frozen=True, slots=True)
class WekaConversation:
    """One line of the WEKA file: a Claude Code session with its sub-agents."""

    conv_id: str
    line_no: int
    block_size: int
    #: "local": ids are private to this conversation; "global": equal ids are equal blocks
    #: across every conversation of the file with global scope
    hash_id_scope: Literal["local", "global"]
    requests: tuple[WekaRequest, ...]
    subagents: tuple[WekaSubagent, ...]
    tool_tokens: int = 0
    system_tokens: int = 0

    def num_requests(self) -> int:
        """Requests including every sub-agent's."""
        return len(self.requests) + sum(_sub_requests(s) for s in self.subagents)


def _sub_requests(sub: WekaSubagent) -> int:
    return len(sub.requests) + sum(_sub_requests(s) for s in sub.subagents)


def open_text(path: str | Path) -> IO[str]:
    """Open a trace for text reading, decompressing `.xz` / `.gz` as a stream."""
    p = Path(path)
    if p.suffix == ".xz":
        return lzma.open(p, "rt", encoding="utf-8")
    if p.suffix == ".gz":
        return gzip.open(p, "rt", encoding="utf-8")
    return p.open("r", encoding="utf-8")


def detect_format(path: str | Path) -> TraceFormat:
    """Tell the two formats apart from the first non-blank line's keys."""
    with open_text(path) as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            obj = _parse_line(path, line_no, line)
            if "requests" in obj:
                return "weka"
            if "hash_ids" in obj and "timestamp" in obj:
                return "mooncake"
            raise TraceFormatError(path, line_no, "neither a Mooncake row nor a WEKA conversation")
    raise TraceFormatError(path, 0, "empty trace")


def _parse_line(path: str | Path, line_no: int, line: str) -> dict[str, object]:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise TraceFormatError(
            path, line_no, f"invalid JSON: {exc.msg} (column {exc.colno})"
        ) from None
    if not isinstance(obj, dict):
        raise TraceFormatError(path, line_no, f"expected a JSON object, got {type(obj).__name__}")
    return obj


class _Fields:
    """Typed access to one JSON object that turns every problem into a `TraceFormatError`."""

    __slots__ = ("line_no", "obj", "path", "where")

    def __init__(self, path: str | Path, line_no: int, obj: dict[str, object], where: str = ""):
        self.path = path
        self.line_no = line_no
        self.obj = obj
        self.where = where

    def fail(self, message: str) -> TraceFormatError:
        return TraceFormatError(self.path, self.line_no, f"{self.where}{message}")

    def number(self, key: str, default: float | None = None) -> float:
        val = self.obj.get(key)
        if val is None:
            if default is not None:
                return default
            raise self.fail(f"missing field {key!r}")
        if isinstance(val, bool) or not isinstance(val, int | float):
            raise self.fail(f"field {key!r} must be a number, got {val!r}")
        return float(val)

    def opt_number(self, key: str) -> float | None:
        if self.obj.get(key) is None:
            return None
        return self.number(key)

    def count(self, key: str, default: int | None = None) -> int:
        val = self.obj.get(key)
        if val is None:
            if default is not None:
                return default
            raise self.fail(f"missing field {key!r}")
        if isinstance(val, bool) or not isinstance(val, int) or val < 0:
            raise self.fail(f"field {key!r} must be a non-negative integer, got {val!r}")
        return val

    def text(self, key: str, default: str | None = None) -> str:
        val = self.obj.get(key)
        if val is None:
            if default is not None:
                return default
            raise self.fail(f"missing field {key!r}")
        if not isinstance(val, str):
            raise self.fail(f"field {key!r} must be a string, got {val!r}")
        return val

    def ids(self, key: str, *, required: bool) -> tuple[int, ...]:
        val = self.obj.get(key)
        if val is None:
            if required:
                raise self.fail(f"missing field {key!r}")
            return ()
        if not isinstance(val, list):
            raise self.fail(f"field {key!r} must be a list of integers")
        out = tuple(val)
        # C-level passes only (this runs over ~94M ids); a bool or float would corrupt the hashes
        if out and set(map(type, out)) != {int}:
            raise self.fail(f"field {key!r} must be a list of integers")
        return out

    def objects(self, key: str) -> list[dict[str, object]]:
        val = self.obj.get(key)
        if not isinstance(val, list) or not all(isinstance(x, dict) for x in val):
            raise self.fail(f"field {key!r} must be a list of objects")
        return val


def read_mooncake(path: str | Path, *, limit: int | None = None) -> Iterator[MooncakeRequest]:
    """Yield the rows of a Mooncake JSONL trace in file order (blank lines skipped)."""
    seen = 0
    with open_text(path) as fh:
        for line_no, line in enumerate(fh, 1):
            if limit is not None and seen >= limit:
                return
            if not line.strip():
                continue
            f = _Fields(path, line_no, _parse_line(path, line_no, line))
            row = MooncakeRequest(
                line_no=line_no,
                timestamp_ms=f.number("timestamp"),
                input_length=f.count("input_length"),
                output_length=f.count("output_length"),
                hash_ids=f.ids("hash_ids", required=True),
            )
            if row.input_length > len(row.hash_ids) * MOONCAKE_BLOCK_SIZE:
                raise f.fail(
                    f"input_length {row.input_length} exceeds {len(row.hash_ids)} blocks of "
                    f"{MOONCAKE_BLOCK_SIZE} tokens"
                )
            seen += 1
            yield row


def read_weka(
    path: str | Path,
    *,
    limit: int | None = None,
    skip: int = 0,
    ids: Container[str] | None = None,
) -> Iterator[WekaConversation]:
    """Yield conversations in file order: `skip` the first ones, keep only `ids` when given, stop
    after `limit`. Lines that are skipped are still decompressed but not parsed."""
    kept = 0
    index = 0
    with open_text(path) as fh:
        for line_no, line in enumerate(fh, 1):
            if limit is not None and kept >= limit:
                return
            if not line.strip():
                continue
            index += 1
            if index <= skip:
                continue
            obj = _parse_line(path, line_no, line)
            conv = _weka_conversation(path, line_no, obj)
            if ids is not None and conv.conv_id not in ids:
                continue
            kept += 1
            yield conv


def _weka_conversation(path: str | Path, line_no: int, obj: dict[str, object]) -> WekaConversation:
    f = _Fields(path, line_no, obj)
    conv_id = f.text("id", default=f"line{line_no}")
    block_size = f.count("block_size", default=WEKA_BLOCK_SIZE)
    if block_size <= 0:
        raise f.fail("block_size must be positive")
    scope = f.text("hash_id_scope", default="local")
    if scope not in ("local", "global"):
        raise f.fail(f"hash_id_scope must be 'local' or 'global', got {scope!r}")
    requests, subagents = _weka_requests(path, line_no, f.objects("requests"), block_size, "")
    return WekaConversation(
        conv_id=conv_id,
        line_no=line_no,
        block_size=block_size,
        hash_id_scope="global" if scope == "global" else "local",
        requests=requests,
        subagents=subagents,
        tool_tokens=f.count("tool_tokens", default=0),
        system_tokens=f.count("system_tokens", default=0),
    )


def _weka_requests(
    path: str | Path,
    line_no: int,
    raw: list[dict[str, object]],
    block_size: int,
    prefix: str,
) -> tuple[tuple[WekaRequest, ...], tuple[WekaSubagent, ...]]:
    requests: list[WekaRequest] = []
    subagents: list[WekaSubagent] = []
    prev: WekaRequest | None = None
    for i, item in enumerate(raw):
        where = f"{prefix}requests[{i}]: "
        f = _Fields(path, line_no, item, where)
        kind = f.text("type", default="n")
        if kind == "subagent":
            sub_reqs, nested = _weka_requests(
                path, line_no, f.objects("requests"), block_size, f"{where}subagent "
            )
            subagents.append(
                WekaSubagent(
                    agent_id=f.text("agent_id", default=f"agent{i}"),
                    t=f.number("t", default=0.0),
                    after=len(requests),
                    requests=sub_reqs,
                    subagents=nested,
                )
            )
            continue
        if kind not in ("n", "s"):
            raise f.fail(f"unknown request type {kind!r}")
        t = f.number("t")
        n_in = f.count("in")
        hash_ids = f.ids("hash_ids", required=kind == "n")
        if len(hash_ids) * block_size > n_in:
            raise f.fail(f"{len(hash_ids)} hash_ids of {block_size} tokens exceed in={n_in}")
        api_time = f.opt_number("api_time")
        think = f.opt_number("think_time")
        if think is None:
            # the recorded gap minus the previous call's server time, as upstream derives it
            think = 0.0 if prev is None else max(0.0, t - prev.t - (prev.api_time or 0.0))
        req = WekaRequest(
            t=t,
            kind=kind,
            input_tokens=n_in,
            output_tokens=f.count("out"),
            hash_ids=hash_ids,
            think_time=max(0.0, think),
            api_time=api_time,
            model=f.text("model", default="") or None,
        )
        requests.append(req)
        prev = req
    return tuple(requests), tuple(subagents)
