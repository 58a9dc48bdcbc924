"""The router's live worker registry: who the workers are, whether they are up, what they cache.

It owns the pure core (`BlockIndex`, `LoadTracker`, the policy) and the I/O that feeds it:

- one KV event subscription per event-publishing worker (`AsyncZmqEventSubscriber`), applied
  to the index in sequence order; a `Gap` triggers a replay request on the worker's ROUTER
  socket, and if that fails the worker's view is reset (counted in the metrics);
- a health poll of every worker's `/health` each `health_interval_s`, feeding the engine's
  own counts to the load tracker (`on_engine_report`). A failed poll marks the worker down:
  it gets no new requests and its in-flight ones are aborted at once (they fail fast with a
  502 rather than hang); the next passing poll brings it back. An engine restart (its event
  sequence went backwards) resets the worker's view.

`route()` builds the policy's `WorkerState` candidates from index overlaps and load views,
chooses, and records the decision (`record_route`, `on_route`). All mutation happens on the
event loop thread, so no locks are needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from agentctl.serving.events import AsyncZmqEventSubscriber, EventDecodeError
from agentctl.serving.router.index import BlockIndex, IndexStats
from agentctl.serving.router.load import LoadTracker
from agentctl.serving.router.policies import Decision, Policy, WorkerState
from agentctl.serving.router.router_metrics import RouterMetrics
from agentctl.serving.types import RequestSpec

__all__ = ["Registry", "Routed", "WorkerEntry"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class WorkerEntry:
    """One registered worker and its live state."""

    id: str
    url: str
    capacity_blocks: int
    events: str | None = None
    replay: str | None = None
    topic: str = ""
    token_budget: int | None = None
    #: passes health checks (a new worker is up until its first poll says otherwise)
    healthy: bool = True
    draining: bool = False
    removed: bool = False
    last_error: str | None = None
    last_health: dict[str, Any] = field(default_factory=dict)
    last_health_at: float | None = None
    consecutive_failures: int = 0
    events_received: int = 0
    last_event_lag_s: float | None = None
    resets: int = 0
    #: request id -> event set to abort it (the worker went down)
    inflight: dict[str, asyncio.Event] = field(default_factory=dict)
    subscriber: AsyncZmqEventSubscriber | None = None
    event_task: asyncio.Task[None] | None = None

    @property
    def publishes_events(self) -> bool:
        return self.events is not None

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "url": self.url,
            "events": self.events,
            "replay": self.replay,
            "capacity_blocks": self.capacity_blocks,
            "healthy": self.healthy,
            "draining": self.draining,
            "in_flight": len(self.inflight),
            "last_error": self.last_error,
            "consecutive_failures": self.consecutive_failures,
            "kv_event_batches": self.events_received,
            "kv_event_lag_s": self.last_event_lag_s,
            "kv_view_resets": self.resets,
            "engine": {
                k: self.last_health.get(k)
                for k in (
                    "num_requests_running",
                    "num_requests_waiting",
                    "kv_cache_usage_perc",
                    "prefix_cache_queries",
                    "prefix_cache_hits",
                )
                if k in self.last_health
            },
        }


@dataclass(frozen=True)
class Routed:
    """A routing decision with what it predicted."""

    worker: WorkerEntry
    decision: Decision
    predicted_hit_blocks: int
    layer: str
    decision_s: float


class Registry:
    """See the module docstring."""

    def __init__(
        self,
        policy: Policy,
        *,
        block_size: int,
        metrics: RouterMetrics,
        health_interval_s: float = 1.0,
        health_timeout_s: float = 1.0,
        replay_timeout_s: float = 2.0,
        predicted_ttl_s: float = 5.0,
        approximate_ttl_s: float = 120.0,
    ) -> None:
        self.policy = policy
        self.block_size = block_size
        self.metrics = metrics
        self.health_interval_s = health_interval_s
        self.health_timeout_s = health_timeout_s
        self.replay_timeout_s = replay_timeout_s
        self.index = BlockIndex(
            predicted_ttl_s=predicted_ttl_s, approximate_ttl_s=approximate_ttl_s
        )
        self.load = LoadTracker(block_size=block_size)
        self.workers: dict[str, WorkerEntry] = {}
        self._client: httpx.AsyncClient | None = None
        self._health_task: asyncio.Task[None] | None = None
        self._started = False

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Start event subscriptions and the health loop (inside a running event loop)."""
        self._client = httpx.AsyncClient(timeout=self.health_timeout_s)
        self._started = True
        for w in self.workers.values():
            self._start_events(w)
        await self.poll_health()
        self._health_task = asyncio.create_task(self._health_loop(), name="router-health")

    async def stop(self) -> None:
        self._started = False
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
        for w in list(self.workers.values()):
            await self._stop_events(w)
        if self._client is not None:
            await self._client.aclose()

    # ---------------------------------------------------------------- membership

    def add(
        self,
        worker_id: str,
        url: str,
        *,
        capacity_blocks: int,
        events: str | None = None,
        replay: str | None = None,
        topic: str = "",
        token_budget: int | None = None,
    ) -> WorkerEntry:
        """Register a worker; `ValueError` if the id is taken."""
        if worker_id in self.workers:
            raise ValueError(f"worker {worker_id!r} is already registered")
        if capacity_blocks <= 0:
            raise ValueError("capacity_blocks must be > 0")
        w = WorkerEntry(
            id=worker_id,
            url=url.rstrip("/"),
            capacity_blocks=capacity_blocks,
            events=events,
            replay=replay if events else None,
            topic=topic,
            token_budget=token_budget,
        )
        self.index.add_worker(worker_id, capacity_blocks, publishes_events=w.publishes_events)
        self.load.add_worker(worker_id, capacity_blocks, token_budget)
        self.workers[worker_id] = w
        self.metrics.worker_healthy.labels(worker_id).set(1)
        self.metrics.worker_draining.labels(worker_id).set(0)
        self.metrics.in_flight.labels(worker_id).set(0)
        if self._started:
            self._start_events(w)
        return w

    async def remove(self, worker_id: str) -> WorkerEntry:
        """Forget a worker (`KeyError` if unknown). Its in-flight requests run to their end;
        the router simply stops accounting for them."""
        w = self.workers.pop(worker_id)
        w.removed = True
        await self._stop_events(w)
        self.index.remove_worker(worker_id)
        self.load.remove_worker(worker_id)
        self.policy.forget_worker(worker_id)
        self.metrics.forget_worker(worker_id)
        return w

    def set_draining(self, worker_id: str, draining: bool) -> WorkerEntry:
        w = self.workers[worker_id]
        w.draining = draining
        self.metrics.worker_draining.labels(worker_id).set(int(draining))
        return w

    def mark_down(self, w: WorkerEntry, reason: str) -> None:
        """Fence `w`: no new requests, in-flight ones aborted (they fail fast)."""
        if w.healthy:
            log.warning("worker %s is down: %s", w.id, reason)
        w.healthy = False
        w.last_error = reason
        if not w.removed:
            self.metrics.worker_healthy.labels(w.id).set(0)
        for ev in w.inflight.values():
            ev.set()

    def _mark_up(self, w: WorkerEntry) -> None:
        if not w.healthy:
            log.warning("worker %s is back up", w.id)
        w.healthy = True
        w.last_error = None
        w.consecutive_failures = 0
        self.metrics.worker_healthy.labels(w.id).set(1)

    # ---------------------------------------------------------------- routing

    def candidates(self, spec: RequestSpec, now: float) -> list[WorkerState]:
        overlaps = self.index.overlaps(spec.block_hashes, now) if spec.block_hashes else {}
        out: list[WorkerState] = []
        for wid, w in self.workers.items():
            out.append(
                WorkerState(
                    id=wid,
                    index=self.index.slot(wid),
                    load=self.load.view(wid, now),
                    overlap_blocks=overlaps.get(wid, 0),
                    cached_blocks=self.index.cached_blocks(wid),
                    capacity_blocks=w.capacity_blocks,
                    block_size=self.block_size,
                    healthy=w.healthy,
                    draining=w.draining,
                    active_shared_blocks=self.load.shared_active_blocks(wid, spec.block_hashes),
                )
            )
        return out

    def route(self, spec: RequestSpec, *, exclude: frozenset[str] = frozenset()) -> Routed:
        """Choose a worker for `spec` and charge it; `NoEligibleWorker` if none may take it."""
        t0 = time.perf_counter()
        now = time.monotonic()
        cands = [c for c in self.candidates(spec, now) if c.id not in exclude]
        decision = self.policy.choose(spec, cands, now)
        chosen = next(c for c in cands if c.id == decision.worker)
        hit = chosen.overlap_blocks
        layer = "none"
        if hit:
            by_layer = self.index.overlaps_by_layer(spec.block_hashes, now).get(decision.worker)
            layer = by_layer.layer if by_layer is not None else "none"
        self.index.record_route(decision.worker, spec.block_hashes, now)
        self.load.on_route(
            decision.worker,
            spec.request_id,
            spec.prompt_tokens,
            hit * self.block_size,
            spec.expected_output if spec.expected_output is not None else spec.max_tokens,
            now,
            block_hashes=spec.block_hashes,
        )
        w = self.workers[decision.worker]
        dt = time.perf_counter() - t0
        name = self.policy.name
        self.metrics.decision_seconds.labels(name).observe(dt)
        self.metrics.predicted_hit_blocks.labels(name, layer).observe(hit)
        return Routed(w, decision, hit, layer, dt)

    def begin(self, w: WorkerEntry, request_id: str) -> asyncio.Event:
        """Track an in-flight request; the event is set if `w` goes down."""
        ev = asyncio.Event()
        if not w.healthy:
            ev.set()
        w.inflight[request_id] = ev
        if not w.removed:
            self.metrics.in_flight.labels(w.id).set(len(w.inflight))
        return ev

    def first_token(self, request_id: str) -> None:
        self.load.on_first_token(request_id, time.monotonic())

    def finish(self, w: WorkerEntry, request_id: str) -> None:
        w.inflight.pop(request_id, None)
        if not w.removed:
            self.metrics.in_flight.labels(w.id).set(len(w.inflight))
        self.load.on_finish(request_id, time.monotonic())

    def index_stats(self) -> IndexStats:
        self.index.expire(time.monotonic())
        return self.index.stats()

    # ---------------------------------------------------------------- health

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.health_interval_s)
            try:
                await self.poll_health()
                now = time.monotonic()
                self.load.sweep(now)
                self.index.expire(now)
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the loop die
                log.exception("health loop iteration failed")

    async def poll_health(self) -> None:
        ws = list(self.workers.values())
        await asyncio.gather(*(self._check(w) for w in ws))

    async def _check(self, w: WorkerEntry) -> None:
        assert self._client is not None
        try:
            r = await self._client.get(w.url + "/health", timeout=self.health_timeout_s)
            if r.status_code != 200:
                raise RuntimeError(f"/health answered {r.status_code}")
            body = r.json()
            if not isinstance(body, dict):
                raise RuntimeError("/health body is not an object")
        except Exception as exc:
            if w.removed:
                return
            w.consecutive_failures += 1
            self.mark_down(w, f"health check failed: {type(exc).__name__}: {exc}")
            return
        if w.removed:
            return
        now = time.monotonic()
        w.last_health, w.last_health_at = body, now
        self._check_restart(w, body)
        self._mark_up(w)
        self.load.on_engine_report(
            w.id,
            _int(body.get("num_requests_running")),
            _int(body.get("num_requests_waiting")),
            _float(body.get("kv_cache_usage_perc")),
            now,
        )

    def _check_restart(self, w: WorkerEntry, body: Mapping[str, Any]) -> None:
        """An engine whose event numbering went backwards restarted: its cache is empty."""
        nxt = body.get("kv_events_next_seq")
        if not w.publishes_events or not isinstance(nxt, int):
            return
        last = self.index.last_seq(w.id)
        if last is not None and nxt <= last:
            log.warning(
                "worker %s restarted (event seq %d <= %d): resetting its view", w.id, nxt, last
            )
            self.index.reset_worker(w.id, next_seq=nxt)
            w.resets += 1
            self.metrics.event_resets.labels(w.id).inc()

    # ---------------------------------------------------------------- KV events

    def _start_events(self, w: WorkerEntry) -> None:
        if w.events is None or w.event_task is not None:
            return
        w.subscriber = AsyncZmqEventSubscriber(w.events, w.replay, w.topic)
        w.event_task = asyncio.create_task(self._event_loop(w), name=f"router-events-{w.id}")

    async def _stop_events(self, w: WorkerEntry) -> None:
        task, w.event_task = w.event_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if w.subscriber is not None:
            w.subscriber.close()
            w.subscriber = None

    async def _event_loop(self, w: WorkerEntry) -> None:
        sub = w.subscriber
        assert sub is not None
        m = self.metrics
        while True:
            try:
                seq, batch = await sub.recv()
            except asyncio.CancelledError:
                raise
            except (EventDecodeError, ValueError) as exc:
                m.event_errors.labels(w.id).inc()
                log.warning("undecodable KV event from %s: %s", w.id, exc)
                continue
            if w.removed:
                return
            w.events_received += 1
            m.events.labels(w.id).inc()
            lag = max(0.0, time.time() - batch.ts)
            w.last_event_lag_s = lag
            m.event_lag.labels(w.id).set(lag)
            gap = self.index.apply(w.id, seq, batch.events, time.monotonic())
            if gap is not None:
                m.event_gaps.labels(w.id).inc()
                await self._fill_gap(w, sub, gap.first_missing)

    async def _fill_gap(self, w: WorkerEntry, sub: AsyncZmqEventSubscriber, first: int) -> None:
        if w.replay is not None:
            try:
                replayed = await sub.replay(first, timeout=self.replay_timeout_s)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("KV event replay from %s failed: %s", w.id, exc)
            else:
                if not w.removed:
                    now = time.monotonic()
                    for s, b in replayed:
                        self.index.apply(w.id, s, b.events, now)
                if not w.removed and self.index.pending_gap(w.id) is None:
                    self.metrics.event_replays.labels(w.id, "ok").inc()
                    return
        if w.removed:
            return
        self.metrics.event_replays.labels(w.id, "failed").inc()
        self.index.reset_worker(w.id)
        w.resets += 1
        self.metrics.event_resets.labels(w.id).inc()


def _int(v: object) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def _float(v: object) -> float:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else 0.0
