"""Serving samples from successive `/metrics` scrapes of engine workers (vLLM's metric names)
and of the router (`agentctl_router_*`).

Rates and latency quantiles are over the interval between two scrapes of the same endpoint:
counter and histogram-bucket deltas, with a counter that went down read as a restart (the delta
is then the new value). `ScrapeState` keeps each endpoint's previous scrape, so a collector
calls it once per endpoint per tick. The first scrape of an endpoint (and one after a restart)
covers everything since the process started, flagged `since_start`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from agentctl.collectors.serving.promtext import (
    Exposition,
    Histogram,
    counter_delta,
    histogram_delta,
    histogram_quantile,
    parse,
)

__all__ = [
    "ITL",
    "KV_USAGE",
    "PREFIX_HITS",
    "PREFIX_QUERIES",
    "REQUESTS_RUNNING",
    "REQUESTS_WAITING",
    "TTFT",
    "Quantiles",
    "RouterSample",
    "RouterWorker",
    "ScrapeState",
    "ServingSample",
    "quantiles",
    "router_sample",
    "worker_sample",
]

PREFIX_QUERIES = "vllm:prefix_cache_queries_total"
PREFIX_HITS = "vllm:prefix_cache_hits_total"
TTFT = "vllm:time_to_first_token_seconds"
ITL = "vllm:inter_token_latency_seconds"
REQUESTS_RUNNING = "vllm:num_requests_running"
REQUESTS_WAITING = "vllm:num_requests_waiting"
KV_USAGE = "vllm:kv_cache_usage_perc"

_R = "agentctl_router_"
_WORKER_COUNTERS = (PREFIX_QUERIES, PREFIX_HITS)
_WORKER_HISTOGRAMS = (TTFT, ITL)


@dataclass(frozen=True)
class Quantiles:
    """Latency quantiles (seconds) over `count` observations in the interval."""

    count: float
    p50: float
    p90: float
    p99: float


def quantiles(hist: Histogram | None) -> Quantiles | None:
    """p50/p90/p99 of a (delta) histogram; None when it holds no observations."""
    if hist is None:
        return None
    values = [histogram_quantile(hist.buckets, q) for q in (0.5, 0.9, 0.99)]
    if any(math.isnan(v) for v in values):
        return None
    total = hist.buckets[-1][1] if hist.buckets else hist.count
    return Quantiles(total, *values)


@dataclass(frozen=True)
class ServingSample:
    """One engine worker over one scrape interval. None means N/A (not exposed, or no
    traffic: a hit rate with no queries is N/A, never 0)."""

    endpoint: str
    at: float
    interval_s: float | None
    since_start: bool
    requests_running: float | None
    requests_waiting: float | None
    kv_cache_usage: float | None  # fraction in [0, 1], as vLLM
    prefix_queries: float | None  # tokens queried in the interval
    prefix_hits: float | None
    kv_hit_rate: float | None
    ttft: Quantiles | None
    itl: Quantiles | None


@dataclass(frozen=True)
class RouterWorker:
    """The router's view of one worker over the interval."""

    in_flight: float | None
    healthy: bool | None
    draining: bool | None
    requests: float  # routed in the interval, any outcome
    errors: float  # outcome other than ok
    share: float | None  # of all requests routed in the interval


@dataclass(frozen=True)
class RouterSample:
    endpoint: str
    at: float
    interval_s: float | None
    since_start: bool
    requests: float
    rejected: float
    workers: dict[str, RouterWorker] = field(default_factory=dict)


def _restarted(prev: Exposition | None, cur: Exposition, counters: tuple[str, ...]) -> bool:
    if prev is None:
        return True
    for name in counters:
        before, now = prev.value(name), cur.value(name)
        if before is not None and now is not None and now < before:
            return True
    return False


def worker_sample(
    endpoint: str,
    cur: Exposition,
    prev: Exposition | None,
    *,
    at: float,
    interval_s: float | None = None,
) -> ServingSample:
    """A worker's sample from its current and previous scrape (None: the first)."""
    hist_counts = tuple(h + "_count" for h in _WORKER_HISTOGRAMS)
    since_start = _restarted(prev, cur, _WORKER_COUNTERS + hist_counts)
    base = None if since_start else prev

    def delta(name: str) -> float | None:
        now = cur.value(name)
        if now is None:
            return None
        return counter_delta(base.value(name) if base is not None else None, now)

    def hist(name: str) -> Histogram | None:
        now = cur.histogram(name)
        if now is None:
            return None
        return histogram_delta(base.histogram(name) if base is not None else None, now)

    queries, hits = delta(PREFIX_QUERIES), delta(PREFIX_HITS)
    hit_rate = hits / queries if queries and hits is not None else None
    return ServingSample(
        endpoint=endpoint,
        at=at,
        interval_s=None if since_start else interval_s,
        since_start=since_start,
        requests_running=cur.value(REQUESTS_RUNNING),
        requests_waiting=cur.value(REQUESTS_WAITING),
        kv_cache_usage=cur.value(KV_USAGE),
        prefix_queries=queries,
        prefix_hits=hits,
        kv_hit_rate=hit_rate,
        ttft=quantiles(hist(TTFT)),
        itl=quantiles(hist(ITL)),
    )


def _by_worker(exp: Exposition | None, name: str, **selector: str) -> dict[str, float]:
    out: dict[str, float] = {}
    if exp is None:
        return out
    for s in exp.samples(name, selector):
        w = s.label("worker")
        if w is not None:
            out[w] = out.get(w, 0.0) + s.value
    return out


def router_sample(
    endpoint: str,
    cur: Exposition,
    prev: Exposition | None,
    *,
    at: float,
    interval_s: float | None = None,
) -> RouterSample:
    """The router's per-worker in-flight, health and requests routed over the interval."""
    requests, rejected = _R + "requests_total", _R + "rejected_requests_total"
    since_start = _restarted(prev, cur, (requests, rejected))
    base = None if since_start else prev
    total_now, total_before = _by_worker(cur, requests), _by_worker(base, requests)
    ok_now, ok_before = (
        _by_worker(cur, requests, outcome="ok"),
        _by_worker(base, requests, outcome="ok"),
    )
    in_flight = _by_worker(cur, _R + "in_flight_requests")
    healthy = _by_worker(cur, _R + "worker_healthy")
    draining = _by_worker(cur, _R + "worker_draining")
    names = sorted(set(total_now) | set(in_flight) | set(healthy))
    routed = {w: counter_delta(total_before.get(w), total_now.get(w, 0.0)) for w in names}
    ok = {w: counter_delta(ok_before.get(w), ok_now.get(w, 0.0)) for w in names}
    all_routed = math.fsum(routed.values())
    workers = {
        w: RouterWorker(
            in_flight=in_flight.get(w),
            healthy=bool(healthy[w]) if w in healthy else None,
            draining=bool(draining[w]) if w in draining else None,
            requests=routed[w],
            errors=max(routed[w] - ok[w], 0.0),
            share=routed[w] / all_routed if all_routed else None,
        )
        for w in names
    }
    rej_now = cur.value(rejected) or 0.0
    rej_before = base.value(rejected) if base is not None else None
    return RouterSample(
        endpoint=endpoint,
        at=at,
        interval_s=None if since_start else interval_s,
        since_start=since_start,
        requests=all_routed,
        rejected=counter_delta(rej_before, rej_now),
        workers=workers,
    )


@dataclass
class _Previous:
    exposition: Exposition
    at: float


class ScrapeState:
    """The previous scrape per endpoint: feed it each new scrape, get the interval's sample.

    `fetch(endpoint) -> metrics text` is injected (see `fetch.metrics_fetcher`): over plain
    TCP, or through an SSH forward, without this package knowing which.
    """

    def __init__(
        self,
        fetch: Callable[[str], str] | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._previous: dict[str, _Previous] = {}

    def _advance(
        self, endpoint: str, text: str, at: float | None
    ) -> tuple[Exposition, _Previous | None, float]:
        cur = parse(text)
        when = self._clock() if at is None else at
        prev = self._previous.get(endpoint)
        self._previous[endpoint] = _Previous(cur, when)
        return cur, prev, when

    def worker(self, endpoint: str, text: str, *, at: float | None = None) -> ServingSample:
        cur, prev, when = self._advance(endpoint, text, at)
        return worker_sample(
            endpoint,
            cur,
            prev.exposition if prev else None,
            at=when,
            interval_s=when - prev.at if prev else None,
        )

    def router(self, endpoint: str, text: str, *, at: float | None = None) -> RouterSample:
        cur, prev, when = self._advance(endpoint, text, at)
        return router_sample(
            endpoint,
            cur,
            prev.exposition if prev else None,
            at=when,
            interval_s=when - prev.at if prev else None,
        )

    def scrape_worker(self, endpoint: str) -> ServingSample:
        return self.worker(endpoint, self._fetched(endpoint))

    def scrape_router(self, endpoint: str) -> RouterSample:
        return self.router(endpoint, self._fetched(endpoint))

    def _fetched(self, endpoint: str) -> str:
        if self._fetch is None:
            raise RuntimeError("this ScrapeState was built without a fetch function")
        return self._fetch(endpoint)

    def forget(self, endpoint: str) -> None:
        self._previous.pop(endpoint, None)

    def __contains__(self, endpoint: str) -> bool:
        return endpoint in self._previous
