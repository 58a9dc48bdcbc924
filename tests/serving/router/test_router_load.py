"""Load tracker: request lifecycle, prefill queue timing, engine-report corrections."""

from __future__ import annotations

import pytest

from agentctl.serving.costmodel import CostModel
from agentctl.serving.router.load import LoadTracker, WorkerLoad

COST = CostModel()


def prefill(tokens: int) -> float:
    """The Dynamo mocker polynomial, written out independently of the cost model."""
    return 4.209989e-7 * tokens * tokens + 1.518344e-2 * tokens + 16.50142


def test_lifecycle_route_first_token_finish() -> None:
    lt = LoadTracker(block_size=64)
    lt.add_worker("w", capacity_blocks=100)
    lt.on_route("w", "r1", prompt_tokens=1000, cached_tokens=640, expected_output=100, now=0.0)
    v = lt.view("w", now=0.0)
    assert (v.in_flight, v.active_prefill_tokens, v.prefill_queue) == (1, 360, (360,))
    assert v.kv_usage == pytest.approx(18 / 100)
    assert (v.active_decode_blocks, v.running) == (0, 0)
    assert v.active_blocks == 16  # ceil(1000 / 64) prompt blocks, Dynamo's definition

    lt.on_first_token("r1", now=0.5)
    lt.on_first_token("r1", now=0.6)  # repeated: no double counting
    v = lt.view("w", now=0.5)
    assert (v.in_flight, v.active_prefill_tokens, v.prefill_queue) == (1, 0, ())
    assert v.active_decode_blocks == 18  # ceil((1000 + 100) / 64): output growth included
    assert v.running == 1

    lt.on_finish("r1", now=2.0)
    lt.on_finish("r1", now=2.0)  # repeated: ignored
    lt.on_first_token("unknown", now=2.0)
    assert lt.view("w", now=2.0) == WorkerLoad()
    assert all(n == 0 for n in lt.internal_sizes().values())


def test_finish_before_first_token_releases_the_prefill_charge() -> None:
    lt = LoadTracker()
    lt.on_route("w", "r1", 5000, 0, None, now=0.0)
    lt.on_route("w", "r2", 3000, 1000, None, now=0.1)
    assert lt.view("w").prefill_queue == (5000, 2000)
    lt.on_finish("r1", now=0.2)  # cancelled during prefill
    v = lt.view("w", now=0.2)
    assert (v.in_flight, v.active_prefill_tokens, v.prefill_queue) == (1, 2000, (2000,))
    assert lt.worker_of("r2") == "w" and lt.worker_of("r1") is None


def test_rerouting_a_request_id_moves_its_charge() -> None:
    lt = LoadTracker()
    lt.on_route("a", "r", 1000, 0, None, now=0.0)
    lt.on_route("b", "r", 1000, 0, None, now=0.1)  # retried elsewhere
    assert lt.in_flight("a") == 0 and lt.in_flight("b") == 1


def test_queued_prefill_ms_sums_prefill_in_token_budget_steps() -> None:
    lt = LoadTracker(token_budget=8192)
    lt.on_route("w", "r1", 10_000, 0, None, now=0.0)
    lt.on_route("w", "r2", 9_000, 2_000, None, now=0.0)
    v = lt.view("w", now=0.0)
    # 17,000 queued tokens: two full 8,192-token steps and one of 616
    expected = 2 * prefill(8192) + prefill(616)
    assert v.queued_prefill_ms(COST) == pytest.approx(expected, rel=1e-9)
    # a new request of 500 uncached tokens joins the last step
    assert v.prefill_drain_ms(COST, 500) == pytest.approx(2 * prefill(8192) + prefill(1116))
    assert WorkerLoad().queued_prefill_ms(COST) == 0.0
    slow = CostModel(time_scale=2.0)
    assert v.queued_prefill_ms(slow) == pytest.approx(2 * expected)


def test_the_head_of_the_queue_is_credited_with_its_progress() -> None:
    lt = LoadTracker()
    lt.on_route("w", "r1", 8192, 0, None, now=0.0)
    lt.on_route("w", "r2", 8192, 0, None, now=0.0)
    full = 2 * prefill(8192)
    assert lt.view("w", now=0.0).queued_prefill_ms(COST) == pytest.approx(full)
    v = lt.view("w", now=0.1)  # 100 ms into the head's prefill
    assert v.head_elapsed_ms == pytest.approx(100.0)
    assert v.queued_prefill_ms(COST) == pytest.approx(full - 100.0)
    # overdue head: credited at most its own estimate
    late = lt.view("w", now=5.0)
    assert late.queued_prefill_ms(COST) == pytest.approx(prefill(8192))
    # the next head starts being credited when the previous one leaves the queue
    lt.on_first_token("r1", now=5.0)
    v = lt.view("w", now=5.05)
    assert v.head_elapsed_ms == pytest.approx(50.0)


def test_running_sequences_shrink_the_budget_and_add_a_decode_step() -> None:
    lt = LoadTracker(token_budget=8192)
    for i in range(4):
        lt.on_route("w", f"d{i}", 100, 0, 10, now=0.0)
        lt.on_first_token(f"d{i}", now=0.0)
    lt.on_route("w", "p", 8192, 0, None, now=0.0)
    v = lt.view("w", now=0.0)
    assert v.running == 4
    step = COST.decode_ms(v.kv_usage)
    expected = prefill(8188) + step + prefill(4) + step
    assert v.queued_prefill_ms(COST) == pytest.approx(expected)


def test_engine_reports_sweep_stale_entries_after_30s() -> None:
    lt = LoadTracker(stale_after_s=30.0)
    for i in range(5):
        lt.on_route("w", f"r{i}", 1000, 0, None, now=float(i))
    lt.on_route("w", "young", 1000, 0, None, now=50.0)
    lt.on_engine_report("w", running=0, waiting=0, kv_usage=0.0, now=10.0)
    lt.on_engine_report("w", running=0, waiting=0, kv_usage=0.0, now=35.0)
    assert lt.in_flight("w") == 6  # mismatch not yet 30 s old
    lt.on_engine_report("w", running=1, waiting=0, kv_usage=0.0, now=55.0)
    # the engine holds 1: the 5 old entries go, the young one (not 30 s old) stays
    assert lt.in_flight("w") == 1 and lt.worker_of("young") == "w"
    assert lt.swept == 5
    assert lt.view("w", now=55.0).active_prefill_tokens == 1000


def test_a_mismatch_that_heals_is_not_swept() -> None:
    lt = LoadTracker(stale_after_s=30.0)
    for i in range(3):
        lt.on_route("w", f"r{i}", 1000, 0, None, now=0.0)
    lt.on_engine_report("w", 0, 0, 0.0, now=1.0)  # a report that raced the requests
    lt.on_engine_report("w", 2, 1, 0.1, now=2.0)  # the engine caught up
    lt.on_engine_report("w", 0, 0, 0.0, now=40.0)  # new mismatch: clock starts again
    assert lt.in_flight("w") == 3
    lt.on_engine_report("w", 0, 0, 0.0, now=71.0)
    assert lt.in_flight("w") == 0


def test_sweep_drops_requests_older_than_max_age() -> None:
    lt = LoadTracker(max_age_s=300.0)
    lt.on_route("w", "old", 1000, 0, None, now=0.0)
    lt.on_route("w", "new", 1000, 0, None, now=200.0)
    assert lt.sweep(now=301.0) == 1
    assert lt.worker_of("old") is None and lt.in_flight("w") == 1


def test_engine_report_adds_foreign_queue_and_kv_usage() -> None:
    lt = LoadTracker(block_size=64, report_ttl_s=10.0)
    lt.add_worker("w", capacity_blocks=1000)
    lt.on_route("w", "a", 6400, 0, 0, now=0.0)  # 100 blocks
    lt.on_route("w", "b", 1000, 0, 0, now=0.0)
    assert lt.view("w", now=0.0).kv_usage == pytest.approx((100 + 16) / 1000)
    # another router replica sent 3 more requests the engine queues behind ours
    lt.on_engine_report("w", running=0, waiting=5, kv_usage=0.30, now=1.0)
    lt.on_route("w", "c", 3200, 0, 0, now=2.0)  # 50 blocks routed after the report
    v = lt.view("w", now=2.0)
    assert v.waiting == 5
    # 5 waiting - our 2 queued at report time = 3 foreign, priced at our mean uncached size
    mean = 0.9 * (0.9 * 6400 + 0.1 * 1000) + 0.1 * 3200
    assert v.external_prefill_tokens == int(3 * mean)
    assert v.kv_usage == pytest.approx(0.30 + 50 / 1000)
    # a stale report is ignored
    v = lt.view("w", now=20.0)
    assert (v.waiting, v.external_prefill_tokens) == (0, 0)
    assert v.kv_usage == pytest.approx((100 + 16 + 50) / 1000)


def test_engine_running_count_raises_the_decode_count() -> None:
    lt = LoadTracker()
    lt.on_engine_report("w", running=7, waiting=0, kv_usage=0.5, now=0.0)
    v = lt.view("w", now=1.0)
    assert (v.running, v.kv_usage, v.in_flight) == (7, 0.5, 0)


def test_shared_prompt_blocks_count_once() -> None:
    lt = LoadTracker(block_size=64)
    system = tuple(range(10))
    lt.on_route("w", "a", 20 * 64, 0, 0, now=0.0, block_hashes=(*system, *range(100, 110)))
    lt.on_route("w", "b", 15 * 64, 0, 0, now=0.0, block_hashes=(*system, *range(200, 205)))
    v = lt.view("w")
    assert v.active_blocks == 10 + 10 + 5
    assert lt.shared_active_blocks("w", (*system, 999)) == 10
    assert lt.shared_active_blocks("other", system) == 0
    lt.on_finish("a", now=1.0)
    assert lt.view("w").active_blocks == 15
    lt.on_finish("b", now=1.0)
    assert all(n == 0 for n in lt.internal_sizes().values())


def test_remove_worker_returns_its_requests() -> None:
    lt = LoadTracker()
    lt.on_route("w", "a", 100, 0, 0, now=0.0)
    lt.on_route("w", "b", 100, 0, 0, now=0.0)
    lt.on_route("x", "c", 100, 0, 0, now=0.0)
    assert sorted(lt.remove_worker("w")) == ["a", "b"]
    assert lt.remove_worker("w") == []
    assert lt.workers() == ["x"] and lt.worker_of("a") is None
    lt.on_finish("a", now=1.0)  # a late finish for a removed worker is harmless


def test_block_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        LoadTracker(block_size=0)


def test_requests_the_engine_still_holds_back_are_pending_kv_and_get_no_credit() -> None:
    lt = LoadTracker(block_size=64)
    lt.add_worker("w", capacity_blocks=1000)
    lt.on_route("w", "big", 64_000, 0, 0, now=0.0)  # 1,000 blocks: cannot fit yet
    lt.on_route("w", "small", 640, 0, 0, now=0.0)  # 10 blocks
    lt.on_engine_report("w", running=3, waiting=2, kv_usage=0.6, now=1.0)
    v = lt.view("w", now=5.0)
    # both still waiting for memory: their blocks are still to come, and no prefill progress
    assert v.pending_blocks == 1010
    assert v.head_elapsed_ms == 0.0
    assert v.queued_prefill_ms(COST) > 7 * prefill(8192)
    # the engine admitted the big one: only the small one is held back; the head progresses
    lt.on_engine_report("w", running=4, waiting=1, kv_usage=0.9, now=6.0)
    v = lt.view("w", now=7.0)
    assert v.pending_blocks == 10
    assert v.head_elapsed_ms == pytest.approx(7_000.0)
    assert lt.view("w", now=30.0).pending_blocks == 0  # stale report: no engine view at all
