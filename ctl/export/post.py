"""`--post`: deliver export records to Splunk HEC or Elastic `_bulk`, through the local spool.

Records go to the spool (fsynced) first, then out in batches; the cursor moves only when a
batch's outcome is known. A collector that is down or busy (connection refused, 429, 503) is
retried with exponential backoff up to a total wait; then the run stops with the records still
spooled, and the next run (with or without a new source) resumes at the cursor.

Guarantees, per destination:

* **Elastic `_bulk`: exactly once.** Each record is a `create` with `_id` = sha256 of the
  document, so a resent batch (after a timeout, a 5xx, a crash) gets 409 for what already
  landed, counted as duplicates ignored. Per-item 429/5xx are retried, other per-item errors
  (mapping conflicts) are kept in `rejected.jsonl` with Elastic's reason.
* **Splunk HEC: at least once.** HEC has no idempotency key. Refusals that mean "not taken"
  (connection refused, 429, 503 server busy) are resent without risk; but when the outcome is
  unknown (read timeout, connection dropped after sending, 500/502/504, a crash before the
  cursor was saved) the batch is resent and may be indexed twice. The report counts such
  batches (`uncertain_batches`, `recovered_inflight`), and every envelope carries
  `fields.agentctl_id` so `| dedup agentctl_id` removes the copies. With `hec_ack=True` the
  cursor also waits for HEC's indexer acknowledgement (`/services/collector/ack`), so a batch
  that was received but lost before indexing is resent. A 400 naming an
  `invalid-event-number` delivers the events before it and keeps that one in `rejected.jsonl`.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

import httpx

from agentctl.ctl.errors import UsageError, VerificationError
from agentctl.ctl.export.bounds import json_line
from agentctl.ctl.export.formats.base import Context
from agentctl.ctl.export.senders import (
    HEC_PATH,
    BulkSender,
    HecSender,
    Outcome,
    Sender,
)
from agentctl.ctl.export.spool import Line, Spool
from agentctl.ctl.export.writer import iter_records, verify_file

TARGETS: Final = ("hec", "elastic")


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff between attempts; `max_total` bounds the sleeping of one run."""

    initial: float = 0.5
    factor: float = 2.0
    max_delay: float = 30.0
    max_total: float = 300.0
    jitter: float = 0.1

    def delay(self, attempt: int) -> float:
        """The pause before retry number `attempt` (0-based), never zero: a zero backoff
        would retry a dead collector forever without ever using up `max_total`."""
        base = min(self.max_delay, self.initial * self.factor ** min(attempt, 60))
        return max(0.001, base * (1 + random.uniform(-self.jitter, self.jitter)))


@dataclass
class DeliveryReport:
    target: str
    url: str
    status: str = "complete"  # complete | pending (collector unavailable) | failed
    spooled: int = 0
    #: the source's records were spooled by an earlier run (the same export, not sent twice)
    source_already_spooled: bool = False
    delivered: int = 0
    duplicates_ignored: int = 0
    rejected: int = 0
    pending: int = 0
    requests: int = 0
    retries: int = 0
    waited_s: float = 0.0
    #: HEC batches sent whose outcome was unknown and that were resent (possible duplicates)
    uncertain_batches: int = 0
    #: a previous run died with a request in flight; that batch was resent
    recovered_inflight: bool = False
    total_delivered: int = 0
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _redisplay(url: str) -> str:
    """The URL without credentials or query (safe to print and store)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def detect_target(url: str, target: str = "auto") -> str:
    if target in TARGETS:
        return target
    path = urlsplit(url).path.rstrip("/")
    if path.endswith(("/services/collector", HEC_PATH)):
        return "hec"
    if path.endswith("/_bulk"):
        return "elastic"
    raise UsageError(
        f"cannot tell the collector from {_redisplay(url)}",
        hint="end the URL with /services/collector/event (Splunk HEC) or /_bulk (Elastic)",
    )


def spool_name(url: str, target: str = "auto", index: str | None = None) -> str:
    """A directory name for the spool of one destination (callers put it under their state
    directory): readable host and kind, plus a hash of the full destination."""
    kind = detect_target(url, target)
    destination = _destination(kind, url, index)
    host = urlsplit(url).hostname or "collector"
    safe = "".join(c if c.isalnum() or c in "-." else "_" for c in host)[:64]
    return f"{kind}-{safe}-{hashlib.sha256(destination.encode()).hexdigest()[:12]}"


def _destination(kind: str, url: str, index: str | None) -> str:
    return f"{kind} {_redisplay(url)}" + (f" index={index}" if index else "")


# -- the delivery loop ------------------------------------------------------------------------


def _batches(spool: Spool, max_records: int, max_bytes: int) -> Iterator[list[Line]]:
    batch: list[Line] = []
    size = 0
    for line in spool.pending():
        if batch and (len(batch) >= max_records or size + len(line.text) > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(line)
        size += len(line.text) + 1
    if batch:
        yield batch


def _run(
    spool: Spool,
    sender: Sender,
    report: DeliveryReport,
    *,
    backoff: Backoff,
    max_records: int,
    max_bytes: int,
    sleep: Callable[[float], None],
) -> None:
    failures = 0
    limit = max_records
    for batch in _batches(spool, max_records, max_bytes):
        todo = batch
        resolved = 0
        while todo:
            chunk = todo[:limit]
            spool.begin(batch[0].start, batch[-1].end)
            out = sender.send(chunk)
            report.requests += 1
            if out.fatal:
                spool.settle()
                report.status, report.error = "failed", out.fatal
                return
            if out.shrink:
                if len(chunk) == 1:
                    out = Outcome(rejected=[(chunk[0], "too large for the collector (413)")])
                else:
                    limit = max(1, len(chunk) // 2)
                    todo = chunk + todo[len(chunk) :]
                    continue
            for line, reason in out.rejected:
                spool.reject(line.text, reason)
            report.delivered += out.delivered
            report.duplicates_ignored += out.duplicates
            report.rejected += len(out.rejected)
            resolved += out.delivered + out.duplicates
            report.uncertain_batches += isinstance(sender, HecSender) and out.uncertain
            todo = out.retry + todo[len(chunk) :]
            if not out.wait:
                failures = 0
                continue
            if not out.uncertain:
                spool.settle()
            report.retries += 1
            pause = backoff.delay(failures)
            if report.waited_s + pause > backoff.max_total:
                report.status = "pending"
                report.error = "the collector is unavailable; the records stay spooled"
                return
            sleep(pause)
            report.waited_s += pause
            failures += 1
        spool.advance(batch[-1].end, resolved)


def _source_lines(
    source: str | Path | Iterable[str | Mapping[str, Any]], partial: bool
) -> Iterator[str]:
    if isinstance(source, str | Path):
        check = verify_file(source)
        if not check.ok and not partial:
            raise VerificationError(f"{source}: " + "; ".join(check.problems))
        header = check.header or {}
        if header.get("format") == "servicenow":
            raise UsageError("ServiceNow IRE payloads are not posted to a SIEM collector")
        for text in iter_records(source):
            try:
                ok = isinstance(json.loads(text), dict)
            except ValueError:
                ok = False
            if ok:
                yield text
            elif not partial:
                raise VerificationError(f"{source}: a record line is not a JSON object")
        return
    for item in source:
        yield item if isinstance(item, str) else json_line(item)


def deliver(
    source: str | Path | Iterable[str | Mapping[str, Any]] | None,
    url: str,
    token: str | None,
    spool_dir: str | Path,
    *,
    target: str = "auto",
    index: str | None = None,
    auth_scheme: str = "ApiKey",
    batch_records: int = 500,
    batch_bytes: int = 4 * 2**20,
    timeout: float = 10.0,
    backoff: Backoff | None = None,
    hec_ack: bool = False,
    ack_timeout: float = 60.0,
    allow_partial: bool = False,
    verify: bool | str = True,
    client: httpx.Client | None = None,
    sleep: Callable[[float], None] = time.sleep,
    tool_version: str | None = None,
) -> DeliveryReport:
    """Spool `source` (an export file, verified, or records; None: only resume), then send
    everything pending to `url`. Never raises for an unavailable collector: the report's
    status says `pending`, and a later call resumes."""
    kind = detect_target(url, target)
    display = _redisplay(url)
    destination = _destination(kind, url, index)
    report = DeliveryReport(target=kind, url=display)
    with Spool(spool_dir, destination) as spool:
        report.recovered_inflight = spool.recovered_inflight is not None
        if source is not None:
            report.spooled, report.source_already_spooled = spool.append(
                _source_lines(source, allow_partial)
            )
        http = client or httpx.Client(timeout=timeout, verify=verify)
        ctx = Context(tool_version=tool_version or "", hec_index=None)
        sender: Sender
        if kind == "hec":
            sender = HecSender(
                http,
                url,
                token,
                spool.cursor.channel,
                ack=hec_ack,
                ack_timeout=ack_timeout,
                sleep=sleep,
                ctx=ctx,
            )
        else:
            sender = BulkSender(http, url, token, auth_scheme, index)
        try:
            _run(
                spool,
                sender,
                report,
                backoff=backoff or Backoff(),
                max_records=max(1, batch_records),
                max_bytes=max(1024, batch_bytes),
                sleep=sleep,
            )
        finally:
            if client is None:
                http.close()
        report.pending = spool.pending_count()
        report.total_delivered = spool.cursor.delivered
        if report.status == "complete":
            spool.compact()
        if report.uncertain_batches or report.recovered_inflight:
            report.notes.append(
                "some batches' outcome was unknown and they were resent: HEC may hold copies "
                "(search with | dedup agentctl_id)"
                if kind == "hec"
                else "resent batches were de-duplicated by _id"
            )
    return report
