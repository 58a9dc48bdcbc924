"""`python -m agentctl.serving bench replay TRACE`: every policy on one trace, vs round-robin.

`--mode sim` (the default) replays through simulated engines on a virtual clock, deterministic
for `--seed`; `--mode live` starts real router and worker processes on loopback for each policy
and replays on the wall clock at `--time-scale` (see `live.py`). Output: a table, or with
`--json` the envelope `{ok, data, errors, meta}` with per-policy results and ratios against
round-robin.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime

from agentctl.serving.bench.metrics import PolicyResult
from agentctl.serving.bench.report import format_table, to_json
from agentctl.serving.bench.sim import SimOptions, compare
from agentctl.serving.bench.workload import Workload, load_workload
from agentctl.serving.costmodel import CostModel
from agentctl.serving.engine import EngineConfig
from agentctl.serving.router import policy_names

DEFAULT_POLICIES = ["round-robin", "least-loaded", "session", "dynamo", "sglang", "kv"]


def add_replay_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("trace", help="Mooncake .jsonl or WEKA Claude Code .jsonl[.xz]")
    ap.add_argument("--mode", choices=["sim", "live"], default="sim")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument(
        "--policy", action="append", dest="policies", help="repeatable; default: all six"
    )
    ap.add_argument(
        "--limit",
        "--sessions",
        type=int,
        dest="limit",
        help="conversations (WEKA) or rows (Mooncake) to read",
    )
    ap.add_argument("--skip", type=int, default=0)
    ap.add_argument("--concurrency", type=int, help="WEKA: keep K sessions active")
    ap.add_argument("--session-rate", type=float, help="WEKA: Poisson session starts per s")
    ap.add_argument("--think-scale", type=float, default=1.0)
    ap.add_argument("--rate-scale", type=float, default=1.0, help="Mooncake arrival speed-up")
    ap.add_argument("--capacity-blocks", type=int, default=EngineConfig().capacity_blocks)
    ap.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="sim: multiplier on step times; live: wall seconds per trace second",
    )
    ap.add_argument(
        "--max-wall", type=float, help="live: stop sending after this many wall seconds"
    )
    ap.add_argument("--kv-event-delay", type=float, default=0.0, help="seconds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")


def run_replay(args: argparse.Namespace) -> int:
    known = set(policy_names())
    policies = args.policies or DEFAULT_POLICIES
    unknown = [p for p in policies if p not in known]
    if unknown:
        print(
            f"error: unknown policy {', '.join(unknown)} (known: {', '.join(sorted(known))})",
            file=sys.stderr,
        )
        return 2
    started = time.perf_counter()
    try:
        wl = load_workload(
            args.trace,
            limit=args.limit,
            skip=args.skip,
            rate_scale=args.rate_scale,
            think_scale=args.think_scale,
            session_rate=args.session_rate,
            concurrency=args.concurrency,
            seed=args.seed,
        )
    except (OSError, ValueError) as exc:
        print(f"error: {args.trace}: {exc}", file=sys.stderr)
        return 1
    print(
        f"# {wl.name}: {len(wl.sessions)} sessions, {wl.num_requests()} requests, "
        f"loaded in {time.perf_counter() - started:.1f}s",
        file=sys.stderr,
    )

    def progress(name: str, res: PolicyResult) -> None:
        print(f"# {name}: {res.completed} done in {res.wall_s:.1f}s wall", file=sys.stderr)

    engine_config = EngineConfig(capacity_blocks=args.capacity_blocks)
    if args.mode == "live":
        results = _live(args, wl, policies, engine_config, progress)
        if results is None:
            return 1
    else:
        results = compare(
            wl,
            policies,
            workers=args.workers,
            engine_config=engine_config,
            cost=CostModel(time_scale=args.time_scale),
            seed=args.seed,
            options=SimOptions(kv_event_delay_s=args.kv_event_delay),
            progress=progress,
        )
    if args.json:
        doc = {
            "ok": True,
            "data": {
                "trace": str(args.trace),
                "mode": args.mode,
                "workers": args.workers,
                "capacity_blocks": args.capacity_blocks,
                "seed": args.seed,
                **to_json(results),
            },
            "errors": [],
            "meta": {
                "tool": "agentctl",
                "version": _version(),
                "schema": "agentctl.bench.replay/1",
                "collected_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
        }
        print(json.dumps(doc, default=float, sort_keys=True))
    else:
        print(
            f"{wl.name}: {wl.num_requests()} requests, {args.workers} workers x "
            f"{args.capacity_blocks} blocks, seed {args.seed}"
        )
        print(format_table(results))
    return 0


def _live(
    args: argparse.Namespace,
    wl: Workload,
    policies: list[str],
    engine_config: EngineConfig,
    progress: Callable[[str, PolicyResult], None],
) -> list[PolicyResult] | None:
    from agentctl.serving.bench.live import LiveOptions, run_live
    from agentctl.serving.cluster import ClusterError

    opts = LiveOptions(
        time_scale=args.time_scale,
        max_wall_s=args.max_wall if args.max_wall is not None else math.inf,
    )
    results: list[PolicyResult] = []
    for name in policies:
        try:
            res = run_live(
                wl,
                policy_name=name,
                workers=args.workers,
                engine_config=engine_config,
                seed=args.seed,
                options=opts,
            )
        except ClusterError as exc:
            print(f"error: {name}: {exc}", file=sys.stderr)
            return None
        results.append(res)
        progress(name, res)
    return results


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("agentctl")
    except PackageNotFoundError:
        return "0.0.0+unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="agentctl-serving bench replay", description=__doc__)
    add_replay_args(ap)
    return run_replay(ap.parse_args(argv))
