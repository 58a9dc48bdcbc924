"""`agentctl export`: inventory, events, diagnostics or runs as bounded, versioned JSON Lines
(ECS by default, OCSF, Splunk HEC, ServiceNow IRE), to a file, stdout, or a collector.

`--post URL` spools the export under the state directory first and delivers from the spool, so a
collector that is down loses nothing: the next `agentctl export --resume --post URL` (or any
later export to the same URL) continues where delivery stopped. `agentctl export --verify FILE`
checks a file's header, trailer, count and sha256 (exit 6 when it does not verify).
"""

from __future__ import annotations

import os
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from agentctl.ctl.cli.main import state
from agentctl.ctl.errors import ConfigError, ExitCode, UsageError

if TYPE_CHECKING:  # the exporters (the store, httpx) load when the command runs
    from agentctl.ctl.cli.state import State
    from agentctl.ctl.export import Backoff, DeliveryReport

#: `agentctl.ctl.export`'s FORMATS and KINDS, spelled out for `--help`, which must not import
#: the exporters (tests/cli/test_startup.py keeps them equal)
FORMATS = ("ecs", "ocsf", "hec", "servicenow")
KINDS = ("inventory", "events", "diagnostics", "runs")

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str | None, now: datetime | None = None) -> datetime | None:
    """`24h`, `7d`, `90m` back from now, or an ISO-8601 time (UTC when it has no zone)."""
    if not text:
        return None
    now = now or datetime.now(UTC)
    unit = text[-1:].lower()
    if unit in _UNITS and text[:-1].isdigit():
        return now - timedelta(seconds=int(text[:-1]) * _UNITS[unit])
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--since: {text!r} is neither like 24h/7d nor ISO-8601") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def export_cmd(
    fmt: Annotated[str, typer.Option("--format", help=f"One of {', '.join(FORMATS)}.")] = "ecs",
    kind: Annotated[str, typer.Option("--kind", help=f"One of {', '.join(KINDS)}.")] = "events",
    since: Annotated[
        str | None, typer.Option("--since", help="24h, 7d or an ISO time (default: all).")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="File (default: stdout).")] = None,
    post: Annotated[
        str | None, typer.Option("--post", help="Send to a collector: HEC or Elastic _bulk URL.")
    ] = None,
    token_env: Annotated[
        str,
        typer.Option("--token-env", help="Variable holding the collector's token (with --post)."),
    ] = "AGENTCTL_EXPORT_TOKEN",  # noqa: S107 - the variable's name, not a token
    index: Annotated[str | None, typer.Option("--index", help="HEC/Elastic index.")] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="With --post: only deliver what is spooled.")
    ] = False,
    verify: Annotated[
        Path | None, typer.Option("--verify", help="Check an export file and exit.")
    ] = None,
    max_wait: Annotated[
        float,
        typer.Option("--max-wait", min=0.0, help="With --post: seconds of retrying, at most."),
    ] = 300.0,
) -> None:
    """Export for SIEM and CMDB: JSON Lines with a header and a count+sha256 trailer."""
    from agentctl.ctl.export import deliver, export, spool_name, verify_file

    st = state()
    if verify is not None:
        v = verify_file(verify)
        st.output.emit({"path": str(verify), "ok": v.ok, "problems": list(v.problems)},
                       schema="agentctl.export.verify/1", ok=v.ok)  # fmt: skip
        for p in v.problems:
            st.output.warn(p)
        if not v.ok:
            raise typer.Exit(ExitCode.VERIFICATION)
        st.output.info(f"{verify}: verifies")
        return
    when = parse_since(since)
    token = None
    if post:
        token = os.environ.get(token_env)
        if not token:
            raise ConfigError(f"--post needs the collector's token in ${token_env}")
    spool = None
    if post:
        spool = st.settings().state_dir / "export-spool" / spool_name(post, "auto", index)
    if post and resume:
        assert spool is not None
        rep = deliver(None, post, token, spool, index=index, backoff=_backoff(max_wait))
        _report_delivery(st, rep)
        return
    summary = None
    if out is not None or post:
        target = out
        if target is None:
            fd, tmp = tempfile.mkstemp(prefix="agentctl-export-", suffix=".jsonl")
            os.close(fd)
            target = Path(tmp)
        try:
            with open(target, "w", encoding="utf-8") as fh:
                summary = export(st.store(), fmt, kind, when, fh, hec_index=index)
            if post:
                assert spool is not None
                rep = deliver(target, post, token, spool, index=index, backoff=_backoff(max_wait))
                _report_delivery(st, rep, summary.to_json())
                return
        finally:
            if out is None and target is not None:
                target.unlink(missing_ok=True)
        st.output.emit(summary.to_json(), schema="agentctl.export/1", ok=True)
        st.output.info(f"{summary.count} {kind} record(s) in {fmt} to {out} "
                       f"(sha256 {summary.sha256[:16]}...)")  # fmt: skip
        return
    if st.json:
        raise UsageError("--json describes a file export: give --out FILE (stdout is the data)")
    export(st.store(), fmt, kind, when, sys.stdout, hec_index=index)


def _backoff(max_wait: float) -> Backoff:
    from agentctl.ctl.export import Backoff

    return Backoff(initial=min(0.5, max_wait / 4 or 0.001), max_total=max_wait)


def _report_delivery(
    st: State, rep: DeliveryReport, summary: dict[str, object] | None = None
) -> None:
    data = {"delivery": rep.to_json(), "export": summary}
    ok = rep.status == "complete"
    st.output.emit(data, schema="agentctl.export.delivery/1", ok=ok)
    st.output.info(f"delivery to {rep.url}: {rep.status}; delivered {rep.delivered}, "
                   f"pending {rep.pending}, rejected {rep.rejected}")  # fmt: skip
    if rep.status == "failed":
        raise typer.Exit(ExitCode.ERROR)
    if rep.status == "pending":
        st.output.warn("the collector is unavailable; records stay spooled: re-run with --resume")
        raise typer.Exit(ExitCode.UNREACHABLE)
