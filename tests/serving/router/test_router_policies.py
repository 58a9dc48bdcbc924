"""Routing policies on hand-built worker states (no I/O, no mocks)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from agentctl.serving.costmodel import CostModel
from agentctl.serving.router.index import BlockIndex
from agentctl.serving.router.load import WorkerLoad
from agentctl.serving.router.policies import (
    DynamoCost,
    KvPolicy,
    NoEligibleWorker,
    SglangCacheAware,
    WorkerState,
    dynamo_logit,
    make_policy,
    policy_names,
    rendezvous_order,
)
from agentctl.serving.types import BlockStored, RequestSpec

COST = CostModel()
BS = 64


def ws(
    wid: str,
    index: int,
    *,
    overlap: int = 0,
    in_flight: int = 0,
    queue: Sequence[int] = (),
    running: int = 0,
    kv: float = 0.0,
    active_blocks: int = 0,
    cached: int = 0,
    healthy: bool = True,
    draining: bool = False,
    shared: int = 0,
    capacity: int = 16384,
) -> WorkerState:
    load = WorkerLoad(
        in_flight=in_flight,
        active_prefill_tokens=sum(queue),
        prefill_queue=tuple(queue),
        running=running,
        kv_usage=kv,
        active_blocks=active_blocks,
    )
    return WorkerState(
        id=wid,
        index=index,
        load=load,
        overlap_blocks=overlap,
        cached_blocks=cached,
        capacity_blocks=capacity,
        block_size=BS,
        healthy=healthy,
        draining=draining,
        active_shared_blocks=shared,
    )


def req(
    blocks: int | Sequence[int],
    *,
    prompt_tokens: int | None = None,
    session: str | None = None,
    priority: int = 0,
    osl: int | None = None,
    max_tokens: int = 256,
    rid: str = "r",
) -> RequestSpec:
    hashes = tuple(range(1, blocks + 1)) if isinstance(blocks, int) else tuple(blocks)
    return RequestSpec(
        request_id=rid,
        block_hashes=hashes,
        prompt_tokens=len(hashes) * BS if prompt_tokens is None else prompt_tokens,
        max_tokens=max_tokens,
        session_id=session,
        priority=priority,
        expected_output=osl,
    )


def kv(**kw: Any) -> KvPolicy:
    return KvPolicy(cost=COST, **kw)


# ---------------------------------------------------------------------------- all policies


@pytest.mark.parametrize("name", policy_names())
def test_unhealthy_or_draining_workers_are_never_chosen(name: str) -> None:
    policy = make_policy(name, cost=COST) if name == "kv" else make_policy(name)
    workers = [
        ws("sick", 0, overlap=50, cached=50, healthy=False),
        ws("leaving", 1, overlap=50, cached=50, draining=True),
        ws("ok", 2, in_flight=30, queue=[50_000]),
    ]
    for i in range(20):
        d = policy.choose(req(50, session=f"s{i % 3}", rid=f"r{i}"), workers, now=float(i))
        assert d.worker == "ok"


@pytest.mark.parametrize("name", policy_names())
def test_no_eligible_worker_is_a_clear_error(name: str) -> None:
    policy = make_policy(name, cost=COST) if name == "kv" else make_policy(name)
    with pytest.raises(NoEligibleWorker, match="no healthy"):
        policy.choose(req(4), [ws("a", 0, healthy=False), ws("b", 1, draining=True)], 0.0)
    with pytest.raises(NoEligibleWorker):
        policy.choose(req(4), [], 0.0)


def test_make_policy_forwards_options_and_rejects_unknown_names() -> None:
    assert policy_names() == ["round-robin", "least-loaded", "session", "dynamo", "sglang", "kv"]
    p = make_policy("sglang", cache_threshold=0.5)
    assert isinstance(p, SglangCacheAware) and p.cache_threshold == 0.5
    assert make_policy("kv").name == "kv"  # default cost model from agentctl.serving.costmodel
    with pytest.raises(ValueError, match="unknown policy 'nope'"):
        make_policy("nope")
    with pytest.raises(TypeError):
        make_policy("round-robin", bogus=1)


# ---------------------------------------------------------------------------- baselines


def test_round_robin_cycles_over_eligible_workers_by_index() -> None:
    p = make_policy("round-robin")
    workers = [ws("c", 2), ws("a", 0), ws("b", 1)]
    assert [p.choose(req(1), workers, 0.0).worker for _ in range(6)] == list("abcabc")


def test_least_loaded_orders_by_in_flight_then_prefill_then_index() -> None:
    p = make_policy("least-loaded")
    workers = [ws("a", 0, in_flight=3), ws("b", 1, in_flight=2, queue=[500]), ws("c", 2)]
    assert p.choose(req(1), workers, 0.0).worker == "c"
    workers[2] = ws("c", 2, in_flight=2, queue=[100])
    assert p.choose(req(1), workers, 0.0).worker == "c"
    workers[1] = ws("b", 1, in_flight=2, queue=[100])
    assert p.choose(req(1), workers, 0.0).worker == "b"


def test_session_policy_is_consistent_hashing_with_round_robin_fallback() -> None:
    workers = [ws(f"w{i}", i) for i in range(8)]
    first = {
        f"s{i}": make_policy("session").choose(req(1, session=f"s{i}"), workers, 0.0).worker
        for i in range(200)
    }
    again = make_policy("session")  # a fresh instance (another replica) agrees
    for sid, w in first.items():
        # load does not matter to the naive baseline
        loaded = [ws(x.id, x.index, in_flight=100 if x.id == w else 0) for x in workers]
        assert again.choose(req(1, session=sid), loaded, 1.0).worker == w
    assert len(set(first.values())) == 8
    # removing w3 moves only the sessions w3 had
    without = [w for w in workers if w.id != "w3"]
    for sid, w in first.items():
        moved = again.choose(req(1, session=sid), without, 2.0).worker
        assert moved == w if w != "w3" else moved != "w3"
    p = make_policy("session")
    assert [p.choose(req(1), workers[:3], 0.0).worker for _ in range(4)] == ["w0", "w1", "w2", "w0"]


# ---------------------------------------------------------------------------- dynamo


def test_dynamo_logit_reproduces_the_documented_example() -> None:
    # router-design.md: 10-block prompt; W1 overlap 2 / decode 10 -> 18, W2 5/5 -> 10 (chosen),
    # W3 8/9 -> 11
    def logit(overlap: int, decode: int) -> float:
        return dynamo_logit(
            prompt_tokens=640,
            block_size=64,
            active_prefill_tokens=0,
            overlap_blocks=overlap,
            decode_blocks=decode,
        )

    assert (logit(2, 10), logit(5, 5), logit(8, 9)) == (18.0, 10.0, 11.0)
    # the knobs: credit scales the overlap, prefill_load_scale the prefill term
    assert dynamo_logit(
        prompt_tokens=640,
        block_size=64,
        active_prefill_tokens=640,
        overlap_blocks=8,
        decode_blocks=0,
        overlap_score_credit=0.5,
        prefill_load_scale=2.0,
    ) == 2.0 * (20 - 4)
    assert logit(12, 0) == 0.0  # prefill term clamped at 0


def test_dynamo_policy_chooses_the_documented_winner() -> None:
    # the example's decode loads, carried as active blocks (the request adds its 10 to each)
    workers = [
        ws("W1", 0, overlap=2, active_blocks=10),
        ws("W2", 1, overlap=5, active_blocks=5),
        ws("W3", 2, overlap=8, active_blocks=9),
    ]
    d = DynamoCost().choose(req(10), workers, 0.0)
    assert d.worker == "W2"
    assert d.costs == {"W1": 28.0, "W2": 20.0, "W3": 21.0}
    # blocks already held by in-flight requests there count once (Dynamo's dedup)
    workers[0] = ws("W1", 0, overlap=2, active_blocks=10, shared=10)
    assert DynamoCost().choose(req(10), workers, 0.0).costs["W1"] == 18.0
    # active prefill work is charged in blocks: 640 tokens = 10 blocks
    d = DynamoCost().choose(req(10), [ws("a", 0, queue=[640]), ws("b", 1)], 0.0)
    assert d.costs == {"a": 30.0, "b": 20.0} and d.worker == "b"


def test_dynamo_ties_go_to_the_smallest_index() -> None:
    workers = [ws("z", 5, overlap=3), ws("y", 2, overlap=3), ws("x", 9, overlap=3)]
    assert DynamoCost().choose(req(10), workers, 0.0).worker == "y"


def test_dynamo_temperature_samples_deterministically_for_a_seed() -> None:
    workers = [ws(f"w{i}", i, overlap=i) for i in range(4)]

    def run(seed: int) -> list[str]:
        p = DynamoCost(temperature=0.5, seed=seed)
        return [p.choose(req(10), workers, 0.0).worker for _ in range(40)]

    assert run(1) == run(1)
    picks = run(1)
    assert len(set(picks)) > 1 and picks.count("w3") > picks.count("w0")


# ---------------------------------------------------------------------------- sglang


def test_sglang_routes_by_its_own_history_not_the_engine_index() -> None:
    p = SglangCacheAware()
    workers = [ws("a", 0, in_flight=2), ws("b", 1, in_flight=1), ws("c", 2, in_flight=3)]
    d = p.choose(req(20), workers, 0.0)  # nothing matched: least loaded
    assert d.worker == "b" and "least loaded" in d.reason
    # next turn: 20 of 30 blocks match b's history (0.67 > 0.3). The engine index claims `c`
    # holds everything; SGLang never sees that.
    workers = [ws("a", 0), ws("b", 1, in_flight=5), ws("c", 2, overlap=30)]
    d = p.choose(req(30), workers, 1.0)
    assert d.worker == "b" and "longest match" in d.reason
    assert d.costs == {"a": 0.0, "b": 20.0, "c": 0.0}
    assert p.tree_blocks("b") == 30 and p.tree_blocks("a") == 0


def test_sglang_match_rate_must_exceed_the_threshold() -> None:
    p = SglangCacheAware()
    workers = [ws("a", 0, in_flight=1), ws("b", 1)]
    p.choose(req(3), [ws("a", 0), ws("b", 1, in_flight=1)], 0.0)  # a's tree: blocks 1-3
    assert p.choose(req(10), workers, 1.0).worker == "b"  # 3/10 = 0.3, not > 0.3
    assert p.choose(req(9), workers, 2.0).worker == "b"  # b now holds 1..9 too (its history)
    q = SglangCacheAware()
    q.choose(req(3), [ws("a", 0), ws("b", 1, in_flight=1)], 0.0)
    assert q.choose(req(9), workers, 1.0).worker == "a"  # 3/9 > 0.3


def test_sglang_switches_to_shortest_queue_when_imbalanced() -> None:
    p = SglangCacheAware()
    p.choose(req(10), [ws("a", 0), ws("b", 1, in_flight=1)], 0.0)  # a's tree holds the prompt

    def pick(load_a: int, load_b: int) -> str:
        workers = [ws("a", 0, in_flight=load_a), ws("b", 1, in_flight=load_b)]
        return p.choose(req(10), workers, 1.0).worker

    assert pick(100, 10) == "b"  # 90 > 64 and 100 > 1.5 * 10: imbalanced
    p.forget_worker("b")  # b just got the prompt inserted too: reset it
    assert pick(70, 10) == "a"  # 60 <= 64: balanced, longest match
    assert pick(300, 230) == "a"  # 70 > 64 but 300 <= 1.5 * 230: balanced
    assert pick(300, 100) == "b"


def test_sglang_ties_go_to_the_most_recent_inserter_and_trees_are_capped() -> None:
    p = SglangCacheAware(max_tree_size_chars=4 * 64 * 12)  # 12 blocks per worker
    p.choose(req(10), [ws("a", 0), ws("b", 1, in_flight=1)], 0.0)
    p.choose(req(10), [ws("a", 0, in_flight=100), ws("b", 1)], 1.0)  # imbalanced: b
    workers = [ws("a", 0), ws("b", 1)]
    assert p.choose(req(10), workers, 2.0).worker == "b"
    p.choose(req(range(100, 110)), [ws("a", 0, in_flight=100), ws("b", 1)], 3.0)
    assert p.tree_blocks("b") == 12
    p.forget_worker("b")
    assert p.tree_blocks("b") == 0


# ---------------------------------------------------------------------------- kv


def test_kv_prefers_the_cache_holder_when_it_is_lightly_loaded() -> None:
    workers = [ws("cold", 0), ws("warm", 1, overlap=900, in_flight=2, queue=[2000])]
    d = kv().choose(req(1000), workers, 0.0)
    assert d.worker == "warm"
    t = d.terms
    assert t["uncached_tokens"] == 100 * BS
    # 2,000 queued + 6,400 own tokens: one full 8,192-token step and one of 208
    assert t["ttft_ms"] == pytest.approx(COST.prefill_ms(8192) + COST.prefill_ms(208))
    assert d.costs["cold"] > d.costs["warm"]


def test_kv_moves_away_when_the_holders_queue_makes_ttft_worse() -> None:
    cold_ttft = 7 * COST.prefill_ms(8192) + COST.prefill_ms(64000 - 7 * 8192)

    def pick(queued: int) -> str:
        workers = [ws("cold", 0), ws("warm", 1, overlap=900, queue=[queued])]
        return kv().choose(req(1000), workers, 0.0).worker

    assert pick(20_000) == "warm"
    assert pick(100_000) == "cold"
    # the switch happens where the predicted TTFTs cross
    queue_ms = WorkerLoad(active_prefill_tokens=60_000, prefill_queue=(60_000,)).prefill_drain_ms(
        COST, 6400
    )
    assert (queue_ms < cold_ttft) == (pick(60_000) == "warm")


def test_kv_charges_decode_interference_and_overload() -> None:
    p = kv()
    busy = ws("busy", 0, running=100, kv=0.5)
    idle = ws("idle", 1, kv=0.5)
    d = p.choose(req(50, osl=500), [busy, idle], 0.0)
    assert d.worker == "idle"
    busy_terms = p.terms(req(50, osl=500), busy)
    slowdown = COST.decode_ms(busy_terms["kv_after"]) - COST.decode_ms(0.5)
    assert busy_terms["decode_ms"] == pytest.approx(slowdown * 100 * 256 * 0.02)  # max_tokens
    assert busy_terms["stall_ms"] == pytest.approx(busy_terms["prefill_ms"] * 100 * 0.02)
    assert kv(decode_weight=0.0).terms(req(50, osl=500), busy)["decode_ms"] == 0.0
    # a full worker would have to preempt: the holder loses to an empty one
    full = ws("full", 0, overlap=50, kv=0.97)
    empty = ws("empty", 1)
    d = p.choose(req(50), [full, empty], 0.0)
    assert d.worker == "empty"
    assert p.terms(req(50), full)["overload_ms"] > 1000.0


def test_kv_avoids_a_holder_whose_cache_cannot_take_the_request() -> None:
    # 3,000-block prompt cached on `holder`, whose KV is 82% referenced: admission would have
    # to wait for running requests to finish (no fit), which costs more than recomputing
    p = kv()
    holder = WorkerState(
        id="holder",
        index=0,
        load=WorkerLoad(running=2, kv_usage=0.82),
        overlap_blocks=2990,
        capacity_blocks=16384,
    )
    d = p.choose(req(3000), [holder, ws("empty", 1)], 0.0)
    assert d.worker == "empty"
    t = p.terms(req(3000), holder)
    assert t["kv_after"] > 1.0 and t["overload_ms"] > p.no_fit_ms
    # blocks of requests the engine still holds back count as taken
    pending = WorkerLoad(kv_usage=0.5, pending_blocks=8192)
    t = p.terms(req(10), WorkerState(id="p", index=0, load=pending))
    assert t["kv_after"] == pytest.approx(0.5 + 0.5 + 14 / 16384)
    assert t["overload_ms"] > 0.0


def test_kv_keeps_a_long_prefix_on_a_busy_holder_rather_than_stall_another_workers_decodes() -> (
    None
):
    # 50k-token prompt cached on `warm` (30 decoding); `other` has 10 decoding and no cache:
    # the miss would stall other's decoders for its whole prefill, and pay that prefill
    warm = ws("warm", 0, overlap=780, running=30, kv=0.5)
    other = ws("other", 1, running=10, kv=0.5)
    p = kv()
    d = p.choose(req(782), [warm, other], 0.0)
    assert d.worker == "warm"
    t = p.terms(req(782), other)
    assert t["stall_ms"] > t["decode_ms"] > 0.0
    # even 60 decoding sequences do not outweigh recomputing 50k tokens on an idle worker
    hot = ws("warm", 0, overlap=780, running=60, kv=0.6)
    assert p.choose(req(782), [hot, ws("idle", 1)], 0.0).worker == "warm"
    # a heavy decode weight would throw the prefix away (as Dynamo's block cost does)
    assert kv(decode_weight=0.1).choose(req(782), [hot, ws("idle", 1)], 0.0).worker == "idle"
    dyn = DynamoCost().choose(
        req(782), [ws("warm", 0, overlap=780, active_blocks=9000), ws("idle", 1)], 0.0
    )
    assert dyn.worker == "idle"


def test_kv_priority_trades_cache_for_an_idle_worker() -> None:
    # warm: cache hit behind a ~0.34 s queue; idle: no cache, ~0.66 s of prefill
    workers = [ws("idle", 0), ws("warm", 1, overlap=490, queue=[16384])]
    r = req(500)
    costs = kv().choose(r, workers, 0.0).costs
    assert costs["warm"] < costs["idle"]
    assert kv().choose(req(500, priority=4), workers, 0.0).worker == "idle"
    assert kv().choose(req(500, priority=-4), workers, 0.0).worker == "warm"


def test_kv_session_affinity_is_a_soft_bonus_with_an_idle_ttl() -> None:
    p = kv(session_ttl_s=300.0)
    r = req(10, session="s")
    p.choose(r, [ws("a", 0, overlap=10, in_flight=1, queue=[5000]), ws("b", 1, overlap=10)], 0.0)
    same = [ws("a", 0, overlap=10), ws("b", 1, overlap=10)]
    d = p.choose(r, same, 10.0)
    assert d.worker == "b" and d.terms["session_bonus_ms"] == 50.0
    # soft: a real difference in predicted TTFT still wins
    d = p.choose(r, [ws("a", 0, overlap=10), ws("b", 1, overlap=10, queue=[20_000])], 20.0)
    assert d.worker == "a"
    assert p.choose(r, same, 21.0).worker == "a"  # affinity followed the last decision
    assert p.choose(r, same, 400.0).worker == "a"  # expired: plain tie-break (index)
    p.forget_worker("a")
    assert p.choose(req(10), same, 401.0).worker == "a"


def test_kv_ties_go_to_fewer_cached_blocks_then_lowest_index() -> None:
    workers = [ws("a", 0, overlap=10, cached=500), ws("b", 1, overlap=10, cached=100)]
    assert kv().choose(req(10), workers, 0.0).worker == "b"
    workers = [ws("a", 3, overlap=10), ws("b", 1, overlap=10)]
    assert kv().choose(req(10), workers, 0.0).worker == "b"


def test_kv_cold_prefixes_follow_rendezvous_hashing_across_replicas() -> None:
    workers = [ws(f"w{i}", i) for i in range(8)]
    owners = {}
    for first in range(500, 900):
        r = req([first, 7, 8, 9])
        d = kv().choose(r, workers, 0.0)  # a fresh instance each time: another replica
        assert d.worker == rendezvous_order(first, workers)[0].id
        assert "rendezvous" in d.reason
        owners[first] = d.worker
    assert len(set(owners.values())) == 8
    # removing a worker remaps only the prefixes it owned
    without = [w for w in workers if w.id != "w3"]
    p = kv()
    for first, owner in owners.items():
        moved = p.choose(req([first, 7, 8, 9]), without, 1.0).worker
        assert moved == owner if owner != "w3" else moved != "w3"


def test_kv_cold_rendezvous_is_bounded_by_load() -> None:
    workers = [ws(f"w{i}", i) for i in range(4)]
    r = req([4242, 1, 2])
    order = [w.id for w in rendezvous_order(4242, workers)]
    busy = [ws(w.id, w.index, queue=[50_000] if w.id == order[0] else []) for w in workers]
    assert kv().choose(r, busy, 0.0).worker == order[1]
    slight = [ws(w.id, w.index, queue=[100] if w.id == order[0] else []) for w in workers]
    assert kv().choose(r, slight, 0.0).worker == order[0]  # within the margin


def test_kv_shared_system_prompt_keys_rendezvous_on_the_first_private_block() -> None:
    workers = [ws(f"w{i}", i, overlap=5) for i in range(8)]  # system prompt cached everywhere
    system = [11, 12, 13, 14, 15]
    picks = {kv().choose(req([*system, c, c + 1]), workers, 0.0).worker for c in range(0, 400, 2)}
    assert len(picks) == 8  # conversations spread
    r = req([*system, 1000, 1001])
    assert kv().choose(r, workers, 0.0).worker == rendezvous_order(1000, workers)[0].id


def test_kv_next_turn_lands_where_the_first_did_on_any_replica() -> None:
    idx = BlockIndex()
    names = [f"w{i}" for i in range(4)]
    for n in names:
        idx.add_worker(n, 16384)

    def states(hashes: tuple[int, ...], now: float) -> list[WorkerState]:
        ov = idx.overlaps(hashes, now)
        return [
            ws(n, i, overlap=ov.get(n, 0), cached=idx.cached_blocks(n)) for i, n in enumerate(names)
        ]

    turn1 = tuple(range(100, 140))
    first = kv().choose(req(turn1), states(turn1, 0.0), 0.0).worker
    idx.record_route(first, turn1, 0.0)
    idx.apply(first, 0, BlockStored(turn1, None), 1.0)
    turn2 = (*turn1, *range(200, 230))
    second = kv(seed=99).choose(req(turn2), states(turn2, 30.0), 30.0)
    assert second.worker == first and second.terms["overlap_blocks"] == 40


def test_kv_sampling_is_deterministic_for_a_seed() -> None:
    workers = [ws(f"w{i}", i, overlap=10 * i) for i in range(6)]

    def run(**kw: Any) -> list[str]:
        p = kv(**kw)
        return [p.choose(req(60), workers, float(t)).worker for t in range(50)]

    assert run(power_k=2, seed=7) == run(power_k=2, seed=7)
    assert len(set(run(power_k=2, seed=7))) > 1
    assert run(temperature=0.3, seed=3) == run(temperature=0.3, seed=3)
    assert set(run()) == {"w5"}
