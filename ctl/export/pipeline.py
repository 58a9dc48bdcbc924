"""`export`: store rows -> redacted -> projected into a format -> capped -> framed JSON Lines."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

from agentctl.collectors.store import Store
from agentctl.ctl import __version__
from agentctl.ctl.envelope import utc_now_iso
from agentctl.ctl.errors import UsageError
from agentctl.ctl.export.bounds import Limits, bound
from agentctl.ctl.export.formats import Context, get_format
from agentctl.ctl.export.formats.base import get_path
from agentctl.ctl.export.records import KINDS, Scrubber, read_rows
from agentctl.ctl.export.writer import FramedWriter


@dataclass(frozen=True)
class ExportSummary:
    """What an export wrote: for the CLI's summary line and its `--json` envelope."""

    format: str
    kind: str
    since: datetime | None
    count: int
    truncated_records: int
    sha256: str
    bytes: int
    #: per kind of secret, how many values were redacted (`Redactor.counts`)
    redactions: dict[str, int] = field(default_factory=dict)
    #: the store held at least as many rows as the reader's cap: some may be missing
    capped: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "kind": self.kind,
            "since": utc_now_iso(self.since) if self.since else None,
            "count": self.count,
            "truncated_records": self.truncated_records,
            "sha256": self.sha256,
            "bytes": self.bytes,
            "redactions": dict(self.redactions),
            "capped": self.capped,
        }


def export(
    store: Store,
    fmt: str,
    kind: str,
    since: datetime | None,
    out: TextIO,
    *,
    limits: Limits | None = None,
    hec_index: str | None = None,
    created_at: datetime | None = None,
    tool_version: str = __version__,
) -> ExportSummary:
    """Write one framed export of `kind` in `fmt` to `out`; raises `UsageError` before
    writing anything when the format cannot express the kind."""
    if kind not in KINDS:
        raise UsageError(f"unknown export kind {kind!r}", hint=f"one of {', '.join(KINDS)}")
    spec = get_format(fmt, kind)
    limits = limits or Limits()
    ctx = Context(tool_version=tool_version, hec_index=hec_index)
    scrub = Scrubber()
    found = read_rows(store, kind, since, scrub=scrub)
    writer = FramedWriter(
        out, fmt=fmt, kind=kind, since=since, created_at=created_at, tool_version=tool_version
    )
    for row in found.rows:
        try:
            doc, _ = bound(spec.render(row, ctx), limits, spec.mark, spec.protect)
        except ValueError as exc:  # the required fields alone exceed the record cap
            raise UsageError(
                f"a {fmt} record for {row.node} cannot fit {limits.record_bytes} bytes: {exc}",
                hint="raise the record size limit",
            ) from exc
        writer.write(doc, truncated=get_path(doc, spec.note) is not None)
    trailer = writer.close()
    return ExportSummary(
        format=fmt,
        kind=kind,
        since=since,
        count=trailer.count,
        truncated_records=trailer.truncated_records,
        sha256=trailer.sha256,
        bytes=trailer.bytes,
        redactions=scrub.counts,
        capped=found.capped,
    )
