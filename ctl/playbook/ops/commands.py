"""`command` (with `creates` / `removes` / `unless` guards) and `wait_for` (port or HTTP).

A command is an argv list, quoted by the connector; `shell:` exists for playbook authors who
need a pipeline, and takes values only as positional parameters (`args:`), never spliced into
the script. Without a guard a command cannot know whether it is needed, so it always runs and
counts as changed (`changed: false` declares a read-only one), as in Ansible.

`wait_for` polls from the host itself with its `python3` (the port may listen on loopback only):
a TCP connect, or an HTTP GET that must answer 2xx.
"""

from __future__ import annotations

from pydantic import model_validator

from agentctl.ctl.errors import OperationError
from agentctl.ctl.playbook.ops.base import (
    HostContext,
    OpArgs,
    Operation,
    Plan,
    TextList,
    TextMap,
    describe_failure,
    show_argv,
)

#: characters of a read-only command's output kept as its result (evidence, checks)
OUTPUT_KEPT = 4000


class CommandArgs(OpArgs):
    argv: TextList | None = None
    shell: str | None = None
    #: positional parameters of `shell` ($1, $2...)
    args: TextList = []
    creates: str | None = None
    removes: str | None = None
    #: skip when this argv exits 0 (it must only read)
    unless: TextList | None = None
    env: TextMap = {}
    #: false: a read-only command, never reported as a change (its output is the result)
    changed: bool = True
    timeout: float | None = None
    #: exit statuses that count as success (e.g. [0, 3] for an LSB `status`)
    ok_codes: list[int] = [0]

    @model_validator(mode="after")
    def _one(self) -> CommandArgs:
        if (self.argv is None) == (self.shell is None):
            raise ValueError("give exactly one of 'argv' (a list) or 'shell' (a script)")
        if self.argv is not None and not self.argv:
            raise ValueError("'argv' must not be empty")
        if self.args and self.shell is None:
            raise ValueError("'args' goes with 'shell'")
        return self

    def full_argv(self) -> list[str]:
        if self.argv is not None:
            return list(self.argv)
        assert self.shell is not None
        return ["sh", "-c", self.shell, "agentctl", *self.args]


class Command(Operation[CommandArgs]):
    name = "command"
    Args = CommandArgs

    def plan(self, ctx: HostContext, args: CommandArgs) -> Plan:
        if args.creates is not None and ctx.run(["test", "-e", args.creates]).ok:
            return Plan()
        if args.removes is not None and not ctx.run(["test", "-e", args.removes]).ok:
            return Plan()
        if args.unless is not None and ctx.run(args.unless).ok:
            return Plan()
        what = "run a command" if ctx.no_log else f"run {show_argv(args.full_argv())}"
        if not args.changed:
            return Plan(data={"what": what, "readonly": True})
        return Plan([what], always=args.creates is None and args.unless is None)

    def apply(self, ctx: HostContext, args: CommandArgs, plan: Plan) -> str | None:
        res = ctx.run(args.full_argv(), env=args.env or None, timeout=args.timeout)
        if res.exit_status not in args.ok_codes:
            detail = f"exit {res.exit_status}" if ctx.no_log else describe_failure(res)
            raise OperationError(f"command failed: {detail}", host=ctx.name)
        if args.creates is not None and not ctx.run(["test", "-e", args.creates]).ok:
            raise OperationError(
                f"command succeeded but did not create {args.creates}", host=ctx.name
            )
        if plan.data.get("readonly") and not ctx.no_log:
            out = res.stdout.strip()
            return out[-OUTPUT_KEPT:] if out else None
        return None


_WAIT = r"""
import socket, sys, time, urllib.request, urllib.error
kind, target, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
deadline = time.monotonic() + timeout
last = "not tried"
while True:
    try:
        if kind == "port":
            host, _, port = target.rpartition(":")
            with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
                pass
        else:
            with urllib.request.urlopen(target, timeout=2) as r:
                if not 200 <= r.status < 300:
                    raise OSError(f"HTTP {r.status}")
        print("ready")
        sys.exit(0)
    except (OSError, urllib.error.URLError) as exc:
        last = str(exc)
    if time.monotonic() >= deadline:
        print(f"not ready after {timeout:g} s: {last}")
        sys.exit(1)
    time.sleep(0.2)
"""


class WaitForArgs(OpArgs):
    port: int | None = None
    host: str = "127.0.0.1"
    url: str | None = None
    timeout: float = 60.0
    #: the Python that runs the probe on the host
    python: str = "python3"

    @model_validator(mode="after")
    def _one(self) -> WaitForArgs:
        if (self.port is None) == (self.url is None):
            raise ValueError("give exactly one of 'port' or 'url'")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError("'url' must be http:// or https://")
        return self


class WaitFor(Operation[WaitForArgs]):
    """Never a change: it reads until the port answers or the URL returns 2xx, or fails."""

    name = "wait_for"
    Args = WaitForArgs

    def plan(self, ctx: HostContext, args: WaitForArgs) -> Plan:
        return Plan(data={"readonly": True})

    def apply(self, ctx: HostContext, args: WaitForArgs, plan: Plan) -> str | None:
        if args.url is not None:
            kind, target = "url", args.url
        else:
            kind, target = "port", f"{args.host}:{args.port}"
        res = ctx.run(
            [args.python, "-c", _WAIT, kind, target, repr(args.timeout)],
            become=False,
            timeout=args.timeout + 15,
        )
        if not res.ok:
            raise OperationError(f"{target}: {describe_failure(res)}", host=ctx.name)
        return f"{target} ready"
