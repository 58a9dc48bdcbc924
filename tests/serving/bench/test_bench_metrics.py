"""Result arithmetic: nearest-rank percentiles, the summary fields, the oracle cache."""

from __future__ import annotations

import math
import random

import pytest

from agentctl.serving.bench.metrics import (
    OracleCache,
    RequestRecord,
    WorkerTotals,
    imbalance,
    oracle_hit_rate,
    percentile,
    summarize,
)
from agentctl.serving.bench.report import format_table, ratios_vs, to_json


def test_percentile_is_nearest_rank() -> None:
    values = [10.0, 1.0, 9.0, 2.0, 8.0, 3.0, 7.0, 4.0, 6.0, 5.0]
    assert percentile(values, 50) == 5.0  # rank ceil(0.5 * 10) = 5
    assert percentile(values, 90) == 9.0
    assert percentile(values, 91) == 10.0  # rank ceil(9.1) = 10
    assert percentile(values, 99) == 10.0
    assert percentile(values, 100) == 10.0
    assert percentile(values, 0) == 1.0
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0  # an observed value, never interpolated
    assert percentile([1.0, 2.0], 50) == 1.0
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError):
        percentile(values, 101)


def _rec(rid: str, worker: str, arrival: float, first: float, finish: float, prompt: int,
         cached: int, out: int) -> RequestRecord:  # fmt: skip
    return RequestRecord(rid, arrival, prompt, out, worker=worker, cached_tokens=cached,
                         first_token_s=first, finish_s=finish)  # fmt: skip


def test_summarize_fields() -> None:
    recs = [
        _rec("a", "w0", 0.0, 0.1, 1.1, 1000, 0, 11),
        _rec("b", "w1", 1.0, 1.3, 2.3, 1000, 900, 11),
        _rec("c", "w0", 2.0, 2.2, 2.2, 500, 400, 1),
        RequestRecord("d", 2.5, 10**9, 5, rejected=True),
        RequestRecord("e", 3.0, 100, 5, worker="w1"),  # never finished
    ]
    res = summarize("p", recs, workers=["w0", "w1", "w2"], oracle_hit_rate=0.8)
    assert (res.completed, res.rejected) == (3, 1)
    assert res.hit_rate == pytest.approx(1300 / 2500)
    assert res.captured == pytest.approx(0.52 / 0.8)
    assert (res.ttft_ms.p50, res.ttft_ms.p99) == (pytest.approx(200.0), pytest.approx(300.0))
    assert res.ttft_ms.mean == pytest.approx(200.0)
    assert res.itl_ms_p50 == pytest.approx(100.0)  # (1.1 - 0.1) / 10 and (2.3 - 1.3) / 10
    assert res.e2e_ms_p50 == pytest.approx(1100.0)  # sorted 200, 1100, 1300: rank 2
    assert res.span_s == pytest.approx(2.3)
    assert res.throughput_tok_s == pytest.approx(23 / 2.3)
    assert res.prefill_tokens == {"w0": 1100, "w1": 100, "w2": 0}
    assert res.imbalance == pytest.approx(1100 / (1200 / 3))
    # engines' own counters take precedence for hit rate and prefill work
    totals = {
        "w0": WorkerTotals(1500, 400, 1300),
        "w1": WorkerTotals(1000, 900, 100),
        "w2": WorkerTotals(0, 0, 0),
    }
    res2 = summarize("p", recs, workers=["w0", "w1", "w2"], oracle_hit_rate=0.8, totals=totals)
    assert res2.hit_rate == pytest.approx(1300 / 2500)
    assert res2.prefill_tokens == {"w0": 1300, "w1": 100, "w2": 0}
    body = res2.to_json()
    assert body["ttft_ms"] == pytest.approx(
        {"p50": 200.0, "p90": 300.0, "p99": 300.0, "mean": 200.0}
    )
    assert body["itl_ms"] == {"p50": res2.itl_ms_p50} and "records" not in body


def test_imbalance() -> None:
    assert imbalance([1.0, 1.0, 1.0]) == 1.0
    assert imbalance([3.0, 0.0, 0.0]) == 3.0
    assert imbalance([0.0, 0.0]) == 1.0
    assert imbalance([]) == 1.0


def _chain(rng: random.Random, parent_chain: tuple[int, ...], extra: int) -> tuple[int, ...]:
    return parent_chain + tuple(rng.getrandbits(63) for _ in range(extra))


def test_oracle_binary_search_matches_linear_scan() -> None:
    rng = random.Random(5)
    chains: list[tuple[int, ...]] = [()]
    reqs: list[tuple[tuple[int, ...], int]] = []
    for _ in range(300):
        base = rng.choice(chains)
        cut = base[: rng.randint(0, len(base))]
        c = _chain(rng, cut, rng.randint(0, 6))
        chains.append(c)
        reqs.append((c, len(c) * 16 + rng.randint(0, 15) + (0 if c else 1)))
    seen: set[int] = set()
    hit = total = 0
    for hashes, prompt in reqs:
        k = 0
        while k < len(hashes) and hashes[k] in seen:
            k += 1
        hit += min(k * 16, prompt - 1)
        total += prompt
        seen.update(hashes)
    assert oracle_hit_rate(reqs, 16) == pytest.approx(hit / total)
    cache = OracleCache(16, compute_last_token=False)
    assert cache.observe((1, 2), 32) == 0
    assert cache.observe((1, 2), 32) == 32  # full, block-aligned hit: the note's cap
    assert OracleCache(16).observe((), 5) == 0


def test_report_ratios_and_table() -> None:
    recs_rr = [_rec("a", "w0", 0.0, 1.0, 2.0, 100, 0, 2)]
    recs_kv = [_rec("a", "w0", 0.0, 0.25, 1.0, 100, 50, 2)]
    rr = summarize("round-robin", recs_rr, workers=["w0"], oracle_hit_rate=0.5)
    kv = summarize("kv", recs_kv, workers=["w0"], oracle_hit_rate=0.5)
    rat = ratios_vs([rr, kv])
    assert rat["kv"]["ttft_p50"] == pytest.approx(4.0)
    assert rat["round-robin"]["ttft_p50"] == 1.0
    assert math.isnan(rat["kv"]["hit_rate"])  # baseline hit rate 0: no ratio
    table = format_table([rr, kv])
    assert "round-robin" in table and "kv" in table and "4.00" in table
    body = to_json([rr, kv])
    assert body["baseline"] == "round-robin"
    assert ratios_vs([kv]) == {}
