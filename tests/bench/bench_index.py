"""Micro-benchmark of the router's block index (standalone: `python tests/bench/bench_index.py`).

Workload: 8 workers of 16,384 blocks (Dynamo mocker default), 64 agent conversations whose
2,000-block prompts share a 100-block system prefix, 8 conversations per worker (the index then
holds ~122k confirmed blocks). Measured, in one process:

- lookups: every conversation's full prompt against the index (one worker matches all 2,000
  blocks, the others the 100-block prefix); a "block lookup" is one prompt block checked;
  once with the confirmed layer only, once with a predicted layer also populated;
- events: `BlockStored` / `BlockRemoved` at 1, 16 and 128 blocks per event (a decode step,
  a small prefill, an 8,192-token prefill chunk), at capacity so stores also evict;
- memory: bytes traced by tracemalloc for the filled index, total and per resident block.
"""

from __future__ import annotations

import argparse
import random
import time
import tracemalloc

from agentctl.serving.router.index import BlockIndex
from agentctl.serving.types import BlockRemoved, BlockStored

WORKERS = 8
CAPACITY = 16_384
CONVERSATIONS = 64
PROMPT_BLOCKS = 2_000
SHARED_PREFIX = 100


def workload(seed: int) -> list[tuple[int, ...]]:
    rng = random.Random(seed)
    prefix = tuple(rng.getrandbits(64) for _ in range(SHARED_PREFIX))
    return [
        prefix + tuple(rng.getrandbits(64) for _ in range(PROMPT_BLOCKS - SHARED_PREFIX))
        for _ in range(CONVERSATIONS)
    ]


def fill(prompts: list[tuple[int, ...]], chunk: int = 128) -> BlockIndex:
    idx = BlockIndex()
    seqs = [0] * WORKERS
    for w in range(WORKERS):
        idx.add_worker(f"w{w}", CAPACITY)
    for c, prompt in enumerate(prompts):
        w = c % WORKERS
        for i in range(0, len(prompt), chunk):
            idx.apply(f"w{w}", seqs[w], BlockStored(prompt[i : i + chunk], None), 0.0)
            seqs[w] += 1
    return idx


def bench_lookups(idx: BlockIndex, prompts: list[tuple[int, ...]], seconds: float) -> float:
    blocks = 0
    t0 = time.perf_counter()
    end = t0 + seconds
    n = 0
    while time.perf_counter() < end:
        for prompt in prompts:
            got = idx.overlaps(prompt, 1.0)
            deepest = max(got.values(), default=0)
            blocks += min(len(prompt), deepest + 1)
            n += 1
    elapsed = time.perf_counter() - t0
    print(f"    {n:,} prompt lookups in {elapsed:.2f} s: {n / elapsed:,.0f} lookups/s")
    return blocks / elapsed


def bench_events(block_per_event: int, seconds: float, seed: int) -> tuple[float, float]:
    """Store/remove pairs on a full worker, so every store also runs at capacity."""
    rng = random.Random(seed)
    idx = BlockIndex()
    idx.add_worker("w", CAPACITY)
    base = [rng.getrandbits(64) for _ in range(CAPACITY)]
    idx.apply("w", 0, BlockStored(tuple(base), None), 0.0)
    pool = [tuple(rng.getrandbits(64) for _ in range(block_per_event)) for _ in range(512)]
    seq, events, blocks = 1, 0, 0
    t0 = time.perf_counter()
    end = t0 + seconds
    while time.perf_counter() < end:
        for hashes in pool:
            idx.apply("w", seq, BlockStored(hashes, None), 0.0)
            idx.apply("w", seq + 1, BlockRemoved(hashes), 0.0)
            seq += 2
            events += 2
            blocks += 2 * len(hashes)
    elapsed = time.perf_counter() - t0
    return events / elapsed, blocks / elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    prompts = workload(args.seed)
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    idx = fill(prompts)
    held = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    stats = idx.stats()
    print(f"index: {WORKERS} workers x {CAPACITY:,} blocks, {CONVERSATIONS} conversations")
    print(
        f"  memory held: {held / 2**20:.1f} MiB for {stats.confirmed_blocks:,} resident blocks "
        f"({stats.distinct_hashes:,} distinct hashes): {held / stats.confirmed_blocks:.0f} B/block"
    )

    print("  lookups, confirmed layer only:")
    rate = bench_lookups(idx, prompts, args.seconds)
    print(f"    {rate / 1e6:.1f} M block lookups/s")
    for c, prompt in enumerate(prompts):
        idx.record_route(f"w{(c + 1) % WORKERS}", prompt[: PROMPT_BLOCKS // 2], 0.0)
    print("  lookups, confirmed + predicted layers:")
    rate2 = bench_lookups(idx, prompts, args.seconds)
    print(f"    {rate2 / 1e6:.1f} M block lookups/s")

    print("  events at capacity (store + remove pairs):")
    for size in (1, 16, 128):
        ev, bl = bench_events(size, args.seconds, args.seed)
        print(f"    {size:>3} blocks/event: {ev:,.0f} events/s ({bl / 1e6:.2f} M blocks/s)")
    target = 1e6
    verdict = "meets" if min(rate, rate2) >= target else "MISSES"
    print(f"target >= 1M block lookups/s: {verdict}")


if __name__ == "__main__":
    main()
