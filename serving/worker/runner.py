"""The engine loop: `EngineCore` driven in wall-clock time on the asyncio event loop.

`EngineCore` is pure and works on a virtual clock; this loop gives it real time. While there is
work it calls `step(now)`, sleeps the step's duration (the cost model's time, already multiplied
by its `time_scale`), then, at the step's end: publishes the step's KV events, and delivers first
tokens, tokens and finishes to each request's asyncio queue. Events go out before tokens, so a
router never sees a response before the blocks it created are announced.

Pacing. Sleeps on an event loop are coarse (about 1 ms), which would slow a 0.01x simulation
down badly, so the next step starts when the previous one *should* have ended, not when the
sleep returned, catching up on up to `max_lag_s` of lateness; the average throughput is the
cost model's, individual steps may come in short bursts.

Everything runs on the event loop's thread: `submit` / `cancel` between two steps are safe
because `step` never awaits. The engine's clock is wall seconds since `start()`, so a
`cache_control` pin TTL is in real seconds whatever the time scale.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from agentctl.serving.engine import EngineCore, StepResult
from agentctl.serving.events import ZmqEventPublisher
from agentctl.serving.types import BlockHash, BlockStored, KvEvent, RequestSpec
from agentctl.serving.worker.metrics import WorkerMetrics

__all__ = ["CacheSnapshot", "EngineRunner", "Output", "RequestHandle"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Output:
    """One item on a request's queue."""

    kind: Literal["token", "finish", "abort"]
    #: on a request's first token: prompt tokens served from the prefix cache
    cached_tokens: int | None = None
    #: "length" for finish; the reason for abort
    reason: str = ""


@dataclass(frozen=True)
class CacheSnapshot:
    """The prefix cache between two engine steps: `hashes[i]` has parent `parents[i]`,
    parents first. Every KV event batch numbered below `next_seq` is reflected in it, none
    numbered `next_seq` or above (None: the worker publishes no events)."""

    next_seq: int | None
    hashes: list[BlockHash]
    parents: list[BlockHash | None]


class RequestHandle:
    """A submitted request: its queue of `Output`s and its timing, for the HTTP layer."""

    __slots__ = (
        "arrival",
        "cached_tokens",
        "done",
        "first_token_at",
        "generated",
        "last_token_at",
        "queue",
        "request_id",
        "spec",
    )

    def __init__(self, spec: RequestSpec, arrival: float) -> None:
        self.request_id = spec.request_id
        self.spec = spec
        self.arrival = arrival
        self.queue: asyncio.Queue[Output] = asyncio.Queue()
        self.cached_tokens = 0
        self.generated = 0
        self.first_token_at: float | None = None
        self.last_token_at: float | None = None
        self.done = False


class EngineRunner:
    """Drives one `EngineCore` (see the module docstring)."""

    def __init__(
        self,
        core: EngineCore,
        *,
        publisher: ZmqEventPublisher | None = None,
        metrics: WorkerMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        max_lag_s: float = 0.05,
    ) -> None:
        self.core = core
        self.publisher = publisher
        self.metrics = metrics
        self._clock = clock
        self._max_lag = max_lag_s
        self._t0 = clock()
        self._handles: dict[str, RequestHandle] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._resets: list[asyncio.Future[None]] = []
        self._snapshots: list[asyncio.Future[CacheSnapshot]] = []
        # between `core.step` and `_apply`: the cache already holds the step's changes, its
        # events are not published yet, so no snapshot may be taken
        self._stepping = False
        # token ids of the hashed blocks of live text requests, to fill BlockStored.token_ids
        # as vLLM does (a consumer may rebuild its own hashes from them)
        # the prompt's ids and the block's offset in them: references, no slice nor pair per
        # block, so a 16k-block prompt allocates no 16k tuples on the event loop (nor sets off
        # the GC passes they would); slices are cut only for the blocks each step announces
        self._block_tokens: dict[BlockHash, tuple[int, ...]] = {}
        self._block_offset: dict[BlockHash, int] = {}
        self._block_refs: dict[BlockHash, int] = {}
        self._release_after_publish: list[RequestSpec] = []
        self._seen_queries = 0
        self._seen_hits = 0
        self._seen_preemptions = 0
        self.steps = 0

    # ---- lifecycle --------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def start(self) -> None:
        if self._task is not None:
            raise RuntimeError("runner already started")
        self._t0 = self._clock()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="engine-loop")

    async def stop(self) -> None:
        """Stop stepping; every open request gets an `abort` output."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for h in list(self._handles.values()):
            self._drop(h, "abort")
            h.queue.put_nowait(Output("abort", reason="the worker is shutting down"))
        for pending in (self._resets, self._snapshots):
            for fut in pending:
                if not fut.done():
                    fut.set_exception(RuntimeError("the worker is shutting down"))
            pending.clear()
        self._stepping = False

    # ---- requests ---------------------------------------------------------------------------

    def now(self) -> float:
        """The engine's clock: seconds since `start()`."""
        return self._clock() - self._t0

    def submit(self, spec: RequestSpec) -> RequestHandle:
        """Queue a request. Raises `RequestTooLarge` (never fits the cache), `ValueError`
        (duplicate id, empty prompt) or `RuntimeError` (not running)."""
        if not self.running:
            raise RuntimeError("the engine loop is not running")
        self.core.add_request(spec, self.now())
        handle = RequestHandle(spec, self._clock())
        self._handles[spec.request_id] = handle
        self._remember_tokens(spec)
        self._wake.set()
        self._update_gauges()
        return handle

    def cancel(self, request_id: str) -> bool:
        """Drop a request (client gone): its blocks are released at once. False if unknown or
        already finished."""
        h = self._handles.get(request_id)
        if h is None:
            return False
        self.core.cancel(request_id, self.now())
        self._drop(h, "abort")
        self._update_gauges()
        return True

    async def reset_prefix_cache(self) -> None:
        """Forget every cached block (vLLM's `reset_prefix_cache`), between two steps so the
        `AllBlocksCleared` event is ordered after the events of the step in flight."""
        if not self.running:
            self._do_reset()
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._resets.append(fut)
        self._wake.set()
        await fut

    async def snapshot(self) -> CacheSnapshot:
        """Every block in the prefix cache, taken between two engine steps so that
        `next_seq` is exact. Costs a copy of the block table on the event loop (about 2 ms
        for 16,384 blocks, see the commit)."""
        if not self._stepping:
            return self._take_snapshot()
        fut: asyncio.Future[CacheSnapshot] = asyncio.get_running_loop().create_future()
        self._snapshots.append(fut)
        return await fut

    def _take_snapshot(self) -> CacheSnapshot:
        hashes, parents = self.core.cache_snapshot()
        pub = self.publisher
        return CacheSnapshot(None if pub is None else pub.next_accepted_seq, hashes, parents)

    def _serve_snapshots(self) -> None:
        if not self._snapshots:
            return
        snap = self._take_snapshot()
        for fut in self._snapshots:
            if not fut.done():
                fut.set_result(snap)
        self._snapshots.clear()

    def stats(self) -> dict[str, Any]:
        """Engine state for `/health` (and a router's load correction)."""
        core = self.core
        return {
            "num_requests_running": core.num_running,
            "num_requests_waiting": core.num_waiting,
            "kv_cache_usage_perc": core.kv_usage,
            "pending_prefill_tokens": core.pending_prefill_tokens(),
            "prefix_cache_queries": core.prefix_cache_queries,
            "prefix_cache_hits": core.prefix_cache_hits,
            "num_preemptions": core.num_preemptions,
            "prefill_tokens_total": core.total_prefill_tokens,
            "num_finished": core.num_finished,
            "open_requests": len(self._handles),
            "steps": self.steps,
            "kv_events_next_seq": None if self.publisher is None else self.publisher.next_seq,
        }

    # ---- the loop ---------------------------------------------------------------------------

    async def _loop(self) -> None:
        core = self.core
        deadline: float | None = None  # when the previous step should have ended
        while True:
            if self._resets:
                self._do_reset()
                for fut in self._resets:
                    if not fut.done():
                        fut.set_result(None)
                self._resets.clear()
            if not core.has_work():
                self._update_gauges()
                deadline = None
                self._wake.clear()
                await self._wake.wait()
                continue
            wall = self._clock()
            start = wall if deadline is None else max(deadline, wall - self._max_lag)
            self._stepping = True
            try:
                result = core.step(start - self._t0)
            except Exception:  # a bug in the core must not hang every client forever
                self._stepping = False
                log.exception("engine step failed; aborting open requests")
                for h in list(self._handles.values()):
                    core.cancel(h.request_id)
                    self._drop(h, "abort")
                    h.queue.put_nowait(Output("abort", reason="internal engine error"))
                deadline = None
                self._serve_snapshots()
                continue
            self.steps += 1
            self._update_gauges()
            end = start + result.duration_s
            delay = end - self._clock()
            if result.num_scheduled_tokens == 0 and delay < 0.001:
                delay = 0.001  # nothing could run: never spin
            await asyncio.sleep(max(0.0, delay))
            deadline = end
            self._apply(result)
            self._stepping = False
            self._serve_snapshots()

    def _apply(self, result: StepResult) -> None:
        if result.events and self.publisher is not None:
            try:
                self.publisher.publish(self._with_tokens(result.events))
            except RuntimeError:
                log.warning("KV event publisher closed; %d events dropped", len(result.events))
        for spec in self._release_after_publish:
            self._forget_tokens(spec)
        self._release_after_publish.clear()
        now = self._clock()
        m = self.metrics
        cached_of = dict(result.first_tokens)
        for rid in result.tokens:
            h = self._handles.get(rid)
            if h is None:
                continue  # cancelled while the step ran
            if h.generated == 0:
                h.cached_tokens = cached_of.get(rid, 0)
                h.first_token_at = now
                if m is not None:
                    m.time_to_first_token.observe(now - h.arrival)
                    m.prompt_tokens.inc(h.spec.prompt_tokens)
                h.queue.put_nowait(Output("token", cached_tokens=h.cached_tokens))
            else:
                if m is not None and h.last_token_at is not None:
                    m.inter_token_latency.observe(now - h.last_token_at)
                h.queue.put_nowait(Output("token"))
            h.generated += 1
            h.last_token_at = now
        if m is not None and result.tokens:
            m.generation_tokens.inc(len(result.tokens))
        for rid in result.finished:
            h = self._handles.get(rid)
            if h is None:
                continue
            if m is not None:
                m.e2e_request_latency.observe(now - h.arrival)
            self._drop(h, "length")
            h.queue.put_nowait(Output("finish", reason="length"))
        self._update_counters()

    def _do_reset(self) -> None:
        self.core.reset_prefix_cache()
        events = self.core.drain_events()
        if events and self.publisher is not None:
            with contextlib.suppress(RuntimeError):
                self.publisher.publish(self._with_tokens(events))

    def _drop(self, h: RequestHandle, reason: str) -> None:
        if h.done:
            return
        h.done = True
        self._handles.pop(h.request_id, None)
        self._release_after_publish.append(h.spec)
        if self.metrics is not None:
            self.metrics.request_finished(reason)

    # ---- metrics ----------------------------------------------------------------------------

    def _update_gauges(self) -> None:
        m = self.metrics
        if m is None:
            return
        m.num_requests_running.set(self.core.num_running)
        m.num_requests_waiting.set(self.core.num_waiting)
        m.kv_cache_usage_perc.set(self.core.kv_usage)

    def _update_counters(self) -> None:
        m = self.metrics
        core = self.core
        if m is None:
            return
        if core.prefix_cache_queries > self._seen_queries:
            m.prefix_cache_queries.inc(core.prefix_cache_queries - self._seen_queries)
            self._seen_queries = core.prefix_cache_queries
        if core.prefix_cache_hits > self._seen_hits:
            m.prefix_cache_hits.inc(core.prefix_cache_hits - self._seen_hits)
            self._seen_hits = core.prefix_cache_hits
        if core.num_preemptions > self._seen_preemptions:
            m.num_preemptions.inc(core.num_preemptions - self._seen_preemptions)
            self._seen_preemptions = core.num_preemptions

    # ---- token ids for BlockStored ----------------------------------------------------------

    def _remember_tokens(self, spec: RequestSpec) -> None:
        ids = spec.extra.get("token_ids")
        if not isinstance(ids, tuple) or not ids:
            return
        bs = self.core.config.block_size
        tokens = self._block_tokens
        offsets = self._block_offset
        refs = self._block_refs
        for i, h in enumerate(spec.block_hashes):
            if (i + 1) * bs > len(ids):
                break
            n = refs.get(h, 0)
            if n == 0:
                tokens[h] = ids
                offsets[h] = i * bs
            refs[h] = n + 1

    def _forget_tokens(self, spec: RequestSpec) -> None:
        ids = spec.extra.get("token_ids")
        if not isinstance(ids, tuple) or not ids:
            return
        bs = self.core.config.block_size
        refs = self._block_refs
        for i, h in enumerate(spec.block_hashes):
            if (i + 1) * bs > len(ids):
                break
            n = refs.get(h, 0) - 1
            if n <= 0:
                refs.pop(h, None)
                self._block_tokens.pop(h, None)
                self._block_offset.pop(h, None)
            else:
                refs[h] = n

    def _with_tokens(self, events: list[KvEvent]) -> list[KvEvent]:
        """`BlockStored` events with their token ids filled in when every block's are known
        (text and token-id requests); hash-only requests leave them empty."""
        known = self._block_tokens
        if not known:
            return events
        bs = self.core.config.block_size
        offset = self._block_offset
        out: list[KvEvent] = []
        for ev in events:
            if (
                isinstance(ev, BlockStored)
                and not ev.token_ids
                and all(h in known for h in ev.block_hashes)
            ):
                ids = tuple(
                    t for h in ev.block_hashes for t in known[h][offset[h] : offset[h] + bs]
                )
                ev = BlockStored(ev.block_hashes, ev.parent_block_hash, ids, ev.block_size)
            out.append(ev)
        return out
