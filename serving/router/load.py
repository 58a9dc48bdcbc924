"""Per-worker load from the router's own accounting, corrected by what the engines report.

The router sees every request it sends: `on_route` charges its uncached prompt tokens as
prefill work until `on_first_token`, then its blocks (prompt plus expected output) as decode
load until `on_finish` (Dynamo's slot manager, `lib/kv-router/src/active_sequence.rs`: add on
route, mark prefill completed, free). That ledger drifts when a finish is lost or other router
replicas share the workers, so engine reports (`running`, `waiting`, KV usage) correct it:

- requests the engine no longer has (it reports fewer running+waiting than we hold, for longer
  than `stale_after_s`) are swept, oldest first (vllm-project/router #197: lost counters made hot
  spots); anything older than `max_age_s` is swept regardless (Dynamo: 5 min);
- waiting requests beyond our own queued ones (another replica's) are charged as prefill work
  of our average request size, and KV usage is the engine's figure plus what we routed since.

Time is passed in (`now`, seconds); no I/O.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from agentctl.serving.types import BlockHash

#: output length assumed when a request carries no hint (agent turns are short)
DEFAULT_EXPECTED_OUTPUT = 256
#: vLLM / Dynamo mocker `max-num-batched-tokens`
DEFAULT_TOKEN_BUDGET = 8192


class CostModelLike(Protocol):
    """What the router needs of `agentctl.serving.costmodel.CostModel` (milliseconds)."""

    def prefill_ms(self, new_tokens: int) -> float: ...

    def decode_ms(self, kv_fraction: float) -> float: ...


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class WorkerLoad:
    """A snapshot of one worker's load, as the policies see it."""

    #: requests the router sent and has not seen finish
    in_flight: int = 0
    #: uncached prompt tokens of those not yet past first token (Dynamo active_prefill_tokens)
    active_prefill_tokens: int = 0
    #: the same, per request, oldest first: the prefill queue ahead of a new request
    prefill_queue: tuple[int, ...] = ()
    #: ms the head of that queue has been prefilling (its progress, credited)
    head_elapsed_ms: float = 0.0
    #: blocks of requests past first token, prompt plus expected output
    active_decode_blocks: int = 0
    #: unique prompt blocks of every in-flight request, prefill included (Dynamo's
    #: `active_blocks`; output growth is not counted, as with Dynamo's default)
    active_blocks: int = 0
    #: sequences decoding: the router's count, or the engine's `running` if larger
    running: int = 0
    #: the engine's waiting queue (0 without a fresh report)
    waiting: int = 0
    #: fraction of KV blocks in use: engine report plus what was routed since, else estimated
    kv_usage: float = 0.0
    #: blocks (prompt + expected output) of our requests the engine reports still waiting:
    #: they hold no KV yet but must fit before they run (admission waits for memory)
    pending_blocks: int = 0
    #: prefill tokens queued on the engine by others (waiting beyond ours x our mean size)
    external_prefill_tokens: int = 0
    #: engine per-step token budget (chunked prefill)
    token_budget: int = DEFAULT_TOKEN_BUDGET

    def prefill_drain_ms(self, cost: CostModelLike, extra_tokens: int = 0) -> float:
        """Predicted ms until the queued prefill work plus `extra_tokens` is done.

        Work is cut into engine steps of the token budget (less one token per decoding
        sequence, which vLLM schedules first); each step costs `prefill_ms(chunk)` plus a decode
        step when sequences are running, as in the simulated engine. The head's elapsed time
        is credited, up to its own estimate, unless the engine says it is still waiting.
        """
        queued = self.active_prefill_tokens + self.external_prefill_tokens
        total = queued + max(0, extra_tokens)
        if total <= 0:
            return 0.0
        budget = max(self.token_budget - self.running, self.token_budget // 4, 1)
        step_extra = cost.decode_ms(self.kv_usage) if self.running > 0 else 0.0
        ms = chunked_prefill_ms(cost, total, budget, step_extra)
        if self.prefill_queue and self.head_elapsed_ms > 0.0:
            head = chunked_prefill_ms(cost, self.prefill_queue[0], budget, step_extra)
            ms -= min(self.head_elapsed_ms, head)
        return max(ms, 0.0)

    def queued_prefill_ms(self, cost: CostModelLike) -> float:
        """Predicted ms to drain the prefill work already ahead of a new request."""
        return self.prefill_drain_ms(cost, 0)


def chunked_prefill_ms(
    cost: CostModelLike, tokens: int, budget: int = DEFAULT_TOKEN_BUDGET, step_extra: float = 0.0
) -> float:
    """Ms to prefill `tokens` in steps of at most `budget` tokens, each `step_extra` longer.

    The cost model's polynomial is per forward pass: applying it to 800k tokens at once would
    overstate the time ~15x through its quadratic term, so long work is always chunked.
    """
    if tokens <= 0:
        return 0.0
    full, rest = divmod(tokens, max(1, budget))
    ms = full * (cost.prefill_ms(budget) + step_extra)
    if rest:
        ms += cost.prefill_ms(rest) + step_extra
    return ms


@dataclass
class _Request:
    request_id: str
    worker: str
    uncached_tokens: int
    #: prompt plus expected output, in blocks (what it will hold by the end)
    blocks: int
    #: prompt alone, in blocks
    prompt_blocks: int
    routed_at: float
    block_hashes: tuple[BlockHash, ...] = ()
    first_token_at: float | None = None


@dataclass
class _EngineReport:
    running: int
    waiting: int
    kv_usage: float
    at: float


@dataclass
class _WorkerLedger:
    capacity_blocks: int | None
    token_budget: int
    #: in routing order: the oldest first
    requests: OrderedDict[str, _Request] = field(default_factory=OrderedDict)
    #: the subset not yet past first token, also oldest first: the prefill queue
    prefill: OrderedDict[str, _Request] = field(default_factory=OrderedDict)
    #: hash -> number of in-flight requests holding it (Dynamo counts shared blocks once)
    refcounts: dict[BlockHash, int] = field(default_factory=dict)
    prefill_tokens: int = 0
    decode_blocks: int = 0
    #: running sums kept so that a view costs O(prefill queue), not O(in flight)
    held_blocks: int = 0
    unhashed_prompt_blocks: int = 0
    blocks_since_report: int = 0
    #: when the prefill queue last advanced (a first token or a finish freed its head)
    advanced_at: float = 0.0
    report: _EngineReport | None = None
    mismatch_since: float | None = None
    #: moving mean of uncached tokens per routed request (prices other replicas' requests)
    mean_uncached: float = 0.0


class LoadTracker:
    """The router's ledger of in-flight requests per worker (see module docstring)."""

    def __init__(
        self,
        *,
        block_size: int = 64,
        token_budget: int = DEFAULT_TOKEN_BUDGET,
        default_output: int = DEFAULT_EXPECTED_OUTPUT,
        stale_after_s: float = 30.0,
        max_age_s: float = 300.0,
        report_ttl_s: float = 10.0,
    ) -> None:
        if block_size <= 0:
            raise ValueError(f"block_size must be > 0, got {block_size}")
        self.block_size = block_size
        self.token_budget = token_budget
        self.default_output = default_output
        self.stale_after_s = stale_after_s
        self.max_age_s = max_age_s
        self.report_ttl_s = report_ttl_s
        self._workers: dict[str, _WorkerLedger] = {}
        self._requests: dict[str, _Request] = {}
        self._now = 0.0
        self.swept = 0

    # ---------------------------------------------------------------- workers

    def add_worker(
        self, worker: str, capacity_blocks: int | None = None, token_budget: int | None = None
    ) -> None:
        """Register `worker` (optional: `on_route` registers unknown workers on the fly)."""
        ledger = self._ledger(worker)
        if capacity_blocks is not None:
            ledger.capacity_blocks = capacity_blocks
        if token_budget is not None:
            ledger.token_budget = token_budget

    def remove_worker(self, worker: str) -> list[str]:
        """Forget `worker`; returns the ids of the requests it still had in flight."""
        ledger = self._workers.pop(worker, None)
        if ledger is None:
            return []
        for rid in ledger.requests:
            self._requests.pop(rid, None)
        return list(ledger.requests)

    def workers(self) -> list[str]:
        return list(self._workers)

    def _ledger(self, worker: str) -> _WorkerLedger:
        ledger = self._workers.get(worker)
        if ledger is None:
            ledger = self._workers[worker] = _WorkerLedger(None, self.token_budget)
        return ledger

    # ---------------------------------------------------------------- lifecycle

    def on_route(
        self,
        worker: str,
        request_id: str,
        prompt_tokens: int,
        cached_tokens: int,
        expected_output: int | None,
        now: float,
        *,
        block_hashes: Sequence[BlockHash] = (),
    ) -> None:
        """Charge a request to `worker`: its uncached tokens as prefill work from now on.

        `block_hashes` (optional) lets shared prompt blocks of concurrent requests count once
        in `active_blocks`, as Dynamo counts them.
        """
        self._now = max(self._now, now)
        if request_id in self._requests:
            self.on_finish(request_id, now)
        ledger = self._ledger(worker)
        uncached = max(0, prompt_tokens - max(0, cached_tokens))
        output = self.default_output if expected_output is None else max(0, expected_output)
        req = _Request(
            request_id=request_id,
            worker=worker,
            uncached_tokens=uncached,
            blocks=_ceil_div(max(0, prompt_tokens) + output, self.block_size),
            prompt_blocks=_ceil_div(max(0, prompt_tokens), self.block_size),
            routed_at=now,
            block_hashes=tuple(block_hashes),
        )
        if not ledger.prefill:
            ledger.advanced_at = now
        ledger.requests[request_id] = req
        ledger.prefill[request_id] = req
        self._requests[request_id] = req
        ledger.prefill_tokens += uncached
        ledger.held_blocks += req.blocks
        ledger.unhashed_prompt_blocks += max(0, req.prompt_blocks - len(req.block_hashes))
        if ledger.report is not None and now > ledger.report.at:
            ledger.blocks_since_report += req.blocks
        ledger.mean_uncached = (
            float(uncached)
            if ledger.mean_uncached == 0.0
            else 0.9 * ledger.mean_uncached + 0.1 * uncached
        )
        refs = ledger.refcounts
        for h in req.block_hashes:
            refs[h] = refs.get(h, 0) + 1

    def on_first_token(self, request_id: str, now: float) -> None:
        """The request's prefill is done: its tokens leave the prefill queue, its blocks decode."""
        self._now = max(self._now, now)
        req = self._requests.get(request_id)
        if req is None or req.first_token_at is not None:
            return
        ledger = self._workers[req.worker]
        req.first_token_at = now
        del ledger.prefill[request_id]
        ledger.prefill_tokens -= req.uncached_tokens
        ledger.decode_blocks += req.blocks
        ledger.advanced_at = now

    def on_finish(self, request_id: str, now: float) -> None:
        """The request is over (finished, failed or cancelled): release everything it held."""
        self._now = max(self._now, now)
        req = self._requests.pop(request_id, None)
        if req is None:
            return
        ledger = self._workers[req.worker]
        del ledger.requests[request_id]
        if req.first_token_at is None:
            del ledger.prefill[request_id]
            ledger.prefill_tokens -= req.uncached_tokens
            ledger.advanced_at = now
        else:
            ledger.decode_blocks -= req.blocks
        ledger.held_blocks -= req.blocks
        ledger.unhashed_prompt_blocks -= max(0, req.prompt_blocks - len(req.block_hashes))
        if ledger.report is not None and req.routed_at > ledger.report.at:
            ledger.blocks_since_report -= req.blocks
        refs = ledger.refcounts
        for h in req.block_hashes:
            left = refs[h] - 1
            if left:
                refs[h] = left
            else:
                del refs[h]

    def on_engine_report(
        self, worker: str, running: int, waiting: int, kv_usage: float, now: float
    ) -> None:
        """Take an engine's own counts (e.g. scraped `vllm:num_requests_*`, KV usage).

        If the engine keeps reporting fewer requests than the router holds for `stale_after_s`,
        the router's oldest surplus entries that are themselves that old are swept.
        """
        self._now = max(self._now, now)
        ledger = self._ledger(worker)
        ledger.report = _EngineReport(max(0, running), max(0, waiting), max(0.0, kv_usage), now)
        ledger.blocks_since_report = 0
        surplus = len(ledger.requests) - (running + waiting)
        if surplus <= 0:
            ledger.mismatch_since = None
            return
        if ledger.mismatch_since is None:
            ledger.mismatch_since = now
            return
        if now - ledger.mismatch_since < self.stale_after_s:
            return
        cutoff = now - self.stale_after_s
        stale = [r.request_id for r in ledger.requests.values() if r.routed_at <= cutoff]
        for rid in stale[:surplus]:
            self.on_finish(rid, now)
            self.swept += 1
        ledger.mismatch_since = None

    def sweep(self, now: float) -> int:
        """Drop requests older than `max_age_s` (a lost finish); returns how many."""
        self._now = max(self._now, now)
        cutoff = now - self.max_age_s
        old = [rid for rid, r in self._requests.items() if r.routed_at <= cutoff]
        for rid in old:
            self.on_finish(rid, now)
        self.swept += len(old)
        return len(old)

    # ---------------------------------------------------------------- views

    def in_flight(self, worker: str) -> int:
        ledger = self._workers.get(worker)
        return 0 if ledger is None else len(ledger.requests)

    def worker_of(self, request_id: str) -> str | None:
        req = self._requests.get(request_id)
        return None if req is None else req.worker

    def shared_active_blocks(self, worker: str, block_hashes: Sequence[BlockHash]) -> int:
        """How many of `block_hashes` in-flight requests on `worker` already hold (Dynamo
        counts only the rest as the new request's additional decode blocks)."""
        ledger = self._workers.get(worker)
        if ledger is None or not ledger.refcounts:
            return 0
        refs = ledger.refcounts
        return sum(1 for h in block_hashes if h in refs)

    def view(self, worker: str, now: float | None = None) -> WorkerLoad:
        """The load snapshot of `worker` at `now` (default: the latest time seen)."""
        now = self._now if now is None else now
        ledger = self._workers.get(worker)
        if ledger is None:
            return WorkerLoad(token_budget=self.token_budget)
        reqs, prefill = ledger.requests, ledger.prefill
        queue = tuple(r.uncached_tokens for r in prefill.values())
        head_elapsed = 0.0
        if prefill:
            head = next(iter(prefill.values()))
            head_elapsed = max(0.0, now - max(head.routed_at, ledger.advanced_at)) * 1000.0
        decoding = len(reqs) - len(prefill)
        # Dynamo's active blocks: unique hashed blocks plus each prompt's unhashed rest.
        unique = len(ledger.refcounts) + ledger.unhashed_prompt_blocks
        capacity = ledger.capacity_blocks
        running, waiting, external, pending = decoding, 0, 0, 0
        kv = ledger.held_blocks / capacity if capacity else 0.0
        report = ledger.report
        if report is not None and now - report.at <= self.report_ttl_s:
            running = max(decoding, report.running)
            waiting = report.waiting
            # our queued requests the engine had seen; it admits in order, so if it says n are
            # waiting, the newest n of them hold no KV yet (and the head is not prefilling)
            seen = [r for r in prefill.values() if r.routed_at <= report.at]
            held_back = seen[len(seen) - min(report.waiting, len(seen)) :]
            pending = sum(r.blocks for r in held_back)
            if held_back and held_back[0] is seen[0]:
                head_elapsed = 0.0
            foreign = max(0, report.waiting - len(seen))
            external = int(foreign * ledger.mean_uncached)
            kv = report.kv_usage
            if capacity:
                kv += ledger.blocks_since_report / capacity
        return WorkerLoad(
            in_flight=len(reqs),
            active_prefill_tokens=ledger.prefill_tokens,
            prefill_queue=queue,
            head_elapsed_ms=head_elapsed,
            active_decode_blocks=ledger.decode_blocks,
            active_blocks=unique,
            running=running,
            waiting=waiting,
            kv_usage=kv,
            pending_blocks=pending,
            external_prefill_tokens=external,
            token_budget=ledger.token_budget,
        )

    def internal_sizes(self) -> dict[str, int]:
        """Entry counts of the internal containers (tests assert no leaks)."""
        return {
            "requests": len(self._requests),
            "ledger_requests": sum(len(w.requests) for w in self._workers.values()),
            "prefill_queue": sum(len(w.prefill) for w in self._workers.values()),
            "held_blocks": sum(w.held_blocks for w in self._workers.values()),
            "refcounts": sum(len(w.refcounts) for w in self._workers.values()),
        }
