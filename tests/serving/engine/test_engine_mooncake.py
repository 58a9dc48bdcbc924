"""Regression: the engine's cache reproduces hit rates computed directly from a Mooncake trace.

Direct accounting (research note traces-and-benchmarks.md §2.2): a request hits its leading
trace blocks already resident, times 512, capped at its input length, over all input tokens.
The direct LRU touches a request's blocks leaf first (reversed), then trims to capacity, which
is the engine cache's order: blocks are used at release, deepest first, so a parent is always
more recent than its child and plain LRU is already leaf first.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest

from agentctl.serving.costmodel import CostModel
from agentctl.serving.engine import EngineConfig, EngineCore, KVCache
from agentctl.serving.hashing import expand_trace_blocks
from agentctl.serving.types import RequestSpec

TRACE = Path(__file__).resolve().parents[2] / "fixtures/traces/mooncake_conversation_head1500.jsonl"
TB = 512  # Mooncake's block size


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    with TRACE.open() as fh:
        return [json.loads(line) for line in fh]


def direct_hit_rate(rows: list[dict[str, Any]], capacity: int | None) -> float:
    cache: OrderedDict[int, None] = OrderedDict()
    hit = total = 0
    for r in rows:
        ids = r["hash_ids"]
        m = 0
        while m < len(ids) and ids[m] in cache:
            m += 1
        hit += min(m * TB, r["input_length"])
        total += r["input_length"]
        for h in reversed(ids):
            cache[h] = None
            cache.move_to_end(h)
        while capacity is not None and len(cache) > capacity:
            cache.popitem(last=False)
    return hit / total


def kv_hit_rate(rows: list[dict[str, Any]], capacity: int | None, block_size: int) -> float:
    """Drive a KVCache request by request: match, then acquire + release."""
    ratio = TB // block_size
    kv = KVCache(10**9 if capacity is None else capacity * ratio, block_size)
    hit = total = 0
    for i, r in enumerate(rows):
        n = r["input_length"]
        if block_size == TB:  # 1:1 with the trace ids, the partial last id included
            hashes = tuple(r["hash_ids"])
            blocks = len(hashes)
        else:
            hashes = expand_trace_blocks(
                r["hash_ids"], trace_block_size=TB, engine_block_size=block_size, prompt_tokens=n
            )
            blocks = -(-n // block_size)  # the partial tail is an anonymous block
        matched = kv.match_prefix(hashes)
        assert kv.acquire(str(i), hashes, blocks, float(i)) == matched
        kv.release(str(i), float(i))
        hit += min(matched * block_size, n)
        total += n
    kv.check_invariants()
    return hit / total


# capacities in 512-token trace blocks: ~0.3M, 1M and 3M tokens
FINITE = (600, 2000, 6000)


def test_infinite_cache_matches_the_trace_oracle(rows: list[dict[str, Any]]) -> None:
    oracle = direct_hit_rate(rows, None)
    assert 0.25 < oracle < 0.30  # 27.0% on this 1,500-request slice
    assert kv_hit_rate(rows, None, TB) == pytest.approx(oracle, abs=1e-9)
    # 64-token engine blocks: a prompt's last partial engine block (< 64 tokens) never hits,
    # so the engine can only lose a little, never gain
    engine = kv_hit_rate(rows, None, 64)
    assert 0 <= oracle - engine < 1e-3


@pytest.mark.parametrize("capacity", FINITE)
def test_finite_lru_matches_the_trace(rows: list[dict[str, Any]], capacity: int) -> None:
    direct = direct_hit_rate(rows, capacity)
    same_blocks = kv_hit_rate(rows, capacity, TB)
    engine_blocks = kv_hit_rate(rows, capacity, 64)
    print(
        f"cap {capacity * TB:>9} tok: direct {direct:.4%} kv512 {same_blocks:.4%} "
        f"kv64 {engine_blocks:.4%}"
    )
    # identical order, identical capacity: identical hits
    assert same_blocks == pytest.approx(direct, abs=1e-9)
    # 64-token blocks: partial last trace blocks take fewer engine blocks (more room), the
    # partial tail is not hashed (fewer hits), and a trace block can be half evicted
    assert engine_blocks == pytest.approx(direct, abs=0.005)


def _specs(rows: list[dict[str, Any]], max_tokens: int | None) -> list[tuple[float, RequestSpec]]:
    out = []
    for i, r in enumerate(rows):
        hashes = expand_trace_blocks(
            r["hash_ids"],
            trace_block_size=TB,
            engine_block_size=64,
            prompt_tokens=r["input_length"],
        )
        out_len = r["output_length"] if max_tokens is None else max_tokens
        out.append((r["timestamp"] / 1000, RequestSpec(str(i), hashes, r["input_length"], out_len)))
    return out


@pytest.mark.parametrize("capacity", [None, 2000])
def test_engine_counters_match_the_trace(rows: list[dict[str, Any]], capacity: int | None) -> None:
    """EngineCore one request at a time: its vllm:prefix_cache_* counters give the trace's rate.

    Gaps, all small: at least one token is always computed (cap at input - 1), the partial
    tail never hits, and a request's anonymous blocks take room while it runs."""
    blocks = 10**7 if capacity is None else capacity * (TB // 64)
    eng = EngineCore(EngineConfig(capacity_blocks=blocks), CostModel(time_scale=0.001))
    now = 0.0
    for _, s in _specs(rows, max_tokens=1):
        eng.add_request(s, now)
        while eng.has_work():
            now += eng.step(now).duration_s
    rate = eng.prefix_cache_hits / eng.prefix_cache_queries
    assert rate == pytest.approx(direct_hit_rate(rows, capacity), abs=0.005)
    assert eng.kv.used_blocks == 0


def test_engine_replays_1500_requests_quickly(rows: list[dict[str, Any]]) -> None:
    """Performance sanity (printed, not asserted): open-loop replay by timestamp, one worker."""
    specs = _specs(rows, max_tokens=None)
    t0 = time.perf_counter()
    eng = EngineCore(EngineConfig(), CostModel())
    now, j, steps = 0.0, 0, 0
    while j < len(specs) or eng.has_work():
        while j < len(specs) and specs[j][0] <= now:
            eng.add_request(specs[j][1], now)
            j += 1
        if not eng.has_work():
            now = specs[j][0]
            continue
        now += eng.step(now).duration_s
        steps += 1
    wall = time.perf_counter() - t0
    print(
        f"\n1500 Mooncake requests: {steps} steps, {wall:.2f} s wall, {now:.0f} s simulated, "
        f"hit {eng.prefix_cache_hits / eng.prefix_cache_queries:.2%}, "
        f"{eng.num_preemptions} preemptions"
    )
    assert eng.num_finished == len(specs)
    assert eng.kv.used_blocks == 0
