"""Trace-replay benchmark in simulation: every policy on one workload, ratios vs round-robin.

`python tests/bench/bench_replay_sim.py [TRACE] [options]` is `agentctl bench replay` with the
WEKA fixture (six conversations) as the default trace; options as `agentctl bench replay --help`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from agentctl.serving.bench.cli import main

DEFAULT_TRACE = (
    Path(__file__).resolve().parents[1] / "fixtures" / "traces" / "weka_cc_sample6.jsonl.xz"
)

if __name__ == "__main__":
    args = sys.argv[1:]
    if not args or args[0].startswith("-"):
        args = [str(DEFAULT_TRACE), *args]
    raise SystemExit(main(args))
