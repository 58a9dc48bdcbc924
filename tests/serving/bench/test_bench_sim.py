"""The discrete-event replay with the real engine, index, load tracker and policies (no mocks)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentctl.serving.bench.metrics import PolicyResult
from agentctl.serving.bench.sim import SimOptions, compare, run_sim
from agentctl.serving.bench.traces import read_mooncake
from agentctl.serving.bench.workload import Workload, load_workload, mooncake_workload
from agentctl.serving.costmodel import CostModel
from agentctl.serving.engine import EngineConfig

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "traces"
WEKA = FIX / "weka_cc_sample6.jsonl.xz"
CONV = FIX / "mooncake_conversation_head1500.jsonl"
POLICIES = ["round-robin", "least-loaded", "session", "dynamo", "sglang", "kv"]
#: far more blocks than any fixture holds: nothing is ever evicted
INFINITE = EngineConfig(capacity_blocks=1 << 22)


@pytest.fixture(scope="module")
def weka() -> Workload:
    # three conversations at a time, pauses compressed: queues form on a three-worker cluster
    return load_workload(WEKA, concurrency=3, think_scale=0.2)


@pytest.fixture(scope="module")
def weka_results(weka: Workload) -> list[PolicyResult]:
    return compare(weka, POLICIES, workers=3, seed=7)


def test_every_policy_completes_the_weka_fixture(weka_results: list[PolicyResult]) -> None:
    by = {r.policy: r for r in weka_results}
    assert list(by) == POLICIES
    oracle = by["round-robin"].oracle_hit_rate
    assert 0.85 < oracle < 0.95
    for r in weka_results:
        assert (r.completed, r.rejected, r.extra["unfinished"]) == (178, 0, 0.0), r.policy
        assert r.oracle_hit_rate == pytest.approx(oracle, abs=1e-3)
        assert r.hit_rate <= r.oracle_hit_rate + 1e-12, r.policy
        assert r.ttft_ms.p50 > 0 and r.ttft_ms.p99 >= r.ttft_ms.p90 >= r.ttft_ms.p50
        assert r.output_tokens == by["round-robin"].output_tokens
        assert sum(r.prefill_tokens.values()) >= r.prompt_tokens - r.cached_tokens
    for name in ("kv", "dynamo"):  # the index saw every event, in order, from the start
        assert (by[name].extra["index_gaps"], by[name].extra["index_resets"]) == (0.0, 0.0)
        assert by[name].measured["index_bytes"] > 0
    assert by["round-robin"].hit_rate < by["kv"].hit_rate
    assert by["round-robin"].hit_rate < by["session"].hit_rate
    assert by["kv"].hit_rate > 0.95 * oracle


def test_same_seed_same_results(weka: Workload, weka_results: list[PolicyResult]) -> None:
    again = compare(weka, ["kv", "round-robin"], workers=3, seed=7)
    by = {r.policy: r for r in weka_results}
    assert again[0] == by["kv"]
    assert again[1] == by["round-robin"]
    assert json.dumps(again[0].to_json(), sort_keys=True, default=str) != ""


def test_one_worker_infinite_cache_measures_the_oracle() -> None:
    wl = load_workload(WEKA)
    r = run_sim(wl, policy_name="round-robin", workers=1, engine_config=INFINITE)
    assert r.completed == 178
    assert r.hit_rate == pytest.approx(r.oracle_hit_rate, abs=1e-12)
    assert r.cached_tokens == round(r.oracle_hit_rate * r.prompt_tokens)
    rows = list(read_mooncake(CONV, limit=600))
    mc = mooncake_workload(rows, rate_scale=0.5)
    r2 = run_sim(mc, policy_name="kv", workers=1, engine_config=INFINITE)
    assert r2.completed == 600
    assert r2.hit_rate == pytest.approx(r2.oracle_hit_rate, abs=1e-12)


def test_closed_loop_timing_on_the_virtual_clock() -> None:
    scale = 0.3
    wl = load_workload(WEKA, limit=3, think_scale=scale)
    r = run_sim(wl, policy_name="kv", workers=2, keep_records=True)
    think = {
        f"{sid}#{i}": req.delay_s
        for sess in wl.sessions
        for sid, reqs in [(sess.session_id, sess.requests)]
        for i, req in enumerate(reqs)
    }
    recs = {rec.request_id: rec for rec in r.records}
    checked = 0
    for rid, delay in think.items():
        sid, i = rid.rsplit("#", 1)
        if int(i) == 0:
            assert recs[rid].arrival_s == delay * scale  # conversations start at 0
            continue
        prev = recs[f"{sid}#{int(i) - 1}"]
        assert prev.finish_s is not None
        assert recs[rid].arrival_s == prev.finish_s + delay * scale
        checked += 1
    assert checked > 40
    for rec in r.records:
        assert rec.first_token_s is not None and rec.finish_s is not None
        assert rec.arrival_s < rec.first_token_s <= rec.finish_s


def test_oversized_requests_are_rejected_and_sessions_go_on() -> None:
    wl = load_workload(WEKA, think_scale=0.0)
    cfg = EngineConfig(capacity_blocks=400)  # 25,600 tokens: the longer prompts cannot fit
    r = run_sim(wl, policy_name="kv", workers=2, engine_config=cfg, keep_records=True)
    assert r.rejected > 0 and r.completed > 0
    assert r.completed + r.rejected == 178
    for rec in r.records:
        assert rec.rejected == (rec.prompt_tokens + rec.output_tokens > 400 * 64)
        if rec.rejected:
            assert "capacity" in rec.reject_reason and rec.worker is None
    assert r.hit_rate <= r.oracle_hit_rate + 1e-12


def test_event_delay_and_stop_time() -> None:
    wl = load_workload(WEKA, limit=2)
    delayed = run_sim(
        wl, policy_name="kv", workers=2, options=SimOptions(kv_event_delay_s=0.5), seed=1
    )
    assert delayed.completed == wl.num_requests()
    cut = run_sim(wl, policy_name="kv", workers=2, options=SimOptions(max_time_s=200.0))
    assert cut.completed < wl.num_requests()
    assert cut.extra["virtual_s"] == 200.0


def test_mooncake_open_loop_load_shows_in_latency() -> None:
    rows = list(read_mooncake(CONV, limit=300))
    slow = mooncake_workload(rows, rate_scale=0.5)
    fast = mooncake_workload(rows, rate_scale=8.0)
    cost = CostModel()
    a = run_sim(slow, policy_name="round-robin", workers=2, cost=cost)
    b = run_sim(fast, policy_name="round-robin", workers=2, cost=cost)
    assert a.completed == b.completed == 300
    assert b.ttft_ms.p90 > a.ttft_ms.p90
    assert b.span_s < a.span_s
