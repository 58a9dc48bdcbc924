"""`router_workers`: drain or undrain a node's engine workers on the router running on this host.

Runs `python -m agentctl.serving admin` on the router node itself (the admin token stays in a
file there; the admin API needs no open port), selects the workers deployed for the named
nodes (worker ids `<node>-w<i>`, as `deploy` names them), and changes only those whose state
differs. With `wait_idle`, a drain waits until their in-flight requests have finished, the step
`maintenance` needs before touching a node.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from agentctl.ctl.errors import OperationError
from agentctl.ctl.playbook.ops.base import (
    HostContext,
    OpArgs,
    Operation,
    Plan,
    TextList,
    describe_failure,
)


def worker_ids(workers: list[dict[str, Any]], nodes: list[str]) -> list[str]:
    """Ids of the router's workers that belong to `nodes` (`<node>-w<index>`)."""
    out = []
    for w in workers:
        wid = str(w.get("id", ""))
        node, sep, index = wid.rpartition("-w")
        if sep and index.isdigit() and node in nodes:
            out.append(wid)
    return out


class RouterWorkersArgs(OpArgs):
    #: the router's venv python on this host
    python: str
    #: the router's config file on this host (URL and admin token come from it)
    config: str
    nodes: TextList
    state: Literal["drained", "active"] = "drained"
    wait_idle: bool = False
    timeout: float = 300.0


class RouterWorkers(Operation[RouterWorkersArgs]):
    name = "router_workers"
    Args = RouterWorkersArgs

    def _admin(self, ctx: HostContext, args: RouterWorkersArgs, *rest: str) -> dict[str, Any]:
        argv = [args.python, "-m", "agentctl.serving", "admin", "--config", args.config, *rest]
        res = ctx.run(argv, timeout=args.timeout + 30)
        try:
            doc: dict[str, Any] = json.loads(res.stdout)
        except ValueError:
            raise OperationError(f"router admin: {describe_failure(res)}", host=ctx.name) from None
        if not res.ok or not doc.get("ok"):
            raise OperationError(f"router admin: {doc.get('error', res.stdout)}", host=ctx.name)
        return doc

    def plan(self, ctx: HostContext, args: RouterWorkersArgs) -> Plan:
        workers = self._admin(ctx, args, "workers")["workers"]
        ids = worker_ids(workers, args.nodes)
        if not ids:
            raise OperationError(
                f"the router has no workers of {', '.join(args.nodes)}", host=ctx.name
            )
        want = args.state == "drained"
        flip = [w["id"] for w in workers if w["id"] in ids and bool(w["draining"]) != want]
        verb = "drain" if want else "undrain"
        plan = Plan([f"{verb} {w}" for w in flip], data={"ids": ids, "flip": flip})
        if want and args.wait_idle:
            plan.data["readonly"] = True  # waiting happens even when nothing flips
        return plan

    def apply(self, ctx: HostContext, args: RouterWorkersArgs, plan: Plan) -> str | None:
        flip: list[str] = plan.data["flip"]
        ids: list[str] = plan.data["ids"]
        if flip:
            self._admin(ctx, args, "drain" if args.state == "drained" else "undrain", *flip)
        if args.state == "drained" and args.wait_idle:
            self._admin(ctx, args, "wait-idle", *ids, "--timeout", repr(args.timeout))
            return f"{len(ids)} worker(s) drained and idle"
        return None
