"""The router's Prometheus metrics, in their own `CollectorRegistry` (never the global one, so
several routers can live in one process).

Names start with `agentctl_router_`. Per decision: requests by worker and policy, decision
latency, predicted hit blocks (and the index layer that produced the hit). Per worker: health,
in-flight requests, KV events applied, event lag, gaps, replays and resets. Index sizes per layer
are gauges set when `/metrics` is scraped.
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from agentctl.serving.router.index import IndexStats

__all__ = ["CONTENT_TYPE_LATEST", "RouterMetrics"]

_DECISION_BUCKETS = (
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05, 0.1,
)  # fmt: skip
_BLOCK_BUCKETS = (0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
_ADDED_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
_TTFT_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0,
)  # fmt: skip


class RouterMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        p = "agentctl_router_"
        self.requests = Counter(
            p + "requests",
            "Requests routed, by worker, policy and outcome (ok, error, aborted).",
            ["worker", "policy", "outcome"],
            registry=r,
        )
        self.rejected = Counter(
            p + "rejected_requests",
            "Requests refused before routing, by HTTP status.",
            ["status"],
            registry=r,
        )
        self.decision_seconds = Histogram(
            p + "decision_seconds",
            "Time to build candidates and choose a worker.",
            ["policy"],
            buckets=_DECISION_BUCKETS,
            registry=r,
        )
        self.predicted_hit_blocks = Histogram(
            p + "predicted_hit_blocks",
            "Leading prompt blocks the index predicted cached on the chosen worker.",
            ["policy", "layer"],
            buckets=_BLOCK_BUCKETS,
            registry=r,
        )
        self.ttft_seconds = Histogram(
            p + "time_to_first_chunk_seconds",
            "From routing to the first generated chunk relayed (streaming) or the response.",
            ["worker"],
            buckets=_TTFT_BUCKETS,
            registry=r,
        )
        self.added_latency = Histogram(
            p + "added_latency_seconds",
            "The router's own share of a request's time to first token: from its body read to "
            "its send to the worker (parse, tokenize, hash, route), plus from the first token "
            "received to it relayed.",
            buckets=_ADDED_BUCKETS,
            registry=r,
        )
        self.forward_errors = Counter(
            p + "forward_errors",
            "Failed forwards, by worker and kind (connect, upstream, aborted, timeout).",
            ["worker", "kind"],
            registry=r,
        )
        self.worker_healthy = Gauge(
            p + "worker_healthy", "1 if the worker passes its health check.", ["worker"], registry=r
        )
        self.worker_draining = Gauge(
            p + "worker_draining", "1 if the worker is draining.", ["worker"], registry=r
        )
        self.in_flight = Gauge(
            p + "in_flight_requests", "Requests in flight per worker.", ["worker"], registry=r
        )
        self.events = Counter(
            p + "kv_event_batches", "KV event batches received.", ["worker"], registry=r
        )
        self.event_lag = Gauge(
            p + "kv_event_lag_seconds",
            "Receive time minus publish timestamp of the latest KV event batch.",
            ["worker"],
            registry=r,
        )
        self.event_gaps = Counter(
            p + "kv_event_gaps", "Sequence gaps detected in KV events.", ["worker"], registry=r
        )
        self.event_replays = Counter(
            p + "kv_event_replays",
            "Replay requests for missing KV events, by result (ok, failed).",
            ["worker", "result"],
            registry=r,
        )
        self.event_resets = Counter(
            p + "kv_event_resets",
            "Resets of a worker's view (replay failed, or the engine restarted).",
            ["worker"],
            registry=r,
        )
        self.event_errors = Counter(
            p + "kv_event_errors", "Undecodable KV event messages.", ["worker"], registry=r
        )
        self.index_blocks = Gauge(
            p + "index_blocks", "Blocks held by the block index, per layer.", ["layer"], registry=r
        )
        self.index_hashes = Gauge(
            p + "index_distinct_hashes", "Distinct hashes in the index's layers.", registry=r
        )
        self.index_pending = Gauge(
            p + "index_pending_events", "Events held after a gap.", registry=r
        )
        self.workers = Gauge(p + "workers", "Registered workers.", registry=r)
        self.migrations = Counter(
            p + "migrations",
            "Requests moved to another worker after theirs failed, by reason (a stream "
            "continued from the tokens already relayed, or a request re-sent before any).",
            ["reason"],
            registry=r,
        )
        self.retries = Counter(
            p + "retries",
            "Requests re-routed before any answer reached the client, by reason.",
            ["reason"],
            registry=r,
        )
        self.ejections = Counter(
            p + "ejections",
            "Outlier ejections: a worker taken out of rotation after consecutive request "
            "failures, for a growing time.",
            ["worker"],
            registry=r,
        )
        self.worker_ejected = Gauge(
            p + "worker_ejected",
            "1 while the worker is ejected by outlier detection.",
            ["worker"],
            registry=r,
        )
        self.shed = Counter(
            p + "shed_requests",
            "Requests refused with 503 and Retry-After at the admission limit.",
            registry=r,
        )
        self.snapshots = Counter(
            p + "kv_snapshots",
            "Worker cache snapshots fetched to rebuild the index, by outcome.",
            ["worker", "outcome"],
            registry=r,
        )
        self.restarts = Counter(
            p + "worker_restarts",
            "Engine restarts seen (a new instance id): the worker's view was reset.",
            ["worker"],
            registry=r,
        )

    def observe_index(self, stats: IndexStats) -> None:
        self.index_blocks.labels("confirmed").set(stats.confirmed_blocks)
        self.index_blocks.labels("predicted").set(stats.predicted_blocks)
        self.index_blocks.labels("approximate").set(stats.approximate_blocks)
        self.index_hashes.set(stats.distinct_hashes)
        self.index_pending.set(stats.pending_events)
        self.workers.set(stats.workers)

    def forget_worker(self, worker: str) -> None:
        """Drop a removed worker's per-worker gauges (counters keep their history)."""
        for g in (
            self.worker_healthy,
            self.worker_draining,
            self.worker_ejected,
            self.in_flight,
            self.event_lag,
        ):
            with contextlib.suppress(KeyError):
                g.remove(worker)

    def render(self) -> bytes:
        return generate_latest(self.registry)
