"""Trace-replay benchmark in simulation: every policy on one workload, ratios vs round-robin.

Standalone: `python tests/bench/bench_replay_sim.py [TRACE] [options]` (default trace: the WEKA
fixture of six conversations). Runs `agentctl.serving.bench.sim.compare` with 8 workers and the
policies round-robin, least-loaded, session, dynamo, sglang and kv on the same workload and seed,
and prints a table (or, with --json, the result envelope).

Load knobs: WEKA conversations replay closed loop; spread them with --concurrency K (K active
at once) or --session-rate R (Poisson starts per second), compress tool/think pauses with
--think-scale; Mooncake rows replay open loop at timestamp / --rate-scale.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from agentctl.serving.bench.metrics import PolicyResult
from agentctl.serving.bench.report import format_table, to_json
from agentctl.serving.bench.sim import SimOptions, compare
from agentctl.serving.bench.workload import load_workload
from agentctl.serving.costmodel import CostModel
from agentctl.serving.engine import EngineConfig

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_TRACE = ROOT / "tests" / "fixtures" / "traces" / "weka_cc_sample6.jsonl.xz"
POLICIES = ["round-robin", "least-loaded", "session", "dynamo", "sglang", "kv"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("trace", nargs="?", default=str(DEFAULT_TRACE))
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument(
        "--policy", action="append", dest="policies", help="repeatable; default: all six"
    )
    ap.add_argument("--limit", type=int, help="conversations (WEKA) or rows (Mooncake) to read")
    ap.add_argument("--skip", type=int, default=0)
    ap.add_argument("--concurrency", type=int)
    ap.add_argument("--session-rate", type=float)
    ap.add_argument("--think-scale", type=float, default=1.0)
    ap.add_argument("--rate-scale", type=float, default=1.0)
    ap.add_argument("--capacity-blocks", type=int, default=EngineConfig().capacity_blocks)
    ap.add_argument("--time-scale", type=float, default=1.0, help="cost model time scale")
    ap.add_argument("--kv-event-delay", type=float, default=0.0, help="seconds")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
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
    load_s = time.perf_counter() - t0
    print(
        f"# {wl.name}: {len(wl.sessions)} sessions, {wl.num_requests()} requests, "
        f"mode {wl.mode}, loaded in {load_s:.1f}s",
        file=sys.stderr,
    )

    def progress(name: str, res: PolicyResult) -> None:
        print(
            f"# {name}: {res.completed} done in {res.wall_s:.1f}s wall ({res.cpu_s:.1f}s CPU), "
            f"{res.extra.get('virtual_s', 0):.0f}s virtual, {res.extra.get('steps', 0):.0f} steps, "
            f"engines busy {100 * res.extra.get('busy', 0):.0f}% "
            f"(prefill {100 * res.extra.get('prefill_busy', 0):.0f}%) until 90% had arrived",
            file=sys.stderr,
        )

    results = compare(
        wl,
        args.policies or POLICIES,
        workers=args.workers,
        engine_config=EngineConfig(capacity_blocks=args.capacity_blocks),
        cost=CostModel(time_scale=args.time_scale),
        seed=args.seed,
        options=SimOptions(kv_event_delay_s=args.kv_event_delay),
        progress=progress,
    )
    if args.json:
        print(json.dumps(to_json(results), indent=2, default=float))
    else:
        load = (
            f"concurrency {args.concurrency}"
            if args.concurrency
            else f"session rate {args.session_rate}/s"
            if args.session_rate
            else "all sessions at t=0"
            if wl.mode == "closed"
            else f"rate x{args.rate_scale}"
        )
        print(
            f"{wl.name}: {wl.num_requests()} requests, {args.workers} workers x "
            f"{args.capacity_blocks} blocks, {load}, think x{args.think_scale}, seed {args.seed}"
        )
        print(format_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
