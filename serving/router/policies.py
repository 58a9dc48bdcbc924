"""Routing policies: pure functions of a request and worker snapshots, selectable by name.

Every policy implements `choose(req, workers, now) -> Decision`. `workers` are `WorkerState`
snapshots the caller builds from the block index (overlap, tree size) and the load tracker;
policies never do I/O, never read clocks and never mutate their inputs. Unhealthy or draining
workers are never chosen; with none left, `NoEligibleWorker` is raised. Per-policy state (a
round-robin counter, a seeded RNG, bounded session and prefix maps) is small and deterministic.

`make_policy(name, **options)` builds one: `round-robin`, `least-loaded`, `session`, `dynamo`,
`sglang`, `kv`.
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from hashlib import blake2b
from typing import Any, ClassVar

from agentctl.serving.router.index import BlockIndex
from agentctl.serving.router.load import (
    DEFAULT_EXPECTED_OUTPUT,
    CostModelLike,
    WorkerLoad,
    chunked_prefill_ms,
)
from agentctl.serving.types import RequestSpec


class NoEligibleWorker(RuntimeError):
    """No healthy, non-draining worker to route to."""


@dataclass(frozen=True)
class WorkerState:
    """What a policy may know about one worker at decision time."""

    id: str
    #: stable position (the index's slot): the final tie-break, lowest first
    index: int
    load: WorkerLoad = field(default_factory=WorkerLoad)
    #: leading blocks of this request's prompt resident on the worker (block index)
    overlap_blocks: int = 0
    #: blocks the index believes the worker holds (Dynamo's tree-size tie-break)
    cached_blocks: int = 0
    capacity_blocks: int = 16384
    block_size: int = 64
    healthy: bool = True
    draining: bool = False
    #: blocks of this prompt already held by the worker's in-flight requests (Dynamo dedup)
    active_shared_blocks: int = 0

    @property
    def eligible(self) -> bool:
        return self.healthy and not self.draining


@dataclass(frozen=True)
class Decision:
    """The chosen worker, why, and the per-worker figures the policy compared.

    `costs` is policy-specific (lower is better except where the reason says otherwise);
    `terms` breaks the chosen worker's figure down, for metrics and logs.
    """

    worker: str
    reason: str
    costs: dict[str, float] = field(default_factory=dict)
    terms: dict[str, float] = field(default_factory=dict)


class Policy(ABC):
    """A routing policy; see the module docstring."""

    name: ClassVar[str]

    @abstractmethod
    def choose(self, req: RequestSpec, workers: Sequence[WorkerState], now: float) -> Decision:
        """Pick a worker for `req`; raises `NoEligibleWorker` if none may take it."""

    def forget_worker(self, worker: str) -> None:  # noqa: B027 - optional hook
        """Drop any state about `worker` (it was removed)."""


def eligible_workers(workers: Sequence[WorkerState]) -> list[WorkerState]:
    """Healthy, non-draining workers by index; raises `NoEligibleWorker` if there are none."""
    out = sorted((w for w in workers if w.eligible), key=lambda w: w.index)
    if not out:
        raise NoEligibleWorker(f"no healthy, non-draining worker among {len(workers)} registered")
    return out


def rendezvous_score(key: int | str, worker: str) -> int:
    """Highest-random-weight score of `worker` for `key`, stable across processes (BLAKE2b)."""
    data = f"{key}\x00{worker}".encode()
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "little")


def rendezvous_order(key: int | str, workers: Sequence[WorkerState]) -> list[WorkerState]:
    """`workers` by decreasing rendezvous score for `key` (ties by index).

    Removing a worker only remaps the keys it ranked first for; every replica computes the
    same order without talking to the others.
    """
    return sorted(workers, key=lambda w: (-rendezvous_score(key, w.id), w.index))


# ---------------------------------------------------------------------------- baselines


class RoundRobin(Policy):
    """Each eligible worker in turn, by index: the baseline every target is measured against."""

    name = "round-robin"

    def __init__(self) -> None:
        self._next = 0

    def choose(self, req: RequestSpec, workers: Sequence[WorkerState], now: float) -> Decision:
        el = eligible_workers(workers)
        w = el[self._next % len(el)]
        self._next += 1
        return Decision(w.id, "round-robin")


class LeastLoaded(Policy):
    """Fewest in-flight requests, then fewest active prefill tokens, then lowest index."""

    name = "least-loaded"

    def choose(self, req: RequestSpec, workers: Sequence[WorkerState], now: float) -> Decision:
        el = eligible_workers(workers)
        w = min(el, key=lambda w: (w.load.in_flight, w.load.active_prefill_tokens, w.index))
        return Decision(w.id, "least-loaded", {x.id: float(x.load.in_flight) for x in el})


class SessionAffinity(Policy):
    """Consistent (rendezvous) hashing of `session_id` over the eligible workers.

    The naive affinity baseline: every turn of a session lands on one worker whatever its
    load. Requests without a session go round-robin.
    """

    name = "session"

    def __init__(self) -> None:
        self._fallback = RoundRobin()

    def choose(self, req: RequestSpec, workers: Sequence[WorkerState], now: float) -> Decision:
        el = eligible_workers(workers)
        if req.session_id is None:
            d = self._fallback.choose(req, el, now)
            return Decision(d.worker, "no session: round-robin")
        w = rendezvous_order(req.session_id, el)[0]
        return Decision(w.id, "session rendezvous")


# ---------------------------------------------------------------------------- Dynamo


def dynamo_logit(
    *,
    prompt_tokens: int,
    block_size: int,
    active_prefill_tokens: int,
    overlap_blocks: float,
    decode_blocks: float,
    overlap_score_credit: float = 1.0,
    prefill_load_scale: float = 1.0,
) -> float:
    """Dynamo's default worker cost (lowest wins).

    `prefill_load_scale * max((active_prefill_tokens + isl) / block_size
    - overlap_score_credit * overlap_blocks, 0) + decode_blocks`, where `decode_blocks` is the
    worker's active blocks plus the request's blocks not already active there
    (ai-dynamo/dynamo `lib/kv-router/src/scheduling/selector.rs` `worker_logit`,
    `docs/design-docs/router-design.md`).
    """
    raw_prefill_blocks = (active_prefill_tokens + prompt_tokens) / block_size
    adjusted = max(raw_prefill_blocks - overlap_score_credit * overlap_blocks, 0.0)
    return prefill_load_scale * adjusted + decode_blocks


def softmax_pick(costs: Sequence[float], temperature: float, sample: float) -> int:
    """Dynamo's `softmax_sample`: p_i ~ exp(-(c_i - c_min) / ((c_max - c_min) * T)),
    uniform when all costs are equal; `sample` is a uniform draw in [0, 1)."""
    lo, hi = min(costs), max(costs)
    if hi == lo:
        return min(int(sample * len(costs)), len(costs) - 1)
    weights = [math.exp(-(c - lo) / ((hi - lo) * temperature)) for c in costs]
    target = sample * sum(weights)
    acc = 0.0
    for i, wgt in enumerate(weights):
        acc += wgt
        if target < acc:
            return i
    return len(costs) - 1


class DynamoCost(Policy):
    """A faithful re-implementation of Dynamo's default KV router cost (see `dynamo_logit`).

    Defaults as in Dynamo's `KvRouterConfig`: overlap_score_credit 1.0, prefill_load_scale 1.0,
    router_temperature 0 (argmin). Ties go to the smallest index, as the issue specifies
    (Dynamo itself now breaks them at random). With a temperature, Dynamo's softmax over
    normalised costs, from a seeded RNG.
    """

    name = "dynamo"

    def __init__(
        self,
        *,
        overlap_score_credit: float = 1.0,
        prefill_load_scale: float = 1.0,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.overlap_score_credit = overlap_score_credit
        self.prefill_load_scale = prefill_load_scale
        self.temperature = temperature
        self._rng = random.Random(seed)

    def choose(self, req: RequestSpec, workers: Sequence[WorkerState], now: float) -> Decision:
        el = eligible_workers(workers)
        costs: dict[str, float] = {}
        for w in el:
            request_blocks = len(req.block_hashes) or req.prompt_tokens // w.block_size
            additional = max(0, request_blocks - w.active_shared_blocks)
            costs[w.id] = dynamo_logit(
                prompt_tokens=req.prompt_tokens,
                block_size=w.block_size,
                active_prefill_tokens=w.load.active_prefill_tokens,
                overlap_blocks=w.overlap_blocks,
                decode_blocks=w.load.active_blocks + additional,
                overlap_score_credit=self.overlap_score_credit,
                prefill_load_scale=self.prefill_load_scale,
            )
        if self.temperature > 0.0:
            i = softmax_pick([costs[w.id] for w in el], self.temperature, self._rng.random())
            return Decision(el[i].id, "dynamo softmax", costs)
        best = min(el, key=lambda w: (costs[w.id], w.index))
        return Decision(best.id, "dynamo min cost", costs)


# ---------------------------------------------------------------------------- SGLang


class SglangCacheAware(Policy):
    """SGLang's `cache_aware` policy (sgl-model-gateway `src/policies/cache_aware.rs`).

    Load = router in-flight requests. If `(max - min) > balance_abs_threshold` and
    `max > balance_rel_threshold * min`, the shortest queue wins. Otherwise the worker with the
    longest prefix match wins when `matched / total > cache_threshold`, else the least loaded.
    The chosen worker's prompt is inserted into the tree either way.

    The tree is SGLang's: approximate, fed only by this policy's own decisions, never by
    engine events, so it is a private `BlockIndex` of silent workers rather than the router's
    confirmed index. Differences: it matches 64-token blocks rather than characters; ties
    among longest matches go to the most recent inserter (SGLang's `last_tenant`), then the
    lowest index; the per-worker LRU cap (`max_tree_size` 2**26 chars / 4 chars per token, in
    blocks) is enforced on insert rather than by a 120 s background sweep. Defaults are the
    CLI's (router_args.py): cache_threshold 0.3, balance_abs 64, balance_rel 1.5.
    """

    name = "sglang"

    def __init__(
        self,
        *,
        cache_threshold: float = 0.3,
        balance_abs_threshold: int = 64,
        balance_rel_threshold: float = 1.5,
        max_tree_size_chars: int = 2**26,
        chars_per_token: int = 4,
    ) -> None:
        self.cache_threshold = cache_threshold
        self.balance_abs_threshold = balance_abs_threshold
        self.balance_rel_threshold = balance_rel_threshold
        self.max_tree_size_chars = max_tree_size_chars
        self.chars_per_token = chars_per_token
        self._tree = BlockIndex(approximate_ttl_s=math.inf)

    def forget_worker(self, worker: str) -> None:
        if worker in self._tree.workers():
            self._tree.remove_worker(worker)

    def tree_blocks(self, worker: str) -> int:
        """Blocks this policy's private tree attributes to `worker`."""
        return self._tree.cached_blocks(worker) if worker in self._tree.workers() else 0

    def choose(self, req: RequestSpec, workers: Sequence[WorkerState], now: float) -> Decision:
        el = eligible_workers(workers)
        known = set(self._tree.workers())
        for w in el:
            if w.id not in known:
                cap = max(1, self.max_tree_size_chars // (self.chars_per_token * w.block_size))
                self._tree.add_worker(w.id, cap, publishes_events=False)
        loads = {w.id: float(w.load.in_flight) for w in el}
        lo, hi = min(loads.values()), max(loads.values())
        shortest = min(el, key=lambda w: (w.load.in_flight, w.index))
        if hi - lo > self.balance_abs_threshold and hi > self.balance_rel_threshold * lo:
            chosen, reason, costs = shortest, "imbalanced: shortest queue", loads
        else:
            hashes = req.block_hashes
            matches = self._tree.overlaps(hashes, now)
            depth = max((matches.get(w.id, 0) for w in el), default=0)
            rate = depth / len(hashes) if hashes else 0.0
            if depth > 0 and rate > self.cache_threshold:
                tied = [w for w in el if matches.get(w.id, 0) == depth]
                last = hashes[depth - 1]
                chosen = min(
                    tied, key=lambda w: (-(self._tree.last_touched(w.id, last) or 0.0), w.index)
                )
                reason = f"match rate {rate:.2f} > {self.cache_threshold}: longest match"
                costs = {w.id: float(matches.get(w.id, 0)) for w in el}
            else:
                chosen, costs = shortest, loads
                reason = f"match rate {rate:.2f} <= {self.cache_threshold}: least loaded"
        self._tree.record_route(chosen.id, req.block_hashes, now)
        return Decision(chosen.id, reason, costs)


# ---------------------------------------------------------------------------- kv (ours)


def _default_cost_model() -> CostModelLike:
    from agentctl.serving.costmodel import CostModel

    return CostModel()


class KvPolicy(Policy):
    """Ours: the worker with the lowest predicted time to first token, in milliseconds.

    For each eligible worker (router-anchors.md section 7):

    - `queue`: `WorkerLoad.queued_prefill_ms`, the prefill work already ahead, in token-budget
      steps under the cost model; multiplied by `2 ** (priority * priority_scale)` (priority
      clamped to [-8, 8]), so a high-priority request tolerates less queueing and trades cache
      for an idle worker sooner, and a background one (negative priority) waits for its cache;
    - `prefill`: the marginal ms of this request's uncached tokens
      (`prompt - overlap * block_size`, at least 1) batched after that queue;
    - `decode`: the slowdown it inflicts on the worker's running sequences,
      `(decode_ms(kv_after) - decode_ms(kv_before)) * running * osl * decode_weight`, with osl
      the `expected_output` hint (else `default_output`, capped by max_tokens);
    - `stall`: `prefill * running * decode_weight`, the other half of that interference: in
      a mixed step the running sequences wait for this request's prefill chunks (the engine's
      step time is prefill plus decode), which makes a cache miss on a busy worker expensive.
      The default weight 0.02 counts 50 ms of aggregate delay spread over other streams as
      one ms of this request's TTFT (the targets are TTFT percentiles, ITL only a median):
      with 50k-token agent prompts (~5% of a 16k-block cache) each running sequence then
      costs ~7 ms, so a ~1 s prefix hit outweighs ~150 extra running sequences; at 0.1 it
      would be ~30, and long prefixes would be thrown away to balance decode, as Dynamo's
      block-count cost does. Tune it with the replay benchmark;
    - `overload`: if KV use after admission (in use, plus requests queued ahead that the engine
      has not admitted yet, plus this prompt + osl) exceeds `overload_threshold` (0.95),
      `overload_ms` plus the chunked prefill time of the excess tokens: the recompute a
      preemption costs, or the wait for memory when admission stalls on a full cache; plus
      `no_fit_ms` (10 s) when it cannot fit at all (> 1.0): admission then waits for running
      requests to finish, which nothing here can predict, so such a worker is a last resort
      (in replay at overload this cut kv's p99 TTFT by ~30%);
    - minus `session_bonus_ms` on the worker the session last used within `session_ttl_s`
      (soft affinity, never a pin).

    The minimum wins; ties go to fewer cached blocks, then the lowest index. Optional
    power-of-k (`power_k` random candidates, best of them) or Dynamo-style softmax
    (`temperature`), both from a seeded RNG. A prefix cached nowhere beyond what every worker
    holds goes to the rendezvous-hash owner of its first uncached block (bounded load: owners
    whose cost exceeds the best by more than `max(cold_margin_ms, cold_margin_frac * best)`
    are skipped), so router replicas agree and the next turn finds the first one's cache.
    """

    name = "kv"

    def __init__(
        self,
        *,
        cost: CostModelLike | None = None,
        decode_weight: float = 0.02,
        default_output: int = DEFAULT_EXPECTED_OUTPUT,
        overload_threshold: float = 0.95,
        overload_ms: float = 1000.0,
        no_fit_ms: float = 10_000.0,
        priority_scale: float = 0.5,
        session_bonus_ms: float = 50.0,
        session_ttl_s: float = 300.0,
        max_sessions: int = 65536,
        cold_margin_ms: float = 100.0,
        cold_margin_frac: float = 0.25,
        power_k: int = 0,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> None:
        self.cost: CostModelLike = cost if cost is not None else _default_cost_model()
        self.decode_weight = decode_weight
        self.default_output = default_output
        self.overload_threshold = overload_threshold
        self.overload_ms = overload_ms
        self.no_fit_ms = no_fit_ms
        self.priority_scale = priority_scale
        self.session_bonus_ms = session_bonus_ms
        self.session_ttl_s = session_ttl_s
        self.max_sessions = max_sessions
        self.cold_margin_ms = cold_margin_ms
        self.cold_margin_frac = cold_margin_frac
        self.power_k = power_k
        self.temperature = temperature
        self._rng = random.Random(seed)
        self._sessions: OrderedDict[str, tuple[str, float]] = OrderedDict()

    def forget_worker(self, worker: str) -> None:
        for sid in [s for s, (w, _) in self._sessions.items() if w == worker]:
            del self._sessions[sid]

    def terms(self, req: RequestSpec, w: WorkerState, affine: bool = False) -> dict[str, float]:
        """The cost terms of sending `req` to `w` (ms); `total` is what is minimised."""
        cost, load, bs = self.cost, w.load, w.block_size
        uncached = max(req.prompt_tokens - w.overlap_blocks * bs, 1)
        queue = load.queued_prefill_ms(cost)
        prefill = load.prefill_drain_ms(cost, uncached) - queue
        osl = self.default_output if req.expected_output is None else req.expected_output
        if req.max_tokens > 0:
            osl = min(osl, req.max_tokens)
        capacity = max(1, w.capacity_blocks)
        # KV in use, plus what requests queued ahead will take when admitted
        kv_before = load.kv_usage + load.pending_blocks / capacity
        kv_after = kv_before + -(-(req.prompt_tokens + osl) // bs) / capacity
        decode = stall = 0.0
        if load.running:
            slowdown = max(0.0, cost.decode_ms(kv_after) - cost.decode_ms(kv_before))
            decode = slowdown * load.running * osl * self.decode_weight
            stall = prefill * load.running * self.decode_weight
        overload = 0.0
        if kv_after > self.overload_threshold:
            excess = kv_after - max(kv_before, self.overload_threshold)
            recompute = int(excess * capacity * bs)
            overload = self.overload_ms + chunked_prefill_ms(cost, recompute, load.token_budget)
            if kv_after > 1.0:
                overload += self.no_fit_ms
        priority = max(-8, min(8, req.priority))
        weighted_queue = queue * 2.0 ** (priority * self.priority_scale)
        bonus = self.session_bonus_ms if affine else 0.0
        return {
            "total": weighted_queue + prefill + decode + stall + overload - bonus,
            "ttft_ms": queue + prefill,
            "queue_ms": queue,
            "prefill_ms": prefill,
            "decode_ms": decode,
            "stall_ms": stall,
            "overload_ms": overload,
            "session_bonus_ms": bonus,
            "uncached_tokens": float(uncached),
            "overlap_blocks": float(w.overlap_blocks),
            "kv_after": kv_after,
        }

    def choose(self, req: RequestSpec, workers: Sequence[WorkerState], now: float) -> Decision:
        el = eligible_workers(workers)
        affine = self._affine(req.session_id, el, now)
        terms = {w.id: self.terms(req, w, w.id == affine) for w in el}
        costs = {wid: t["total"] for wid, t in terms.items()}
        chosen, reason = self._pick(req, el, costs, affine)
        if req.session_id is not None:
            self._sessions[req.session_id] = (chosen, now)
            self._sessions.move_to_end(req.session_id)
            while len(self._sessions) > self.max_sessions:
                self._sessions.popitem(last=False)
        return Decision(chosen, reason, costs, terms[chosen])

    def _affine(self, session: str | None, el: Sequence[WorkerState], now: float) -> str | None:
        if session is None:
            return None
        entry = self._sessions.get(session)
        if entry is None:
            return None
        worker, seen = entry
        if now - seen > self.session_ttl_s:
            del self._sessions[session]
            return None
        return worker if any(w.id == worker for w in el) else None

    def _pick(
        self,
        req: RequestSpec,
        el: list[WorkerState],
        costs: dict[str, float],
        affine: str | None,
    ) -> tuple[str, str]:
        overlaps = [w.overlap_blocks for w in el]
        common = min(overlaps)
        if max(overlaps) == common and common < len(req.block_hashes):
            best = min(costs.values())
            bound = best + max(self.cold_margin_ms, self.cold_margin_frac * best)
            order = rendezvous_order(req.block_hashes[common], el)
            if affine is not None:
                order.sort(key=lambda w: w.id != affine)
            for w in order:
                if costs[w.id] <= bound:
                    kind = "session" if w.id == affine else "rendezvous"
                    return w.id, f"cold prefix: {kind} owner within load bound"
        cands = el
        if self.power_k >= 2 and len(el) > self.power_k:
            cands = sorted(self._rng.sample(el, self.power_k), key=lambda w: w.index)
        if self.temperature > 0.0:
            i = softmax_pick([costs[w.id] for w in cands], self.temperature, self._rng.random())
            return cands[i].id, "kv softmax"
        best_w = min(cands, key=lambda w: (round(costs[w.id], 6), w.cached_blocks, w.index))
        return best_w.id, "min predicted ttft"


# ---------------------------------------------------------------------------- registry

POLICIES: dict[str, Callable[..., Policy]] = {
    RoundRobin.name: RoundRobin,
    LeastLoaded.name: LeastLoaded,
    SessionAffinity.name: SessionAffinity,
    DynamoCost.name: DynamoCost,
    SglangCacheAware.name: SglangCacheAware,
    KvPolicy.name: KvPolicy,
}


def policy_names() -> list[str]:
    return list(POLICIES)


def make_policy(name: str, **options: Any) -> Policy:
    """Build the policy registered as `name` with its keyword `options`."""
    try:
        factory = POLICIES[name]
    except KeyError:
        raise ValueError(f"unknown policy {name!r}; choose from {', '.join(POLICIES)}") from None
    return factory(**options)
