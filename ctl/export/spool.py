"""The local spool behind `--post`: records are on disk (fsynced) before anything is sent.

A spool directory belongs to one destination and holds:

* ``spool.jsonl``: record lines, append-only until everything is delivered (then emptied);
* ``cursor.json``: the byte offset up to which lines are delivered, the total delivered, the
  destination, and the batch in flight (written before a request goes out, cleared once its
  outcome is known), so a restart knows where to resume and which batch's fate is unknown;
* ``sources.json``: sha256 of each source already spooled (the same export delivered twice is
  spooled once) and an append in progress (a crash mid-append is rolled back);
* ``rejected.jsonl``: records the collector refused as invalid, with its reason (kept, never
  dropped); ``lock``: one delivery at a time.

Every state file is replaced atomically (write, fsync, rename, fsync the directory).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any, Final

from agentctl.ctl.envelope import utc_now_iso
from agentctl.ctl.errors import AgentctlError

SPOOL: Final = "spool.jsonl"
CURSOR: Final = "cursor.json"
SOURCES: Final = "sources.json"
REJECTED: Final = "rejected.jsonl"
LOCK: Final = "lock"
#: how many spooled sources are remembered for de-duplication
KEEP_SOURCES: Final = 1000


class SpoolError(AgentctlError):
    kind = "spool"


@dataclass(frozen=True)
class Cursor:
    destination: str
    offset: int = 0
    delivered: int = 0
    channel: str = ""
    #: [start, end) byte range of the batch whose request may have reached the collector
    inflight: tuple[int, int] | None = None


@dataclass(frozen=True)
class Line:
    start: int
    end: int
    text: str


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomic(path: Path, doc: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        json.dump(doc, fh, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise SpoolError(f"{path} is corrupt: {exc}", hint="move the spool aside") from exc
    return doc if isinstance(doc, dict) else {}


class Spool:
    """One destination's spool, locked for the lifetime of the object (use `with`)."""

    def __init__(self, directory: str | Path, destination: str) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._lock = (self.dir / LOCK).open("a")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            self._lock.close()
            raise SpoolError(
                f"another delivery is using the spool {self.dir}", hint="wait for it to finish"
            ) from exc
        self.path = self.dir / SPOOL
        self.path.touch(exist_ok=True)
        self.cursor = self._load_cursor(destination)
        #: the batch whose outcome a previous process never learnt (None: there was none)
        self.recovered_inflight = self.cursor.inflight
        self._recover()

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        if not self._lock.closed:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _load_cursor(self, destination: str) -> Cursor:
        doc = _read_json(self.dir / CURSOR)
        if not doc:
            cursor = Cursor(destination=destination, channel=str(uuid.uuid4()))
            self._save(cursor)
            return cursor
        if doc.get("destination") != destination:
            raise SpoolError(
                f"the spool {self.dir} belongs to {doc.get('destination')}, not {destination}",
                hint="use one spool directory per destination",
            )
        inflight = doc.get("inflight")
        return Cursor(
            destination=destination,
            offset=int(doc.get("offset", 0)),
            delivered=int(doc.get("delivered", 0)),
            channel=str(doc.get("channel") or uuid.uuid4()),
            inflight=(int(inflight[0]), int(inflight[1])) if inflight else None,
        )

    def _save(self, cursor: Cursor) -> None:
        _write_atomic(
            self.dir / CURSOR,
            {
                "destination": cursor.destination,
                "offset": cursor.offset,
                "delivered": cursor.delivered,
                "channel": cursor.channel,
                "inflight": list(cursor.inflight) if cursor.inflight else None,
                "updated_at": utc_now_iso(),
            },
        )
        self.cursor = cursor

    def _recover(self) -> None:
        """Undo what a killed process left half done: an append, a compaction."""
        sources = _read_json(self.dir / SOURCES)
        pending = sources.get("appending")
        if isinstance(pending, int):
            self._truncate(pending)
            self._save_sources(sources.get("done", []), None)
        data_size = self.path.stat().st_size
        if data_size and not self._ends_with_newline():
            self._truncate(self._last_newline())  # a torn line no append vouched for
        size = self.path.stat().st_size
        if self.cursor.offset > size:  # emptied after delivering all, cursor not yet reset
            self._save(replace(self.cursor, offset=size, inflight=None))

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"

    def _last_newline(self) -> int:
        data = self.path.read_bytes()
        return data.rfind(b"\n") + 1

    def _truncate(self, size: int) -> None:
        with self.path.open("r+b") as fh:
            fh.truncate(size)
            fh.flush()
            os.fsync(fh.fileno())

    def _save_sources(self, done: list[str], appending: int | None) -> None:
        _write_atomic(self.dir / SOURCES, {"done": done[-KEEP_SOURCES:], "appending": appending})

    # -- appending ---------------------------------------------------------------------------

    def append(self, lines: Iterable[str]) -> tuple[int, bool]:
        """Spool `lines` (one JSON record each); returns how many were added and whether this
        exact sequence of records had been spooled before (then nothing is added)."""
        self.compact()
        done = list(_read_json(self.dir / SOURCES).get("done", []))
        start = self.path.stat().st_size
        self._save_sources(done, start)
        sha = hashlib.sha256()
        count = 0
        with self.path.open("ab") as fh:
            for line in lines:
                if "\n" in line or not line.strip():
                    raise SpoolError("a record must be one non-empty line of JSON")
                data = line.encode("utf-8") + b"\n"
                sha.update(data)
                fh.write(data)
                count += 1
            fh.flush()
            os.fsync(fh.fileno())
        digest = sha.hexdigest()
        if digest in done or count == 0:
            self._truncate(start)
            self._save_sources(done, None)
            return 0, count > 0
        self._save_sources([*done, digest], None)
        return count, False

    # -- delivering --------------------------------------------------------------------------

    def pending(self) -> Iterator[Line]:
        """Undelivered lines, in order, from the cursor on."""
        with self.path.open("rb") as fh:
            fh.seek(self.cursor.offset)
            pos = self.cursor.offset
            for raw in fh:
                end = pos + len(raw)
                yield Line(pos, end, raw.decode("utf-8").rstrip("\n"))
                pos = end

    def pending_count(self) -> int:
        return sum(1 for _ in self.pending())

    def begin(self, start: int, end: int) -> None:
        """A request for the lines in [start, end) is about to go out."""
        self._save(replace(self.cursor, inflight=(start, end)))

    def settle(self) -> None:
        """The in-flight request was definitely not accepted (refused, never connected)."""
        if self.cursor.inflight is not None:
            self._save(replace(self.cursor, inflight=None))

    def advance(self, end: int, delivered: int) -> None:
        """Lines up to byte `end` are resolved (delivered, known duplicates or rejected)."""
        self._save(
            replace(
                self.cursor, offset=end, delivered=self.cursor.delivered + delivered, inflight=None
            )
        )

    def reject(self, text: str, reason: str) -> None:
        entry = {"at": utc_now_iso(), "reason": reason, "record": text}
        with (self.dir / REJECTED).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(entry, sort_keys=True, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def compact(self) -> None:
        """Empty the spool once every line is delivered (the cursor's total stays)."""
        size = self.path.stat().st_size
        if size and self.cursor.offset >= size:
            self._truncate(0)
            self._save(replace(self.cursor, offset=0, inflight=None))
