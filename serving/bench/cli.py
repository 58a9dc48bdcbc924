"""`python -m agentctl.serving bench replay TRACE`: every policy on one trace, vs round-robin.

`--mode sim` (the default) replays through simulated engines on a virtual clock, deterministic
for `--seed`; `--mode live` starts real router and worker processes on loopback for each policy
and replays on the wall clock at `--time-scale` (see `live.py`). Output: a table, or with
`--json` the envelope `{ok, data, errors, meta}` with per-policy results (each with its
`timeline` over the run) and ratios against round-robin.
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

DESCRIPTION = """\
Replay a trace through every routing policy (or those given with --policy) on the same
workload and seed, and report each policy's cache hit rate, latencies and throughput with
ratios against round-robin. The trace is Mooncake JSONL or WEKA Claude Code conversations
(.jsonl[.xz]). Progress goes to stderr, the report to stdout."""

#: what every column of the report means (`report.format_table`); `agentctl bench replay
#: --help` carries the same legend (tests/cli/test_startup.py checks both name every column)
LEGEND = """\
The report has one row per policy:
  policy    the routing policy
  done      requests completed
  rej       requests rejected (a prompt no worker can hold)
  hit%      prefix-cache hit rate as the engines count it: prompt tokens found cached at a
            request's first admission over prompt tokens admitted (vLLM's prefix_cache_hits
            over prefix_cache_queries)
  oracle%   the hit rate of one infinite cache that sees every request in arrival order:
            a ceiling that no policy, worker count or cache size can beat
  capt%     hit% / oracle%: the share of the reachable hit rate the policy captured
  ttft p50, p90, p99
            time to first token (arrival at the router to first token), percentiles
  itl p50   inter-token latency, the median over requests
  e2e p50   end-to-end latency (arrival to last token), the median
  tok/s     output tokens of completed requests per second, first arrival to last finish
  imbal     prefill imbalance: the busiest worker's prefill tokens over the workers' mean
            (1.00 is perfectly even)
  x p50, x p99
            round-robin's TTFT p50 / p99 over the policy's: 2.00 is half the latency
            (higher is better; '-' when round-robin did not run)
Latencies are in milliseconds of trace time in both modes. With --json: one envelope
{ok, data, errors, meta} with these fields per policy, the ratios against round-robin, and a
`timeline`: the run in windows of trace time (at most 30), fleet-wide and per worker, each
window's requests (by first token), token-weighted hit rate and TTFT p50 / p90."""


def add_replay_args(ap: argparse.ArgumentParser) -> None:
    """The options of `bench replay`, with their help and the report's legend."""
    ap.description = DESCRIPTION
    ap.epilog = LEGEND
    ap.formatter_class = argparse.RawDescriptionHelpFormatter
    ap.add_argument(
        "trace",
        help="Mooncake .jsonl, or WEKA Claude Code .jsonl or .jsonl.xz (detected from the "
        "first line)",
    )
    ap.add_argument(
        "--mode",
        choices=["sim", "live"],
        default="sim",
        help="sim: simulated engines on a virtual clock, deterministic for --seed (default); "
        "live: a real router and worker processes on loopback per policy, on the wall clock",
    )
    ap.add_argument(
        "--workers", type=int, default=8, metavar="N", help="engine workers (default 8)"
    )
    ap.add_argument(
        "--policy",
        action="append",
        dest="policies",
        metavar="NAME",
        help=f"a policy to replay, repeatable (default all six: {', '.join(DEFAULT_POLICIES)})",
    )
    ap.add_argument(
        "--limit",
        "--sessions",
        type=int,
        dest="limit",
        metavar="N",
        help="read N conversations (WEKA) or rows (Mooncake) (default: all)",
    )
    ap.add_argument(
        "--skip",
        type=int,
        default=0,
        metavar="N",
        help="skip the first N conversations (WEKA) or rows (Mooncake) (default 0)",
    )
    ap.add_argument(
        "--concurrency",
        type=int,
        metavar="K",
        help="WEKA: keep K conversations active, the next starting when one ends "
        "(default: all start at once, at their trace times)",
    )
    ap.add_argument(
        "--session-rate",
        type=float,
        metavar="R",
        help="WEKA: start conversations as a Poisson process of R per second, seeded",
    )
    ap.add_argument(
        "--think-scale",
        type=float,
        default=1.0,
        metavar="X",
        help="WEKA: multiplier on the think time between a request's finish and the next "
        "request (default 1.0; 0.05 packs the same turns 20x tighter)",
    )
    ap.add_argument(
        "--rate-scale",
        type=float,
        default=1.0,
        metavar="X",
        help="Mooncake: arrival speed-up, request i arrives at timestamp_i / X (default 1.0)",
    )
    ap.add_argument(
        "--capacity-blocks",
        type=int,
        default=EngineConfig().capacity_blocks,
        metavar="N",
        help=f"KV cache per worker in {EngineConfig().block_size}-token blocks "
        f"(default {EngineConfig().capacity_blocks})",
    )
    ap.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        metavar="X",
        help="sim: multiplier on every engine step time; live: wall seconds per trace second "
        "(default 1.0)",
    )
    ap.add_argument(
        "--max-wall",
        type=float,
        metavar="S",
        help="live: stop sending after S wall seconds; requests in flight finish "
        "(default: no limit)",
    )
    ap.add_argument(
        "--kv-event-delay",
        type=float,
        default=0.0,
        metavar="S",
        help="sim: seconds from an engine step to its KV events reaching the router's index "
        "(default 0)",
    )
    ap.add_argument(
        "--seed",
        type=int,
        default=0,
        metavar="N",
        help="seed of the session starts and the policies' random choices (default 0)",
    )
    ap.add_argument(
        "--json",
        action="store_true",
        help="print one JSON envelope on stdout instead of the table",
    )


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
        print("(--help explains every column)")
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
    ap = argparse.ArgumentParser(prog="python -m agentctl.serving bench replay")
    add_replay_args(ap)
    return run_replay(ap.parse_args(argv))
