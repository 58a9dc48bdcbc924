"""Run a task over hosts and record the run, per host, in the store.

This is the seam between the fan-out (which knows nothing of the database) and the store
(which knows nothing of SSH): a run row is opened first, each host's result is written as it
finishes (so an interrupted run still keeps what completed), and the recap closes the row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agentctl.collectors.store import HostResult, Store
from agentctl.ctl.connector import Connector
from agentctl.ctl.diag.redact import Redactor
from agentctl.ctl.fanout import FanOut, FanoutOptions, HostOutcome, Recap, Status, TaskOutput
from agentctl.ctl.inventory import Host
from agentctl.ctl.run_output import RAW, REDACTED, redact_result, redact_value


@dataclass
class RunReport:
    run_id: int
    kind: str
    recap: Recap

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "kind": self.kind,
            "recap": self.recap.counts(),
            "aborted": self.recap.aborted,
            "interrupted": self.recap.interrupted,
            "hosts": [outcome_dict(o) for o in self.recap.outcomes],
        }


def outcome_dict(o: HostOutcome) -> dict[str, Any]:
    out: dict[str, Any] = {
        "host": o.host,
        "status": o.status.value,
        "attempts": o.attempts,
        "duration_s": round(o.duration_s, 3),
    }
    if o.result is not None:
        out["exit_status"] = o.result.exit_status
        out["stdout"] = o.result.stdout
        out["stderr"] = o.result.stderr
        if o.result.truncated:
            out["truncated"] = True
    if o.error is not None:
        out["error"] = o.error.to_dict()
    elif o.message:
        out["message"] = o.message
    # a playbook's per-task results, or a report that names its schema (diagnostics)
    if isinstance(o.data, dict) and ("tasks" in o.data or "schema" in o.data):
        out["data"] = o.data
    return out


def task_summary(data: Any) -> str:
    """A playbook host's per-task results as text, for the stored run (`runs show`)."""
    if not isinstance(data, dict) or "tasks" not in data:
        return ""
    lines = []
    for t in data["tasks"]:
        lines.append(f"{t['status']:8} {t['task']}")
        lines += [f"         {c}" for c in t.get("changes") or []]
        if t.get("message") and t["status"] != "ok":
            lines.append(f"         {t['message']}")
    return "\n".join(lines) + "\n"


def run_recorded(
    store: Store,
    *,
    kind: str,
    hosts: Sequence[Host],
    task: Callable[[Connector, Host], TaskOutput],
    connect: Callable[[Host], Connector],
    options: FanoutOptions,
    command: str | None,
    selection: str | None,
    run_options: dict[str, Any],
    on_done: Callable[[HostOutcome], None] | None = None,
    on_cancel: Callable[[], None] | None = None,
    raw_output: bool = False,
) -> RunReport:
    """Run `task` on `hosts`, recording each host's result as it finishes. What is stored is
    redacted (`run_output`): the command line and options always, the output and error text
    unless `raw_output` (`agentctl run --store-raw-output`); the report returned keeps the
    raw output for the terminal of the operator who ran it."""
    redactor = Redactor()
    stored_options = {**redact_value(run_options, redactor),
                      "output": RAW if raw_output else REDACTED}  # fmt: skip
    run_id = store.start_run(
        kind,
        command=None if command is None else redactor.text(command),
        selection=selection,
        hosts=[h.name for h in hosts],
        options=stored_options,
    )

    def storable(outcome: HostOutcome) -> HostResult:
        result = to_host_result(outcome)
        return result if raw_output else redact_result(result, redactor)

    stored: set[str] = set()

    def record(outcome: HostOutcome) -> None:
        store.record_result(run_id, storable(outcome))
        stored.add(outcome.host)
        if on_done is not None:
            on_done(outcome)

    fan: FanOut[Host] = FanOut(
        connect,
        task,
        name_of=lambda h: h.name,
        options=options,
        on_done=record,
        on_cancel=on_cancel,
    )
    recap = fan.run(hosts)
    for outcome in recap.outcomes:  # a write cut short by Ctrl-C is written now
        if outcome.host not in stored:
            store.record_result(run_id, storable(outcome))
    store.finish_run(run_id, status=run_status(recap), recap=recap.counts())
    return RunReport(run_id, kind, recap)


def run_status(recap: Recap) -> str:
    if recap.interrupted:
        return "interrupted"
    if recap.ok:
        return "ok"
    if any(o.status in (Status.OK, Status.CHANGED) for o in recap.outcomes):
        return "partial"
    return "failed"


def to_host_result(o: HostOutcome) -> HostResult:
    return HostResult(
        host=o.host,
        status=o.status.value,
        exit_status=o.result.exit_status if o.result else None,
        stdout=o.result.stdout if o.result else task_summary(o.data),
        stderr=o.result.stderr if o.result else "",
        duration_s=o.duration_s,
        error_kind=o.error_kind,
        error_message=o.error.message if o.error else o.message,
        attempts=o.attempts,
    )
