"""Engine core on a virtual clock: timing, prefix hits, budgets, preemption, priority, pins."""

from __future__ import annotations

import random

import pytest

from agentctl.serving.costmodel import CostModel
from agentctl.serving.engine import EngineConfig, EngineCore, RequestTooLarge, StepResult
from agentctl.serving.hashing import block_hashes_from_tokens
from agentctl.serving.types import AllBlocksCleared, BlockRemoved, BlockStored, RequestSpec

COST = CostModel(time_scale=0.001)


def spec(
    rid: str,
    tokens: int,
    out: int = 1,
    *,
    seed: int = 0,
    block_size: int = 64,
    **kw: object,
) -> RequestSpec:
    """A prompt of `tokens` tokens whose content is fixed by `seed` (same seed: same prefix)."""
    ids = [(seed * 7919 + i) % 50000 for i in range(tokens)]
    hashes = block_hashes_from_tokens(ids, block_size)
    return RequestSpec(rid, hashes, tokens, out, **kw)  # type: ignore[arg-type]


class Driver:
    """The discrete-event loop a simulator runs: step, advance the clock, record."""

    def __init__(self, engine: EngineCore) -> None:
        self.engine = engine
        self.now = 0.0
        self.arrival: dict[str, float] = {}
        self.ttft: dict[str, float] = {}
        self.cached: dict[str, int] = {}
        self.finish: dict[str, float] = {}
        self.tokens: dict[str, int] = {}
        self.steps: list[StepResult] = []
        self.resident: set[int] = set()

    def add(self, s: RequestSpec) -> None:
        self.engine.add_request(s, self.now)
        self.arrival[s.request_id] = self.now

    def step(self) -> StepResult:
        r = self.engine.step(self.now)
        self.now += r.duration_s
        for rid, cached in r.first_tokens:
            self.ttft[rid] = self.now - self.arrival[rid]
            self.cached[rid] = cached
        for rid in r.tokens:
            self.tokens[rid] = self.tokens.get(rid, 0) + 1
        for rid in r.finished:
            self.finish[rid] = self.now
        for ev in r.events:
            if isinstance(ev, BlockStored):
                self.resident.update(ev.block_hashes)
            elif isinstance(ev, BlockRemoved):
                self.resident.difference_update(ev.block_hashes)
            elif isinstance(ev, AllBlocksCleared):
                self.resident.clear()
        self.steps.append(r)
        return r

    def run(self, max_steps: int = 100_000) -> None:
        for _ in range(max_steps):
            if not self.engine.has_work():
                return
            self.step()
        raise AssertionError("engine did not drain")


def test_lone_request_ttft_is_the_prefill_time() -> None:
    d = Driver(EngineCore(EngineConfig(), COST))
    d.add(spec("a", 1000, out=1))
    r = d.step()
    assert r.duration_s == pytest.approx(COST.prefill_ms(1000) / 1000)
    assert r.first_tokens == [("a", 0)] and r.tokens == ["a"] and r.finished == ["a"]
    assert d.ttft["a"] == pytest.approx(COST.prefill_s(1000))
    assert not d.engine.has_work()
    assert d.engine.kv.used_blocks == 0


def test_long_prompt_is_chunked_and_decode_steps_are_timed() -> None:
    eng = EngineCore(EngineConfig(), COST)
    d = Driver(eng)
    d.add(spec("a", 20000, out=3))
    d.run()
    assert [s.prefill_tokens for s in d.steps] == [8192, 8192, 3616, 0, 0]
    assert d.ttft["a"] == pytest.approx(COST.prefill_chunked_s(20000, 8192))
    decode = d.steps[3]
    assert decode.num_decodes == 1 and decode.first_tokens == []
    usage = (-(-20001 // 64)) / eng.config.capacity_blocks  # blocks held during that step
    assert decode.duration_s == pytest.approx(COST.decode_s(usage))
    assert d.tokens == {"a": 3} and d.finish["a"] == pytest.approx(d.now)


def test_second_identical_prompt_hits_its_prefix() -> None:
    eng = EngineCore(EngineConfig(), COST)
    d = Driver(eng)
    d.add(spec("a", 5000, seed=1))
    d.run()
    d.add(spec("b", 5000, seed=1))
    d.run()
    cached = (5000 // 64) * 64
    assert d.cached == {"a": 0, "b": cached}
    assert d.ttft["b"] == pytest.approx(COST.prefill_s(5000 - cached))
    assert d.ttft["b"] < d.ttft["a"] / 5
    assert eng.prefix_cache_queries == 10000 and eng.prefix_cache_hits == cached
    # a prompt that is all full blocks still computes its last token
    d.add(spec("c", 4096, seed=2))
    d.run()
    d.add(spec("c2", 4096, seed=2))
    d.run()
    assert d.cached["c2"] == 4095
    assert d.steps[-1].prefill_tokens == 1
    assert d.resident == eng.kv.resident_hashes()


def test_token_budget_and_max_num_seqs_hold_every_step() -> None:
    rng = random.Random(7)
    cfg = EngineConfig(capacity_blocks=4000, max_num_batched_tokens=2048, max_num_seqs=8)
    eng = EngineCore(cfg, COST)
    d = Driver(eng)
    for i in range(60):
        d.add(spec(f"r{i}", rng.randint(10, 6000), out=rng.randint(1, 40), seed=rng.randint(0, 5)))
    seen_full = False
    while eng.has_work():
        r = d.step()
        assert r.num_scheduled_tokens <= 2048
        assert eng.num_running <= 8
        seen_full = seen_full or eng.num_running == 8
    assert seen_full
    assert len(d.finish) == 60 and eng.kv.used_blocks == 0
    assert d.resident == eng.kv.resident_hashes()


def test_preemption_under_tiny_capacity_finishes_everything_without_leaks() -> None:
    cfg = EngineConfig(block_size=16, capacity_blocks=40, max_num_batched_tokens=256, watermark=0)
    eng = EngineCore(cfg, COST)
    d = Driver(eng)
    outs = {}
    for i in range(12):
        outs[f"r{i}"] = 100 + 20 * i
        d.add(spec(f"r{i}", 150 + 10 * i, out=outs[f"r{i}"], seed=i % 3, block_size=16))
    preempted: list[str] = []
    while eng.has_work():
        r = d.step()
        preempted += r.preempted
        assert eng.kv.resident_blocks <= 40
        eng.kv.check_invariants()
        assert d.resident == eng.kv.resident_hashes()
    assert preempted and eng.num_preemptions == len(preempted)
    assert d.tokens == outs  # recomputation never repeats or loses a token
    assert set(d.ttft) == set(outs)
    assert eng.kv.used_blocks == 0 and eng.kv.num_requests == 0
    assert eng.num_running == eng.num_waiting == 0


def test_preemption_takes_the_most_recently_admitted() -> None:
    cfg = EngineConfig(block_size=16, capacity_blocks=10, max_num_batched_tokens=1000, watermark=0)
    eng = EngineCore(cfg, COST)
    d = Driver(eng)
    d.add(spec("old", 60, out=60, block_size=16))  # 4 blocks, grows to 8
    d.add(spec("new", 60, out=60, seed=1, block_size=16))
    d.step()
    assert eng.num_running == 2
    victims: list[str] = []
    while eng.has_work() and not victims:
        victims = d.step().preempted
    assert victims == ["new"]
    d.run()
    assert d.finish["old"] < d.finish["new"]


def test_priority_admits_higher_first_then_fcfs() -> None:
    eng = EngineCore(EngineConfig(max_num_seqs=1), COST)
    d = Driver(eng)
    d.add(spec("low", 100, seed=1, priority=-1))
    d.add(spec("mid1", 100, seed=2))
    d.add(spec("high", 100, seed=3, priority=5))
    d.add(spec("mid2", 100, seed=4))
    d.run()
    assert sorted(d.finish, key=d.finish.__getitem__) == ["high", "mid1", "mid2", "low"]


def test_speculative_prefill_and_pins() -> None:
    eng = EngineCore(EngineConfig(), COST)
    d = Driver(eng)
    d.add(spec("warm", 3000, out=50, seed=9, speculative_prefill=True, pin_ttl_s=2.0))
    r = d.step()
    assert r.finished == ["warm"] and r.tokens == ["warm"]
    assert eng.kv.pinned_blocks == 3000 // 64
    eng.kv.advance(d.now + 1.999)
    assert eng.kv.pinned_blocks == 3000 // 64
    eng.step(d.now + 2.0)  # an idle step expires pins
    assert eng.kv.pinned_blocks == 0


def test_cancel_and_too_large() -> None:
    eng = EngineCore(EngineConfig(capacity_blocks=100), COST)
    eng.add_request(spec("a", 1000, out=100), 0.0)
    eng.add_request(spec("b", 1000, out=100, seed=1), 0.0)
    eng.add_request(spec("c", 1000, out=100, seed=2), 0.0)
    eng.step(0.0)
    assert eng.num_running == 3
    assert eng.cancel("a") and eng.cancel("b")
    assert not eng.cancel("a")
    eng.add_request(spec("w", 1000, seed=3), 0.0)
    assert eng.num_waiting == 1 and eng.cancel("w") and eng.num_waiting == 0
    assert eng.kv.used_blocks == -(-1001 // 64)
    with pytest.raises(RequestTooLarge):
        eng.add_request(spec("huge", 64 * 100), 0.0)
    with pytest.raises(ValueError):
        eng.add_request(spec("c", 10), 0.0)


def test_without_chunked_prefill_prompts_run_whole() -> None:
    cfg = EngineConfig(max_num_batched_tokens=1000, enable_chunked_prefill=False)
    eng = EngineCore(cfg, COST)
    d = Driver(eng)
    d.add(spec("a", 600))
    d.add(spec("b", 600, seed=1))
    d.add(spec("big", 2500, seed=2))
    d.run()
    assert [s.prefill_tokens for s in d.steps] == [600, 600, 2500]
    assert d.ttft["big"] == pytest.approx(sum(s.duration_s for s in d.steps))


def test_pending_prefill_tokens_and_counters() -> None:
    eng = EngineCore(EngineConfig(max_num_batched_tokens=512), COST)
    eng.add_request(spec("a", 1000, out=5), 0.0)
    eng.add_request(spec("b", 300, out=5, seed=1), 0.0)
    assert eng.pending_prefill_tokens() == 1300
    eng.step(0.0)
    assert eng.pending_prefill_tokens() == 1300 - 512
    assert eng.num_running == 1 and eng.num_waiting == 1 and 0 < eng.kv_usage < 1
