"""`router_workers`: drain or undrain a node's engine workers on the router running on this host.

Runs `python -m agentctl.serving admin` on the router node itself (the admin token stays in a
file there; the admin API needs no open port), selects the workers deployed for the named
nodes (worker ids `<node>-w<i>`, as `deploy` names them), and changes only those whose state
differs. With `wait_idle`, a drain waits until their in-flight requests have finished, the step
`maintenance` needs before touching a node.

Before the admin token goes anywhere, the router answering at the config's address is checked
to be the one this config describes (`identity_problem`): its tokenless `GET /health` must
report the config's policy and block size and serve every worker the config lists at the
same URL. Two fleets on one host (two demos) could otherwise have the token of one sent to
the other's router, whichever holds the port.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final, Literal

from agentctl.ctl.errors import OperationError
from agentctl.ctl.playbook.ops.base import (
    HostContext,
    OpArgs,
    Operation,
    Plan,
    TextList,
    describe_failure,
)

#: run on the router node with the router's python: what the config expects (as `serving admin`
#: reads it) and what the router at that address says on `/health`, which needs no token
_IDENTITY: Final = """
import json, sys, urllib.error, urllib.request
from agentctl.serving.config import load_router_config
cfg = load_router_config(sys.argv[1])
host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::", "") else cfg.host
url = "http://%s:%d/health" % ("[%s]" % host if ":" in host else host, cfg.port)
out = {"url": url, "expected": {"policy": cfg.policy, "block_size": cfg.block_size,
       "workers": {w.id or "w%d" % i: w.url for i, w in enumerate(cfg.workers)}}}
try:
    with urllib.request.urlopen(url, timeout=10) as r:
        body = r.read(1 << 20)
except urllib.error.HTTPError as e:  # 503: no healthy worker, still the router's answer
    body = e.read(1 << 20)
except OSError as e:
    body, out["error"] = None, "%s: %s" % (type(e).__name__, e)
if body is not None:
    try:
        out["health"] = json.loads(body)
    except ValueError:
        out["error"] = "its /health is not JSON"
print(json.dumps(out))
"""


def identity_problem(expected: Mapping[str, Any], health: Any) -> str | None:
    """Why the router's `/health` answer does not match its config (None: it does).

    Policy and block size must be the config's, and every worker the config lists must be
    served at the same URL (workers added later through the admin API may be extra). Fleets
    pick their own worker addresses and ports, so another fleet's router fails this even with
    the same worker names."""
    if not isinstance(health, dict):
        return "it gave no /health document"
    for key in ("policy", "block_size"):
        if health.get(key) != expected.get(key):
            return f"its {key} is {health.get(key)!r}, the config says {expected.get(key)!r}"
    served = {str(w.get("id")): str(w.get("url")).rstrip("/") for w in health.get("workers") or []
              if isinstance(w, dict)}  # fmt: skip
    wanted: Mapping[str, Any] = expected.get("workers") or {}
    wrong = sorted(wid for wid, url in wanted.items() if served.get(wid) != str(url).rstrip("/"))
    if wrong:
        return f"it does not serve the config's worker(s) {', '.join(wrong[:5])} at their URLs"
    return None


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

    def _check_identity(self, ctx: HostContext, args: RouterWorkersArgs) -> None:
        """Refuse before any token is sent unless the router is the config's (see above)."""
        res = ctx.run([args.python, "-c", _IDENTITY, args.config], timeout=60)
        try:
            doc = json.loads(res.stdout)
        except ValueError:
            raise OperationError(
                f"router identity check: {describe_failure(res)}", host=ctx.name
            ) from None
        where = doc.get("url", "the configured address")
        problem = doc.get("error") or identity_problem(doc.get("expected") or {}, doc.get("health"))
        if problem:
            raise OperationError(
                f"the service at {where} is not the router {args.config} describes ({problem}); "
                "its admin token was not sent",
                host=ctx.name,
            )

    def plan(self, ctx: HostContext, args: RouterWorkersArgs) -> Plan:
        self._check_identity(ctx, args)
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
