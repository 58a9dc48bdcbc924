"""What a diagnostic probe is (a command, a file or a glob read on the node) and what it gave.

Probes are data: the same `ProbeSpec` list is run live over SSH by the node runner and written
into an L2 bundle, and the parsers read `ProbeResult.output` the same way in both cases.

Output formats of the non-command kinds (parsers rely on them):

- `path`: the file's bytes, decoded as UTF-8 with replacement;
- `glob`: for each matching file, sorted, at most `max_files`:
  ``==> /the/path <==`` then its content, then an empty line;
- `listing`: one line per entry under the directory (depth 2, sorted):
  ``<mtime ISO-8601 UTC> <size bytes> <d|f|l> <path>``.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any


class ProbeStatus(enum.StrEnum):
    OK = "ok"
    TIMEOUT = "timeout"
    NOT_SUPPORTED = "not_supported"  # the file or feature is absent here (GB10 N/A, no pstore)
    PERMISSION_DENIED = "permission_denied"
    MISSING_TOOL = "missing_tool"  # the command is not installed
    FAILED = "failed"  # ran, exited non-zero for another reason (the output is still data)


@dataclass(frozen=True)
class ProbeSpec:
    """One read-only probe. Exactly one of `argv`, `shell`, `path`, `glob`, `listing`."""

    name: str  # unique; also its file name inside a bundle (`name` + ".txt")
    argv: tuple[str, ...] | None = None
    shell: str | None = None  # agentctl-authored sh, for pipelines; never user input
    path: str | None = None
    glob: str | None = None
    listing: str | None = None
    timeout: float = 10.0
    max_bytes: int = 512 * 1024
    max_lines: int = 20_000
    keep: str = "tail"  # which end survives a cut: "tail" for logs, "head" for reports
    root: bool = False  # needs root: run through the host's become when it has one
    optional: bool = False  # only when asked (nvidia-bug-report, dcgmi diag)
    max_files: int = 16  # glob only
    not_supported_codes: tuple[int, ...] = ()  # exit codes that mean "absent here"

    def describe(self) -> str:
        if self.argv is not None:
            return " ".join(self.argv)
        return self.shell or self.path or self.glob or f"ls {self.listing}"

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


@dataclass(frozen=True)
class ProbeResult:
    name: str
    status: ProbeStatus
    output: str = ""
    stderr: str = ""
    exit_status: int | None = None
    duration_s: float = 0.0
    truncated: bool = False
    bytes: int = 0  # size before any cut
    sha256: str = ""  # of `output` as kept (UTF-8)
    command: str = ""
    timed_out: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == ProbeStatus.OK

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["status"] = self.status.value
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ProbeResult:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        known["status"] = ProbeStatus(known.get("status", "failed"))
        return cls(**known)


def result(name: str, output: str, status: ProbeStatus = ProbeStatus.OK) -> ProbeResult:
    """A result from recorded text: what fixtures and offline bundles hand the parsers."""
    return ProbeResult(name=name, status=status, output=output, exit_status=0)


Results = dict[str, ProbeResult]
