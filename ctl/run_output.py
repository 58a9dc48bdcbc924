"""What a recorded run keeps of what it saw: secrets redacted, with the exports' redactor.

`agentctl run -- cat /etc/app.env` would otherwise put the file's passwords and tokens into
`run_results`, where every dashboard viewer can read them, while the ECS export of the very same
run is redacted. So output, error text and the command line go through the same `Redactor` as
the exports before they are stored; only an explicit `--store-raw-output` keeps the output as
it was, and even then a viewer (not an operator) is shown it redacted (`for_viewer`).
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Mapping, Sequence
from typing import Any, Final

from agentctl.collectors.store import HostResult, RunRecord
from agentctl.ctl.diag.redact import Redactor

#: `options["output"]` of a run: how its stored output was kept
REDACTED: Final = "redacted"
RAW: Final = "raw"


def redact_result(result: HostResult, redactor: Redactor) -> HostResult:
    """`result` with stdout, stderr and the error text redacted."""
    return dataclasses.replace(
        result,
        stdout=redactor.text(result.stdout),
        stderr=redactor.text(result.stderr),
        error_message=None if result.error_message is None else redactor.text(result.error_message),
    )


def redact_value(value: Any, redactor: Redactor) -> Any:
    """A JSON-like value with every string in it redacted (run options, at any depth)."""
    if isinstance(value, str):
        return redactor.text(value)
    if isinstance(value, Mapping):
        return {k: redact_value(v, redactor) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v, redactor) for v in value]
    return value


def redact_argv(argv: Sequence[str], redactor: Redactor) -> tuple[list[str], bool]:
    """(argv as it may be stored, whether it carried a secret). Redacted as one command line,
    not word by word: `--password` and its value are two words, and only together do they read
    as a secret."""
    line = shlex.join(argv)
    clean = redactor.text(line)
    if clean == line:
        return list(argv), False
    try:
        return shlex.split(clean), True
    except ValueError:  # a marker inside quotes the redactor cut: keep one opaque word
        return [clean], True


def for_viewer(run: RunRecord) -> RunRecord:
    """`run` as a viewer may see it: output, errors, command and options redacted whatever was
    stored (runs stored raw, or before redaction at store time existed). Idempotent on text
    that was redacted already."""
    r = Redactor()
    return dataclasses.replace(
        run,
        command=None if run.command is None else r.text(run.command),
        options=redact_value(run.options, r),
        results=tuple(redact_result(h, r) for h in run.results),
    )


def stored_raw(run: RunRecord) -> bool:
    """Whether the run's output was stored unredacted (`agentctl run --store-raw-output`)."""
    return run.options.get("output") == RAW
