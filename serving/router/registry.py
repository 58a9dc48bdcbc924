"""The router's live worker registry: who the workers are, whether they may take requests,
what they cache.

It owns the pure core (`BlockIndex`, `LoadTracker`, the policy) and the I/O that feeds it:

- one KV event subscription per event-publishing worker (`AsyncZmqEventSubscriber`), applied
  to the index in sequence order; a `Gap` triggers a replay request on the worker's ROUTER
  socket, and if that fails the worker's view is reset (counted in the metrics);
- a snapshot of each worker's cache (`GET /kv/snapshot`) when the router starts, a worker is
  added or restarts, so a restarted router knows at once what the workers hold instead of
  replaying their whole event history; bounded by `snapshot_timeout_s`, the approximate and
  predicted layers route meanwhile, and a worker without the endpoint falls back to replay;
- a health poll of every worker's `/health` each `health_interval_s`, feeding the engine's
  own counts to the load tracker. Failures are told apart the way mature proxies do (Envoy's
  active health checks and outlier detection):

  * a worker is *down* after `unhealthy_threshold` consecutive failed polls, or at once when
    its port refuses the connection or it answers non-200 (the process is gone or not ready);
    it gets no new requests, and only those of its in-flight requests that made no progress
    for `stall_s` are aborted (the forwarder migrates them). A slow `/health` alone never
    cuts a stream that is still flowing. The next passing poll brings it back;
  * request-path failures (a connect timeout, a pooled connection the worker had closed)
    never fence a worker directly: they trigger an immediate probe, and `eject_after`
    consecutive ones eject it from rotation for a time that grows with each ejection,
    with at most `max_ejection_percent` of the workers ejected at once;
  * an engine restart is recognised by a new `instance_id` (a boot nonce in `/health` and in
    every event batch), never by comparing racing sequence numbers: its view is reset and
    re-synced from a snapshot.

`route()` builds the policy's `WorkerState` candidates from index overlaps and load views,
chooses, and records the decision (`record_route`, `on_route`). All mutation happens on the
event loop thread, so no locks are needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from agentctl.serving.events import AsyncZmqEventSubscriber, EventDecodeError
from agentctl.serving.router.index import BlockIndex, IndexStats
from agentctl.serving.router.load import LoadTracker
from agentctl.serving.router.overload import LoopLagMonitor
from agentctl.serving.router.policies import Decision, Policy, WorkerState
from agentctl.serving.router.router_metrics import RouterMetrics
from agentctl.serving.types import RequestSpec

__all__ = ["InFlight", "Registry", "Routed", "WorkerEntry"]

log = logging.getLogger(__name__)


class InFlight:
    """One request in flight on a worker: `abort` is set to make the forwarder give up on
    this worker (it then migrates the request); `progress_at` is when bytes last came."""

    __slots__ = ("abort", "progress_at", "request_id")

    def __init__(self, request_id: str, now: float) -> None:
        self.request_id = request_id
        self.abort = asyncio.Event()
        self.progress_at = now


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
    #: consecutive request-path failures (outlier detection); a success resets it
    request_failures: int = 0
    #: monotonic time until which outlier detection keeps the worker out (0: not ejected)
    ejected_until: float = 0.0
    ejections: int = 0
    #: the engine's boot nonce, from /health or its event batches (None: not told)
    instance_id: str | None = None
    #: waiting for a cache snapshot: events are held in `held_events` meanwhile
    syncing: bool = False
    held_events: list[tuple[int, Any]] = field(default_factory=list)
    events_received: int = 0
    last_event_lag_s: float | None = None
    resets: int = 0
    #: request id -> its in-flight record (abort event, progress time)
    inflight: dict[str, InFlight] = field(default_factory=dict)
    subscriber: AsyncZmqEventSubscriber | None = None
    event_task: asyncio.Task[None] | None = None
    probe_task: asyncio.Task[None] | None = None
    sync_task: asyncio.Task[None] | None = None

    def ejected(self, now: float) -> bool:
        return self.ejected_until > now

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
            "ejected": self.ejected(time.monotonic()),
            "ejections": self.ejections,
            "instance_id": self.instance_id,
            "kv_syncing": self.syncing,
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
        unhealthy_threshold: int = 3,
        stall_s: float = 3.0,
        eject_after: int = 5,
        eject_base_s: float = 5.0,
        eject_max_s: float = 60.0,
        max_ejection_percent: float = 50.0,
        snapshot_timeout_s: float = 5.0,
        overload_lag_s: float = 1.0,
    ) -> None:
        self.policy = policy
        self.block_size = block_size
        self.metrics = metrics
        self.health_interval_s = health_interval_s
        self.health_timeout_s = health_timeout_s
        self.replay_timeout_s = replay_timeout_s
        self.unhealthy_threshold = max(1, unhealthy_threshold)
        self.stall_s = stall_s
        self.eject_after = max(1, eject_after)
        self.eject_base_s = eject_base_s
        self.eject_max_s = eject_max_s
        self.max_ejection_percent = max_ejection_percent
        self.snapshot_timeout_s = snapshot_timeout_s
        #: the router's own event-loop lag: timeouts while it is high are not the workers'
        self.lag = LoopLagMonitor(threshold_s=overload_lag_s)
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
        """Start event subscriptions, cache snapshots and the health loop (inside a running
        event loop). Snapshots run in the background, bounded by `snapshot_timeout_s`."""
        # a separate pool from the forwarder's: health polls never queue behind streams
        self._client = httpx.AsyncClient(
            timeout=self.health_timeout_s,
            limits=httpx.Limits(max_connections=256, keepalive_expiry=2.0),
        )
        self._started = True
        self.lag.start()
        for w in self.workers.values():
            self._start_events(w)
        await self.poll_health()
        for w in self.workers.values():
            self._start_sync(w)
        self._health_task = asyncio.create_task(self._health_loop(), name="router-health")

    async def stop(self) -> None:
        self._started = False
        await self.lag.stop()
        if self._health_task is not None:
            self._health_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._health_task
        for w in list(self.workers.values()):
            await self._stop_tasks(w)
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
        self.metrics.worker_ejected.labels(worker_id).set(0)
        self.metrics.in_flight.labels(worker_id).set(0)
        if self._started:
            self._start_events(w)
            self._start_sync(w)
        return w

    async def remove(self, worker_id: str) -> WorkerEntry:
        """Forget a worker (`KeyError` if unknown). Its in-flight requests run to their end;
        the router simply stops accounting for them."""
        w = self.workers.pop(worker_id)
        w.removed = True
        await self._stop_tasks(w)
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
        """Fence `w`: no new requests; its stalled in-flight requests are aborted (migrated
        by the forwarder), those still making progress go on."""
        if w.healthy:
            log.warning("worker %s is down: %s", w.id, reason)
        w.healthy = False
        w.last_error = reason
        if not w.removed:
            self.metrics.worker_healthy.labels(w.id).set(0)
        self.abort_stalled(w, time.monotonic())

    def abort_stalled(self, w: WorkerEntry, now: float) -> int:
        """Abort `w`'s in-flight requests that got nothing for `stall_s`; how many."""
        n = 0
        for fl in w.inflight.values():
            if not fl.abort.is_set() and now - fl.progress_at >= self.stall_s:
                fl.abort.set()
                n += 1
        return n

    def _mark_up(self, w: WorkerEntry) -> None:
        if not w.healthy:
            log.warning("worker %s is back up", w.id)
        w.healthy = True
        w.last_error = None
        w.consecutive_failures = 0
        self.metrics.worker_healthy.labels(w.id).set(1)

    # ---------------------------------------------------------------- outlier detection

    def report_success(self, w: WorkerEntry) -> None:
        """A request reached `w` and got an answer: its failure streak ends."""
        w.request_failures = 0

    def report_failure(self, w: WorkerEntry, reason: str, *, timeout: bool = False) -> None:
        """A request could not reach `w` (nothing was answered). Probes `w` at once and
        ejects it after `eject_after` in a row, within `max_ejection_percent`. A timeout
        while the router's own loop lags is the router's fault and is not counted."""
        if w.removed or (timeout and self.lag.overloaded):
            return
        w.request_failures += 1
        w.last_error = reason
        self.probe(w)
        now = time.monotonic()
        if w.request_failures < self.eject_after or w.ejected(now):
            return
        ejected = sum(1 for x in self.workers.values() if x.ejected(now))
        if (ejected + 1) * 100 > self.max_ejection_percent * len(self.workers):
            return
        span = min(self.eject_max_s, self.eject_base_s * (2**w.ejections))
        w.ejected_until = now + span
        w.ejections += 1
        w.request_failures = 0
        self.metrics.ejections.labels(w.id).inc()
        self.metrics.worker_ejected.labels(w.id).set(1)
        log.warning("worker %s ejected for %.0f s: %s", w.id, span, reason)

    def _expire_ejections(self, now: float) -> None:
        for w in self.workers.values():
            if w.ejected_until and not w.ejected(now):
                w.ejected_until = 0.0
                self.metrics.worker_ejected.labels(w.id).set(0)
                log.warning("worker %s back in rotation after ejection", w.id)

    def probe(self, w: WorkerEntry) -> None:
        """Check `w`'s health now, in the background (one probe at a time per worker)."""
        if not self._started or (w.probe_task is not None and not w.probe_task.done()):
            return
        w.probe_task = asyncio.create_task(self._check(w), name=f"router-probe-{w.id}")

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
                    healthy=w.healthy and not w.ejected(now),
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

    def begin(self, w: WorkerEntry, request_id: str) -> InFlight:
        """Track an in-flight request; its `abort` is set if `w` is down and it stalls."""
        fl = InFlight(request_id, time.monotonic())
        w.inflight[request_id] = fl
        if not w.removed:
            self.metrics.in_flight.labels(w.id).set(len(w.inflight))
        return fl

    def in_flight(self) -> int:
        return sum(len(w.inflight) for w in self.workers.values())

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
                self._expire_ejections(now)
                for w in self.workers.values():
                    if not w.healthy:
                        self.abort_stalled(w, now)
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
        definitive = False
        try:
            try:
                r = await self._client.get(w.url + "/health", timeout=self.health_timeout_s)
            except httpx.ConnectError:
                definitive = True  # nothing listens: the process is gone
                raise
            if r.status_code != 200:
                definitive = True  # the worker itself says it cannot serve
                raise RuntimeError(f"/health answered {r.status_code}")
            # vLLM answers an empty 200; agentctl's worker a JSON object of engine counts
            body = r.json() if r.content.strip() else {}
            if not isinstance(body, dict):
                raise RuntimeError("/health body is not an object")
        except Exception as exc:
            if w.removed:
                return
            if isinstance(exc, httpx.TimeoutException) and self.lag.overloaded:
                return  # our own loop was late, not the worker
            w.consecutive_failures += 1
            reason = f"health check failed: {type(exc).__name__}: {exc}"
            if definitive or w.consecutive_failures >= self.unhealthy_threshold:
                self.mark_down(w, reason)
            else:
                w.last_error = reason
            return
        if w.removed:
            return
        now = time.monotonic()
        w.last_health, w.last_health_at = body, now
        self._note_instance(w, body.get("instance_id"))
        self._mark_up(w)
        self.load.on_engine_report(
            w.id,
            _int(body.get("num_requests_running")),
            _int(body.get("num_requests_waiting")),
            _float(body.get("kv_cache_usage_perc")),
            now,
        )

    def _note_instance(self, w: WorkerEntry, instance: object) -> None:
        """A new boot nonce means the engine restarted: its cache is empty, re-sync it."""
        if not isinstance(instance, str) or not instance:
            return
        if w.instance_id is None:
            w.instance_id = instance
            return
        if instance == w.instance_id:
            return
        log.warning(
            "worker %s restarted (instance %s -> %s): resetting its view",
            w.id,
            w.instance_id,
            instance,
        )
        w.instance_id = instance
        w.resets += 1
        self.metrics.restarts.labels(w.id).inc()
        self.metrics.event_resets.labels(w.id).inc()
        if w.publishes_events:
            self.index.reset_worker(w.id, next_seq=0)
            if w.sync_task is not None and not w.sync_task.done():
                w.sync_task.cancel()
            w.sync_task = None
            self._start_sync(w)

    # ---------------------------------------------------------------- cache snapshots

    def _start_sync(self, w: WorkerEntry) -> None:
        if not w.publishes_events or not self._started or w.removed:
            return
        if w.sync_task is not None and not w.sync_task.done():
            return
        w.syncing = True
        w.sync_task = asyncio.create_task(self._sync(w), name=f"router-sync-{w.id}")

    async def _sync(self, w: WorkerEntry) -> None:
        """Load `w`'s cache snapshot into the index, then the events held meanwhile."""
        assert self._client is not None
        outcome = "failed"
        try:
            r = await self._client.get(w.url + "/kv/snapshot", timeout=self.snapshot_timeout_s)
            if r.status_code in (404, 405):
                outcome = "unsupported"  # an engine without snapshots: replay covers it
            elif r.status_code == 200:
                snap = _parse_snapshot(r.json())
                if snap is not None and not w.removed:
                    blocks, next_seq, instance = snap
                    if instance is not None:
                        self._note_instance(w, instance)
                    self.index.load_snapshot(w.id, blocks, next_seq)
                    outcome = "ok"
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("KV snapshot from %s failed: %s", w.id, exc)
        finally:
            if not w.removed:
                self.metrics.snapshots.labels(w.id, outcome).inc()
                held, w.held_events = w.held_events, []
                w.syncing = False
                for seq, batch in held:
                    await self._apply_batch(w, seq, batch)

    # ---------------------------------------------------------------- KV events

    def _start_events(self, w: WorkerEntry) -> None:
        if w.events is None or w.event_task is not None:
            return
        w.subscriber = AsyncZmqEventSubscriber(w.events, w.replay, w.topic)
        w.event_task = asyncio.create_task(self._event_loop(w), name=f"router-events-{w.id}")

    async def _stop_tasks(self, w: WorkerEntry) -> None:
        tasks = [w.event_task, w.probe_task, w.sync_task]
        w.event_task = w.probe_task = w.sync_task = None
        for task in tasks:
            if task is not None and not task.done():
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
            self._note_instance(w, getattr(batch, "instance_id", None))
            if w.syncing:
                if len(w.held_events) < _MAX_HELD_EVENTS:
                    w.held_events.append((seq, batch))
                continue
            await self._apply_batch(w, seq, batch)

    async def _apply_batch(self, w: WorkerEntry, seq: int, batch: Any) -> None:
        gap = self.index.apply(w.id, seq, batch.events, time.monotonic())
        if gap is not None and w.subscriber is not None:
            self.metrics.event_gaps.labels(w.id).inc()
            await self._fill_gap(w, w.subscriber, gap.first_missing)

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


#: events held while a snapshot is fetched; past this the rest is lost to replay or reset
_MAX_HELD_EVENTS = 65536


def _parse_snapshot(doc: object) -> tuple[list[int], int, str | None] | None:
    """`(block hashes parent-first, next_seq, instance_id)` from a `/kv/snapshot` body, or
    None when it is not one (a hostile or broken worker loses nothing but the snapshot)."""
    if not isinstance(doc, dict):
        return None
    nxt = doc.get("next_seq")
    blocks = doc.get("blocks")
    if isinstance(nxt, bool) or not isinstance(nxt, int) or nxt < 0:
        return None
    if not isinstance(blocks, list):
        return None
    out: list[int] = []
    for b in blocks:
        h = b[0] if isinstance(b, list) and b else b
        if isinstance(h, bool) or not isinstance(h, int):
            return None
        out.append(h % (1 << 64))
    instance = doc.get("instance_id")
    return out, nxt, instance if isinstance(instance, str) else None


def _int(v: object) -> int:
    return v if isinstance(v, int) and not isinstance(v, bool) else 0


def _float(v: object) -> float:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else 0.0
