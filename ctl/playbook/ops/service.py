"""`service`: a long-running command kept running, under systemd or agentctl's supervisor.

Where systemd is PID 1 (`/run/systemd/system` exists, systemd's own test) the service is a unit
`agentctl-NAME.service` written from `render_unit`, enabled and started. Elsewhere (containers,
the test hosts) it runs under `python -m agentctl.serving supervise` from the node's venv: pid
files, restart on exit with backoff, logs in files (see `agentctl.serving.supervisor`).

Config changes restart the service: `watch` names files on the host whose contents, hashed
there together with the command and environment, are recorded when the service is (re)started;
a different digest on the next run means "restart", like an Ansible handler but stateless on
the control side.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import time
from typing import Any, Literal

from pydantic import field_validator

from agentctl.ctl.errors import OperationError
from agentctl.ctl.playbook.ops.base import (
    HostContext,
    OpArgs,
    Operation,
    Plan,
    TextList,
    TextMap,
    describe_failure,
)
from agentctl.ctl.playbook.ops.files import check_path, content_apply, content_plan

UNIT_DIR = "/etc/systemd/system"
#: seconds a freshly started service must stay up before it counts as started
SETTLE_S = 1.5

_WATCH = r"""marker=$1; shift
if [ -f "$marker" ]; then echo "marker=$(cat -- "$marker")"; fi
if [ -d /run/systemd/system ]; then echo "systemd=yes"; else echo "systemd=no"; fi
echo "files=$( { for f in "$@"; do sha256sum -- "$f" 2>&1; done; } | sha256sum | cut -c1-64)"
"""


def systemd_escape_arg(arg: str) -> str:
    """One ExecStart word: double-quoted, with `\\`, `"`, `%` and `$` escaped as systemd wants."""
    out = arg.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return f'"{out}"'


def render_unit(
    name: str,
    command: list[str],
    env: dict[str, str],
    user: str | None,
    cwd: str,
    description: str,
) -> str:
    """A systemd unit for one service (pure: tested on its text)."""
    lines = [
        f"# agentctl-{name}.service: written by agentctl; local edits are overwritten",
        "[Unit]",
        f"Description={description}",
        "After=network-online.target",
        "Wants=network-online.target",
        "",
        "[Service]",
        "Type=simple",
        "ExecStart=" + " ".join(systemd_escape_arg(a) for a in command),
    ]
    for key in sorted(env):
        lines.append("Environment=" + systemd_escape_arg(f"{key}={env[key]}"))
    if user:
        lines.append(f"User={user}")
    lines += [
        f"WorkingDirectory={cwd}",
        "Restart=always",
        "RestartSec=2",
        "KillMode=control-group",
        "TimeoutStopSec=15",
        "NoNewPrivileges=true",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    return "\n".join(lines)


def parse_kv(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep:
            out[k.strip()] = v.strip()
    return out


class ServiceArgs(OpArgs):
    name: str
    command: TextList
    env: TextMap = {}
    state: Literal["started", "stopped", "restarted", "absent"] = "started"
    watch: list[str] = []
    manager: Literal["auto", "systemd", "supervisor"] = "auto"
    #: supervisor: where pid files, state and logs live
    state_dir: str
    #: supervisor: the venv python that has agentctl.serving
    python: str
    user: str | None = None
    cwd: str = "/"
    description: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v or not all(c.isalnum() or c in "-_." for c in v) or v.startswith("."):
            raise ValueError(f"service names are letters, digits, '-', '_', '.': {v!r}")
        return v

    @field_validator("state_dir")
    @classmethod
    def _dir(cls, v: str) -> str:
        return check_path(v)

    @field_validator("command")
    @classmethod
    def _command(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("command must not be empty")
        return v

    def digest(self, files: str) -> str:
        doc = json.dumps([self.command, self.env, self.user, self.cwd, files], sort_keys=True)
        return hashlib.sha256(doc.encode()).hexdigest()

    @property
    def marker(self) -> str:
        return posixpath.join(self.state_dir, f"{self.name}.agentctl-watch")

    @property
    def unit(self) -> str:
        return posixpath.join(UNIT_DIR, f"agentctl-{self.name}.service")


class Service(Operation[ServiceArgs]):
    name = "service"
    Args = ServiceArgs

    def plan(self, ctx: HostContext, args: ServiceArgs) -> Plan:
        res = ctx.sh(_WATCH, args.marker, *args.watch, what="reading service state")
        st = parse_kv(res.stdout)
        systemd = args.manager == "systemd" or (
            args.manager == "auto" and st.get("systemd") == "yes"
        )
        digest = args.digest(st.get("files", ""))
        data: dict[str, Any] = {"systemd": systemd, "digest": digest}
        if systemd:
            return self._plan_systemd(ctx, args, st, data)
        return self._plan_supervisor(ctx, args, st, data)

    # ---- supervisor -------------------------------------------------------------------------

    def _supervise(
        self, ctx: HostContext, args: ServiceArgs, *rest: str
    ) -> tuple[int, dict[str, Any]]:
        argv = [args.python, "-m", "agentctl.serving", "supervise", *rest]
        res = ctx.run(argv, timeout=max(ctx.timeout, 60.0))
        try:
            doc: dict[str, Any] = json.loads(res.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise OperationError(
                f"supervise {rest[0]}: {describe_failure(res)}", host=ctx.name
            ) from None
        return res.exit_status, doc

    def _plan_supervisor(
        self, ctx: HostContext, args: ServiceArgs, st: dict[str, str], data: dict[str, Any]
    ) -> Plan:
        if not ctx.run(["test", "-x", args.python]).ok:
            if args.state in ("stopped", "absent"):
                return Plan(data=data)
            raise OperationError(
                f"{args.python} not found: provision the node first", host=ctx.name
            )
        _, status = self._supervise(ctx, args, "status", args.name, "--dir", args.state_dir)
        running = bool(status.get("running"))
        data["running"] = running
        if args.state in ("stopped", "absent"):
            changes = [f"stop {args.name}"] if running or status.get("state") == "backoff" else []
            if args.state == "absent" and st.get("marker"):
                changes.append(f"forget {args.name}")
            return Plan(changes, data=data)
        same = status.get("command") == args.command and sorted(
            status.get("env_keys") or []
        ) == sorted(args.env)
        if same and status.get("state") == "backoff":
            # crash-looping with this very spec: restart now (new config, backoff reset)
            return Plan([f"restart {args.name} (it was failing)"], data={**data, "restart": True})
        if not running or not same:
            what = "start" if not status.get("command") else "restart (new command)"
            return Plan([f"{what} {args.name} (supervisor)"], data={**data, "start": True})
        if args.state == "restarted" or st.get("marker") != data["digest"]:
            why = "asked" if args.state == "restarted" else "config changed"
            return Plan([f"restart {args.name} ({why})"], data={**data, "restart": True})
        return Plan(data=data)

    def _apply_supervisor(self, ctx: HostContext, args: ServiceArgs, plan: Plan) -> None:
        d = args.state_dir
        if args.state in ("stopped", "absent"):
            if plan.data.get("running") is not None:
                self._supervise(ctx, args, "stop", args.name, "--dir", d)
            if args.state == "absent":
                ctx.run(["rm", "-f", "--", args.marker, posixpath.join(d, f"{args.name}.json")])
            return
        ctx.check(["mkdir", "-p", "--", d], f"mkdir {d}")
        doc: dict[str, Any] = {}
        if plan.data.get("start"):
            env = [f"--env={k}={v}" for k, v in sorted(args.env.items())]
            code, doc = self._supervise(
                ctx, args, "start", args.name, "--dir", d, "--cwd", args.cwd, *env,
                "--", *args.command,
            )  # fmt: skip
            if code != 0 or not doc.get("running"):
                self._fail(ctx, args, doc)
        elif plan.data.get("restart"):
            code, doc = self._supervise(ctx, args, "restart", args.name, "--dir", d)
            if code != 0:
                raise OperationError(f"{args.name} did not restart: {doc}", host=ctx.name)
        if doc:
            self._settled(ctx, args, doc.get("pid"))
        self._mark(ctx, args, str(plan.data["digest"]))

    def _settled(self, ctx: HostContext, args: ServiceArgs, pid: object) -> None:
        """A command that dies at once (bad config, port taken) fails here, with its log,
        rather than as a health-check timeout later."""
        time.sleep(SETTLE_S)
        code, doc = self._supervise(ctx, args, "status", args.name, "--dir", args.state_dir)
        if code == 0 and doc.get("running") and doc.get("pid") == pid:
            return
        self._fail(ctx, args, doc)

    def _fail(self, ctx: HostContext, args: ServiceArgs, doc: dict[str, Any]) -> None:
        log = str(doc.get("log") or "")
        tail = ctx.run(["tail", "-n", "15", "--", log]).stdout.strip() if log else ""
        last = doc.get("last_exit") or {}
        raise OperationError(
            f"{args.name} did not start (exit {last.get('code', '?')}: "
            f"{doc.get('reason') or doc.get('state')}); the end of {log}:\n{tail}",
            host=ctx.name,
        )

    def _mark(self, ctx: HostContext, args: ServiceArgs, digest: str) -> None:
        ctx.write_marker(args.marker, digest, "recording the service state")

    # ---- systemd ----------------------------------------------------------------------------

    def _unit_text(self, args: ServiceArgs) -> bytes:
        return render_unit(
            args.name,
            args.command,
            args.env,
            args.user,
            args.cwd,
            args.description or f"agentctl {args.name}",
        ).encode()

    def _plan_systemd(
        self, ctx: HostContext, args: ServiceArgs, st: dict[str, str], data: dict[str, Any]
    ) -> Plan:
        unit = f"agentctl-{args.name}.service"
        active = ctx.run(["systemctl", "is-active", "--quiet", unit]).ok
        enabled = ctx.run(["systemctl", "is-enabled", "--quiet", unit]).ok
        data.update(active=active, enabled=enabled)
        if args.state in ("stopped", "absent"):
            changes = [f"stop {unit}"] if active else []
            if args.state == "absent" and ctx.run(["test", "-e", args.unit]).ok:
                changes.append(f"remove {args.unit}")
            return Plan(changes, data=data)
        unit_plan = content_plan(
            ctx, args.unit, self._unit_text(args), "644", None, None, secret=True
        )
        data["unit"] = unit_plan
        changes = list(unit_plan.changes)
        if not enabled:
            changes.append(f"enable {unit}")
        if not active:
            changes.append(f"start {unit}")
        elif unit_plan.changed or args.state == "restarted" or st.get("marker") != data["digest"]:
            changes.append(f"restart {unit}")
            data["restart"] = True
        return Plan(changes, data=data)

    def _apply_systemd(self, ctx: HostContext, args: ServiceArgs, plan: Plan) -> None:
        unit = f"agentctl-{args.name}.service"
        if args.state in ("stopped", "absent"):
            if plan.data.get("active"):
                ctx.check(["systemctl", "disable", "--now", unit], f"stopping {unit}")
            if args.state == "absent":
                ctx.check(["rm", "-f", "--", args.unit, args.marker], f"removing {unit}")
                ctx.check(["systemctl", "daemon-reload"], "daemon-reload")
            return
        unit_plan: Plan = plan.data["unit"]
        if unit_plan.changed:
            content_apply(ctx, args.unit, unit_plan, None, None, "644")
            ctx.check(["systemctl", "daemon-reload"], "daemon-reload")
        if not plan.data.get("enabled"):
            ctx.check(["systemctl", "enable", unit], f"enabling {unit}")
        verb = "restart" if plan.data.get("restart") else "start"
        ctx.check(["systemctl", verb, unit], f"{verb} {unit}")
        ctx.check(["mkdir", "-p", "--", args.state_dir], f"mkdir {args.state_dir}")
        self._mark(ctx, args, str(plan.data["digest"]))

    def apply(self, ctx: HostContext, args: ServiceArgs, plan: Plan) -> str | None:
        if plan.data["systemd"]:
            self._apply_systemd(ctx, args, plan)
            return "systemd"
        self._apply_supervisor(ctx, args, plan)
        return "supervisor"
