"""Runs a playbook on one host: render, check `when`, plan, apply, in task order.

Each host runs its tasks in order and stops at its first failure (its results so far are kept,
so the recap says exactly where it stopped); re-running continues from there because every
operation reads the state first and does nothing when it is already right. In check mode
nothing is applied; a task whose plan fails after an earlier task would have changed something
is reported `unknown` (its inputs do not exist yet), not failed, which is as far as a dry run
can honestly go.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agentctl.ctl.connector import Become, Connector
from agentctl.ctl.errors import AgentctlError, OperationError
from agentctl.ctl.fanout import Status, TaskOutput
from agentctl.ctl.inventory import Host, Inventory
from agentctl.ctl.inventory.frozen import is_secret_name, thaw
from agentctl.ctl.playbook.model import Playbook, TaskSpec
from agentctl.ctl.playbook.ops import OPERATIONS
from agentctl.ctl.playbook.ops.base import HostContext, Operation, Plan
from agentctl.ctl.playbook.render import (
    RenderError,
    evaluate,
    make_environment,
    render_template,
    render_value,
)

TaskStatus = Literal["ok", "changed", "skipped", "failed", "unknown"]


@dataclass
class TaskResult:
    task: str
    op: str
    status: TaskStatus
    changes: list[str] = field(default_factory=list)
    diff: str | None = None
    message: str | None = None
    duration_s: float = 0.0
    line: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "op": self.op,
            "status": self.status,
            "changes": list(self.changes),
            "diff": self.diff,
            "message": self.message,
            "duration_s": round(self.duration_s, 3),
            "line": self.line,
        }


@dataclass
class HostRun:
    host: str
    check: bool
    results: list[TaskResult] = field(default_factory=list)

    @property
    def failed(self) -> TaskResult | None:
        return next((r for r in self.results if r.status == "failed"), None)

    def count(self, status: TaskStatus) -> int:
        return sum(1 for r in self.results if r.status == status)

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "counts": {s: self.count(s) for s in ("ok", "changed", "skipped", "failed", "unknown")},
            "tasks": [r.to_dict() for r in self.results],
        }


def _internal(exc: Exception) -> str:
    return f"internal error: {type(exc).__name__}: {exc}"


def inventory_context(inventory: Inventory) -> tuple[dict[str, Any], dict[str, list[str]]]:
    """`hostvars` and `groups` as Ansible templates see them (no secrets)."""
    hostvars: dict[str, Any] = {}
    for h in inventory.hosts.values():
        hv = {k: thaw(v) for k, v in h.vars.items() if not is_secret_name(k)}
        hv.update(
            inventory_hostname=h.name,
            ansible_host=h.address,
            agentctl_roles=list(h.roles),
            agentctl_install_root=h.install_root,
        )
        hostvars[h.name] = hv
    groups: dict[str, list[str]] = {name: [] for name in inventory.groups}
    groups.setdefault("all", [])
    for h in inventory.hosts.values():
        for g in h.groups:
            groups.setdefault(g, []).append(h.name)
        if "all" not in h.groups:
            groups["all"].append(h.name)
    return hostvars, groups


class PlaybookRunner:
    """One playbook, ready to run on many hosts (thread-safe: no state across hosts)."""

    def __init__(
        self,
        playbook: Playbook,
        *,
        check: bool,
        hostvars: Mapping[str, Any],
        groups: Mapping[str, Sequence[str]],
        become_for: Callable[[Host], Become | None],
        timeout: float = 120.0,
        extra_vars: Mapping[str, Any] | None = None,
        scratch: Path | None = None,
        operations: Mapping[str, Operation[Any]] = OPERATIONS,
        files_dirs: Sequence[Path] = (),
        on_task: Callable[[str, TaskResult], None] | None = None,
    ) -> None:
        self.playbook = playbook
        self.check = check
        self.hostvars = hostvars
        self.groups = groups
        self.become_for = become_for
        self.timeout = timeout
        self.extra_vars = dict(extra_vars or {})
        self.scratch = scratch
        self.operations = operations
        self.files_dirs = tuple(files_dirs) or (Path(playbook.path).parent,)
        self.env = make_environment(playbook.template_dirs)
        self.on_task = on_task

    def variables(self, host: Host) -> dict[str, Any]:
        """Playbook defaults < inventory < --extra-vars, plus the Ansible magic names."""
        out: dict[str, Any] = dict(self.playbook.vars)
        out.update(thaw(host.vars))  # its own secrets too: `no_log` keeps them out of output
        out.update(
            inventory_hostname=host.name,
            ansible_host=host.address,
            agentctl_roles=list(host.roles),
            agentctl_install_root=host.install_root,
            hostvars=self.hostvars,
            groups=self.groups,
            check_mode=self.check,
        )
        out.update(self.extra_vars)
        self._resolve(out, [k for k in self.playbook.vars if k not in self.extra_vars])
        return out

    def _resolve(self, out: dict[str, Any], keys: list[str]) -> None:
        """Render playbook variables that refer to others (`base: "{{ root }}/x"`); a few
        passes settle chains, and whatever still fails is left for the task to report."""
        pending = [k for k in keys if isinstance(out[k], str | list | dict)]
        for _ in range(4):
            left = []
            for key in pending:
                try:
                    out[key] = render_value(self.env, out[key], out)
                except RenderError:
                    left.append(key)
            if not left or len(left) == len(pending):
                return
            pending = left

    def run_host(self, conn: Connector, host: Host) -> HostRun:
        run = HostRun(host.name, self.check)
        base = self.variables(host)
        would_change = False
        for task in self.playbook.tasks:
            for result in self._task(conn, host, task, base, would_change):
                run.results.append(result)
                if self.on_task is not None:
                    self.on_task(host.name, result)
                if result.status == "changed":
                    would_change = True
                if result.status == "failed":
                    return run
        return run

    def _items(self, task: TaskSpec, variables: Mapping[str, Any]) -> list[Any]:
        if task.loop is None:
            return [None]
        items = render_value(self.env, task.loop, variables)
        if not isinstance(items, list | tuple | range):
            raise RenderError(f"loop must give a list, got {type(items).__name__}")
        return list(items)

    def _task(
        self,
        conn: Connector,
        host: Host,
        task: TaskSpec,
        base: Mapping[str, Any],
        would_change: bool,
    ) -> list[TaskResult]:
        started = time.monotonic()
        try:
            items = self._items(task, base)
        except RenderError as exc:
            return [self._result(task, "failed", started, message=f"loop: {exc}")]
        out = []
        for item in items:
            variables = dict(base)
            label = task.name
            if task.loop is not None:
                variables["item"] = item
                label = f"{task.name} (item={item})"
            res = self._one(conn, host, task, variables, label, would_change)
            out.append(res)
            if res.status == "failed":
                break
        return out

    def _one(
        self,
        conn: Connector,
        host: Host,
        task: TaskSpec,
        variables: dict[str, Any],
        label: str,
        would_change: bool,
    ) -> TaskResult:
        started = time.monotonic()
        op = self.operations[task.op]
        try:
            if task.when is not None and not evaluate(self.env, task.when, variables):
                return self._result(task, "skipped", started, label, message=f"when: {task.when}")
            raw = render_value(self.env, task.args, variables)
            args = op.parse(raw)
        except (RenderError, ValueError) as exc:
            return self._result(task, "failed", started, label, message=str(exc))
        # Ansible's precedence: a connection variable (`ansible_become` on the host or a group)
        # overrides the task's `become:` keyword; without one the keyword decides.
        explicit = "ansible_become" in host.vars or task.become is None
        become_wanted = host.become if explicit else bool(task.become)
        ctx = HostContext(
            conn=conn,
            name=host.name,
            vars=variables,
            become=self.become_for(host) if become_wanted else None,
            timeout=self.timeout,
            files_dirs=self.files_dirs,
            scratch=self.scratch,
            no_log=task.no_log,
            render_template=lambda name: render_template(self.env, name, variables),
        )
        try:
            plan: Plan = op.plan(ctx, args)
        except RenderError as exc:
            return self._result(task, "failed", started, label, message=str(exc))
        except OperationError as exc:
            if self.check and would_change:
                return self._result(
                    task, "unknown", started, label,
                    message=f"cannot tell before earlier changes are made: {exc.message}",
                )  # fmt: skip
            return self._result(task, "failed", started, label, message=exc.message)
        except AgentctlError as exc:
            return self._result(task, "failed", started, label, message=exc.message)
        except Exception as exc:  # a bug in an operation must not hide where the host stopped
            return self._result(task, "failed", started, label, message=_internal(exc))
        changes = ["(hidden: no_log)"] if task.no_log and plan.changes else plan.changes
        diff = None if task.no_log else plan.diff
        if self.check:
            status: TaskStatus = "changed" if plan.changed else "ok"
            if plan.data.get("readonly") and not plan.changed:
                return self._result(task, "ok", started, label, message="runs when applied")
            return self._result(task, status, started, label, changes=changes, diff=diff)
        if not plan.changed and not plan.data.get("readonly"):
            return self._result(task, "ok", started, label)
        try:
            message = op.apply(ctx, args, plan)
        except RenderError as exc:
            return self._result(task, "failed", started, label, changes=changes, message=str(exc))
        except AgentctlError as exc:
            return self._result(
                task, "failed", started, label, changes=changes, diff=diff, message=exc.message
            )
        except Exception as exc:
            return self._result(
                task, "failed", started, label, changes=changes, message=_internal(exc)
            )
        status = "changed" if plan.changed else "ok"
        return self._result(task, status, started, label, changes=changes, diff=diff,
                            message=message)  # fmt: skip

    @staticmethod
    def _result(
        task: TaskSpec,
        status: TaskStatus,
        started: float,
        label: str | None = None,
        **kw: Any,
    ) -> TaskResult:
        return TaskResult(
            task=label or task.name,
            op=task.op,
            status=status,
            duration_s=time.monotonic() - started,
            line=task.line,
            **kw,
        )

    def fanout_task(self) -> Callable[[Connector, Host], TaskOutput]:
        """The FanOut task: a host is `changed` if any task changed, `failed` at its first
        failure (with every result so far in `data`)."""

        def task(conn: Connector, host: Host) -> TaskOutput:
            run = self.run_host(conn, host)
            failed = run.failed
            if failed is not None:
                return TaskOutput(
                    Status.FAILED,
                    data=run.to_dict(),
                    message=f"task {failed.task!r} failed: {failed.message}",
                )
            changed = run.count("changed")
            status = Status.CHANGED if changed else Status.OK
            verb = "would change" if self.check else "changed"
            return TaskOutput(status, data=run.to_dict(), message=f"{changed} {verb}")

        return task
