"""The simulated engine's core: vLLM-style continuous batching on a virtual clock.

Pure and synchronous: a driver (the discrete-event simulator, or the HTTP worker's loop) calls
`step(now)`, waits `StepResult.duration_s` of its own clock, applies the result, and calls
`step` again at the end time. Nothing here reads a clock or does I/O.

One step is one forward pass (vLLM v1's unified scheduler, simplified):

1. **Running sequences**, in order (priority, then admission), each get their next tokens within
   the token budget `max_num_batched_tokens`: the next prefill chunk (chunked prefill) or one
   decode token, 1 budget token each. KV blocks are allocated as a sequence's tokens are
   scheduled; a prompt's full blocks are hashed and published when the chunk covering them is
   scheduled (as vLLM does), so a concurrent request can only reuse what has been computed.
2. **Preemption**: when a running sequence needs a block and none is free, the last running
   sequence (lowest priority, then most recently admitted: LIFO, like vLLM and Dynamo's mocker)
   is preempted: its blocks are released (they stay cached) and it goes back to the waiting
   queue with its original place, to be recomputed from scratch (prompt plus the tokens it had
   generated; what is still cached is reused). If the victim would be the sequence itself, pins
   are overridden first, so the first running sequence can always progress.
3. **Admission** (only in steps that preempted nobody): waiting requests, higher priority first,
   then first come first served, while fewer than `max_num_seqs` run, budget is left and the
   first chunk's blocks fit with `watermark * capacity` blocks to spare (ignored when nothing runs,
   so a lone request always starts). Head-of-line blocking is deliberate (vLLM FCFS).
   Cached tokens = `min(matched blocks * block_size, tokens - 1)`: at least one token is always
   computed, to produce logits.

Step duration = `cost.prefill_ms(prefill tokens this step) + (cost.decode_ms(kv usage) if any
sequence decoded)` (scaled by `time_scale`), with kv usage measured after this step's allocation.
A request's first token is emitted at the end of the step that schedules its last prompt token,
so a lone request of P uncached tokens on an idle engine has TTFT = `cost.prefill_ms(P)` if
`P <= max_num_batched_tokens`, else the sum over its chunks (`CostModel.prefill_chunked_s`).
Prefix-cache counters count tokens at a request's first admission (re-admissions after preemption
go to `preempted_prefix_cache_*`, as in recent vLLM).
"""

from __future__ import annotations

import bisect
import heapq
from dataclasses import dataclass, field

from agentctl.serving.costmodel import CostModel
from agentctl.serving.engine.kvcache import KVCache
from agentctl.serving.types import BlockHash, KvEvent, RequestSpec

__all__ = ["EngineConfig", "EngineCore", "RequestTooLarge", "StepResult"]


@dataclass(frozen=True)
class EngineConfig:
    """Engine shape; defaults are Dynamo mocker's (a vLLM-like worker)."""

    block_size: int = 64
    capacity_blocks: int = 16384
    max_num_batched_tokens: int = 8192
    max_num_seqs: int = 256
    enable_chunked_prefill: bool = True
    #: fraction of capacity kept free when admitting a new request
    watermark: float = 0.01
    #: share of capacity `cache_control` pins may hold
    max_pinned_fraction: float = 0.25
    #: record KV events (a simulator that does not feed a router can turn them off)
    record_events: bool = True

    def __post_init__(self) -> None:
        if min(self.block_size, self.capacity_blocks, self.max_num_batched_tokens) <= 0:
            raise ValueError("block_size, capacity_blocks, max_num_batched_tokens must be > 0")
        if self.max_num_seqs <= 0:
            raise ValueError("max_num_seqs must be > 0")
        if not 0.0 <= self.watermark < 1.0:
            raise ValueError("watermark must be in [0, 1)")


class RequestTooLarge(ValueError):
    """The request needs more KV blocks than the whole cache holds: it could never finish."""


@dataclass
class StepResult:
    """What one forward pass did; everything in it happens at `now + duration_s`."""

    duration_s: float = 0.0
    #: (request_id, prompt tokens served from cache at its latest admission) for requests
    #: whose prefill completed this step
    first_tokens: list[tuple[str, int]] = field(default_factory=list)
    #: one entry per generated token (a request's first token included)
    tokens: list[str] = field(default_factory=list)
    finished: list[str] = field(default_factory=list)
    events: list[KvEvent] = field(default_factory=list)
    preempted: list[str] = field(default_factory=list)
    #: uncached tokens prefilled this step (prompt chunks and recomputation)
    prefill_tokens: int = 0
    #: sequences that decoded one token this step
    num_decodes: int = 0

    @property
    def num_scheduled_tokens(self) -> int:
        return self.prefill_tokens + self.num_decodes


class _Seq:
    __slots__ = (
        "admit_no",
        "arrival_no",
        "b_held",
        "cached",
        "generated",
        "h_held",
        "hashes",
        "max_out",
        "n_hashed",
        "num_admissions",
        "num_computed",
        "num_tokens",
        "run_key",
        "spec",
    )

    def __init__(self, spec: RequestSpec, arrival_no: int, block_size: int) -> None:
        self.spec = spec
        self.arrival_no = arrival_no
        # only the prompt's full blocks are ever hashed (generated tokens stay anonymous)
        self.n_hashed = min(len(spec.block_hashes), spec.prompt_tokens // block_size)
        self.hashes: tuple[BlockHash, ...] = spec.block_hashes[: self.n_hashed]
        self.max_out = 1 if spec.speculative_prefill else max(1, spec.max_tokens)
        self.num_tokens = spec.prompt_tokens  # prompt + generated
        self.num_computed = 0
        self.generated = 0
        self.cached = 0
        self.h_held = 0
        self.b_held = 0
        self.admit_no = 0
        self.num_admissions = 0
        self.run_key: tuple[int, int] = (0, 0)


class EngineCore:
    """Continuous-batching engine over a `KVCache`, timed by a `CostModel` (module docstring)."""

    def __init__(self, config: EngineConfig | None = None, cost: CostModel | None = None) -> None:
        self.config = config or EngineConfig()
        self.cost = cost or CostModel()
        cfg = self.config
        self.kv = KVCache(
            cfg.capacity_blocks,
            cfg.block_size,
            max_pinned_fraction=cfg.max_pinned_fraction,
            record_events=cfg.record_events,
        )
        self._watermark_blocks = int(cfg.watermark * cfg.capacity_blocks)
        self._seqs: dict[str, _Seq] = {}
        self._waiting: list[tuple[int, int, str]] = []  # (-priority, arrival_no, id), lazy
        self._waiting_ids: set[str] = set()
        self._running: list[_Seq] = []  # sorted by run_key
        self._arrivals = 0
        self._admissions = 0
        #: prompt tokens looked up at first admission (vllm:prefix_cache_queries)
        self.prefix_cache_queries = 0
        #: of those, tokens served from cache (vllm:prefix_cache_hits)
        self.prefix_cache_hits = 0
        self.preempted_prefix_cache_queries = 0
        self.preempted_prefix_cache_hits = 0
        self.num_preemptions = 0
        self.num_finished = 0
        self.total_prefill_tokens = 0

    # ---- read side ----------------------------------------------------------------------

    @property
    def num_running(self) -> int:
        return len(self._running)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting_ids)

    @property
    def kv_usage(self) -> float:
        return self.kv.usage

    def has_work(self) -> bool:
        return bool(self._running or self._waiting_ids)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._seqs

    def pending_prefill_tokens(self) -> int:
        """Prompt tokens not yet computed, over running and waiting requests (the queue the
        engine reports to a router; waiting requests counted in full, before cache lookup)."""
        total = 0
        for s in self._seqs.values():
            left = s.num_tokens - s.num_computed
            if left > 1 or s.generated == 0:
                total += left
        return total

    # ---- requests -------------------------------------------------------------------------

    def add_request(self, spec: RequestSpec, now: float = 0.0) -> None:
        """Queue a request. Raises `RequestTooLarge` if it could never fit, `ValueError` if its
        id is already in use. `now` advances the cache's clock (pin expiry) only."""
        self.kv.advance(now)  # arrival order, not time, decides FCFS
        if spec.request_id in self._seqs:
            raise ValueError(f"duplicate request id {spec.request_id!r}")
        if spec.prompt_tokens <= 0:
            raise ValueError("prompt_tokens must be > 0")
        bs = self.config.block_size
        seq = _Seq(spec, self._arrivals, bs)
        need = -(-(spec.prompt_tokens + seq.max_out) // bs)
        if need > self.config.capacity_blocks:
            raise RequestTooLarge(
                f"request {spec.request_id!r} needs {need} KV blocks, "
                f"capacity is {self.config.capacity_blocks}"
            )
        self._arrivals += 1
        self._seqs[spec.request_id] = seq
        self._push_waiting(seq)

    def cancel(self, request_id: str, now: float | None = None) -> bool:
        """Drop a request wherever it is; its blocks are released (and stay cached)."""
        seq = self._seqs.pop(request_id, None)
        if seq is None:
            return False
        if request_id in self._waiting_ids:
            self._waiting_ids.discard(request_id)  # heap entry skipped lazily
        else:
            self._running.remove(seq)
            self.kv.release(request_id, now)
        return True

    def reset_prefix_cache(self) -> None:
        """Forget every cached block; `AllBlocksCleared` goes out with the next step."""
        self.kv.clear()

    def cache_snapshot(self) -> tuple[list[BlockHash], list[BlockHash | None]]:
        """The prefix cache's blocks and their parents, parents first (`KVCache.snapshot`)."""
        return self.kv.snapshot()

    def drain_events(self) -> list[KvEvent]:
        """Events produced outside `step` (e.g. by `reset_prefix_cache`), if a driver needs them
        before the next step."""
        return self.kv.drain_events()

    def _push_waiting(self, seq: _Seq) -> None:
        heapq.heappush(self._waiting, (-seq.spec.priority, seq.arrival_no, seq.spec.request_id))
        self._waiting_ids.add(seq.spec.request_id)

    def _peek_waiting(self) -> _Seq | None:
        heap = self._waiting
        while heap:
            _, arrival_no, rid = heap[0]
            if rid in self._waiting_ids and self._seqs[rid].arrival_no == arrival_no:
                return self._seqs[rid]
            heapq.heappop(heap)  # cancelled (or cancelled and re-added under the same id)
        return None

    # ---- the step -------------------------------------------------------------------------

    def _alloc(self, seq: _Seq, target: int, now: float, reserve: int, force: bool) -> bool:
        """Make `seq` hold the blocks for its first `target` tokens (fast path: nothing new)."""
        bs = self.config.block_size
        n_hashed = min(seq.n_hashed, target // bs)
        blocks = -(-target // bs)
        if n_hashed == seq.h_held and blocks == seq.b_held:
            return True
        ok = self.kv.allocate(
            seq.spec.request_id,
            seq.hashes,
            n_hashed,
            blocks,
            now,
            reserve=reserve,
            evict_pinned=force,
        )
        if ok:
            seq.h_held = n_hashed
            seq.b_held = blocks
        return ok

    def _preempt(self, seq: _Seq, now: float, result: StepResult) -> None:
        self._running.remove(seq)
        self.kv.release(seq.spec.request_id, now)
        seq.num_computed = 0
        seq.h_held = seq.b_held = 0
        self.num_preemptions += 1
        result.preempted.append(seq.spec.request_id)
        self._push_waiting(seq)

    def step(self, now: float) -> StepResult:
        """Run one forward pass starting at `now` (see the module docstring)."""
        cfg = self.config
        kv = self.kv
        kv.advance(now)
        result = StepResult()
        budget = cfg.max_num_batched_tokens
        scheduled: list[tuple[_Seq, int]] = []
        prefill_tokens = 0
        decodes = 0

        # 1. running sequences, in order; preempt from the back when blocks run out
        running = self._running
        i = 0
        while i < len(running) and budget > 0:
            seq = running[i]
            left = seq.num_tokens - seq.num_computed
            num_new = min(left, budget)
            if not cfg.enable_chunked_prefill and num_new < left:
                break
            target = seq.num_computed + num_new
            if not self._alloc_running(seq, target, now, result):
                break  # seq itself was the last one and got preempted
            scheduled.append((seq, num_new))
            budget -= num_new
            if left == 1 and seq.generated > 0:
                decodes += 1
            else:
                prefill_tokens += num_new
            i += 1

        # 2. admission, FCFS within priority, only if nobody was preempted
        if not result.preempted:
            bs = cfg.block_size
            while budget > 0 and len(running) < cfg.max_num_seqs:
                head = self._peek_waiting()
                if head is None:
                    break
                seq = head
                matched = kv.match_prefix(seq.hashes)
                cached = min(matched * bs, seq.num_tokens - 1)
                left = seq.num_tokens - cached
                num_new = min(left, budget)
                if (
                    not cfg.enable_chunked_prefill
                    and num_new < left
                    and (scheduled or budget < cfg.max_num_batched_tokens)
                ):
                    break
                if not cfg.enable_chunked_prefill:
                    num_new = left  # a lone over-budget prompt runs whole
                alone = not running
                reserve = 0 if alone else self._watermark_blocks
                if not self._alloc(seq, cached + num_new, now, reserve, alone):
                    break  # head-of-line blocking, as vLLM's FCFS
                heapq.heappop(self._waiting)
                self._waiting_ids.discard(seq.spec.request_id)
                seq.num_computed = seq.cached = cached
                if seq.num_admissions == 0:
                    self.prefix_cache_queries += seq.num_tokens
                    self.prefix_cache_hits += cached
                else:
                    self.preempted_prefix_cache_queries += seq.num_tokens
                    self.preempted_prefix_cache_hits += cached
                seq.num_admissions += 1
                self._admissions += 1
                seq.admit_no = self._admissions
                seq.run_key = (-seq.spec.priority, seq.admit_no)
                bisect.insort(running, seq, key=lambda s: s.run_key)
                scheduled.append((seq, num_new))
                budget -= num_new
                prefill_tokens += num_new

        # 3. time the pass, then apply it at its end
        duration = self.cost.step_s(prefill_tokens, decodes > 0, kv.usage)
        end = now + duration
        result.duration_s = duration
        result.prefill_tokens = prefill_tokens
        result.num_decodes = decodes
        self.total_prefill_tokens += prefill_tokens
        for seq, num_new in scheduled:
            seq.num_computed += num_new
            if seq.num_computed < seq.num_tokens:
                continue  # mid-prefill chunk
            rid = seq.spec.request_id
            seq.generated += 1
            seq.num_tokens += 1
            result.tokens.append(rid)
            if seq.generated == 1:
                result.first_tokens.append((rid, seq.cached))
            if seq.generated >= seq.max_out:
                self._finish(seq, end, result)
        if result.finished:
            gone = set(result.finished)
            self._running = [s for s in running if s.spec.request_id not in gone]
        result.events = kv.drain_events()
        return result

    def _alloc_running(self, seq: _Seq, target: int, now: float, result: StepResult) -> bool:
        """Blocks for a running sequence, preempting from the back (LIFO) until they fit."""
        running = self._running
        while not self._alloc(seq, target, now, 0, False):
            victim = running[-1]
            if victim is seq:
                if self._alloc(seq, target, now, 0, True):  # override pins before starving
                    return True
                self._preempt(seq, now, result)
                return False
            self._preempt(victim, now, result)
        return True

    def _finish(self, seq: _Seq, end: float, result: StepResult) -> None:
        """Pin (cache_control), release, forget; the caller drops it from the running list."""
        rid = seq.spec.request_id
        ttl = seq.spec.pin_ttl_s
        if ttl is not None and ttl > 0:
            self.kv.pin(seq.hashes, end + ttl, end)
        self.kv.release(rid, end)
        del self._seqs[rid]
        self.num_finished += 1
        result.finished.append(rid)
