"""Live replay (`--mode live`): the real router and worker processes on loopback, wall clock.

Same workload `Driver` and the same policy code as `--mode sim`, but every request is an HTTP
streaming completion sent to a router process (`LocalCluster`) that routes it to simulated
engine worker processes by their published KV events. It measures what the simulator cannot:
HTTP and SSE overhead, event propagation delay, health-poll lag, the router's real event loop.

Time. The whole replay runs `time_scale` times real time: the workers' cost model is scaled by
it and so are think times and arrival gaps; every time is reported divided by it (trace time),
so a live run at `time_scale` 0.2 is comparable with a sim run at 1.0. Keep it large enough that
Python's own overhead (the engines step in an asyncio loop) stays small next to the scaled step
times; the result's `extra.lag_ms_p99` (how late requests were sent, trace ms) says whether the
client kept up.

Each request sends the trace's engine block hashes (`block_hashes` + `prompt_tokens`), the
session id (`nvext.session_control`) and `max_tokens`, streams the answer, and records the
first token's and the end's arrival. The hit rate comes from the engines' own counters
(`/health`: `prefix_cache_queries` / `prefix_cache_hits`); a request the stack refuses or
fails counts as rejected, with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from agentctl.serving.bench.metrics import (
    OracleCache,
    PolicyResult,
    RequestRecord,
    WorkerTotals,
    percentile,
    summarize,
)
from agentctl.serving.bench.workload import Driver, Workload
from agentctl.serving.cluster import ClusterSpec, LocalCluster
from agentctl.serving.engine import EngineConfig
from agentctl.serving.types import RequestSpec

__all__ = ["LiveOptions", "replay", "run_live"]

WORKER_HEADER = "x-agentctl-worker"


@dataclass(frozen=True)
class LiveOptions:
    """Knobs of a live replay beyond the workload and the cluster shape."""

    #: wall seconds per trace second (also the workers' cost-model time scale)
    time_scale: float = 1.0
    #: stop sending new requests after this many wall seconds (requests in flight finish)
    max_wall_s: float = math.inf
    #: longest a single request may take, wall seconds
    request_timeout_s: float = 600.0
    #: whether workers publish KV events (False: the router's approximate layer only)
    events: bool = True


@dataclass
class _Run:
    """The mutable state of one replay, shared by the scheduler and the request tasks."""

    driver: Driver
    t0: float
    scale: float
    heap: list[tuple[float, int, int]]
    wake: asyncio.Event
    records: list[RequestRecord]
    lags: list[float]
    counter: int = 0
    in_flight: int = 0

    def clock(self) -> float:
        """Trace seconds since the start."""
        return (time.monotonic() - self.t0) / self.scale

    def push(self, arrivals: list[tuple[float, int]]) -> None:
        for t, ticket in arrivals:
            self.counter += 1
            heapq.heappush(self.heap, (t, self.counter, ticket))
        if arrivals:
            self.wake.set()


def request_body(spec: RequestSpec, model: str = "agentctl-sim") -> dict[str, Any]:
    """The completion request a trace row becomes (agentctl's trace-replay extension)."""
    body: dict[str, Any] = {
        "model": model,
        "block_hashes": list(spec.block_hashes),
        "prompt_tokens": spec.prompt_tokens,
        "max_tokens": spec.max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if spec.session_id is not None:
        body["nvext"] = {"session_control": {"session_id": spec.session_id}}
    return body


async def _send(
    client: httpx.AsyncClient, run: _Run, spec: RequestSpec, rec: RequestRecord
) -> None:
    """Stream one completion, filling in `rec` (trace times); never raises for the stack's
    failures, which are recorded as rejections with their reason."""
    try:
        async with client.stream("POST", "/v1/completions", json=request_body(spec)) as r:
            rec.worker = r.headers.get(WORKER_HEADER)
            if r.status_code != 200:
                raw = await r.aread()
                rec.rejected = True
                rec.reject_reason = f"HTTP {r.status_code}: {_error_message(raw)}"
                return
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    break
                obj = json.loads(data)
                if "error" in obj:
                    rec.rejected = True
                    rec.reject_reason = "stream error: " + _error_message(data.encode())
                    return
                choices = obj.get("choices")
                if choices and choices[0].get("text") and rec.first_token_s is None:
                    rec.first_token_s = run.clock()
                usage = obj.get("usage")
                if usage:
                    details = usage.get("prompt_tokens_details") or {}
                    rec.cached_tokens = int(details.get("cached_tokens") or 0)
            if rec.first_token_s is None:
                rec.rejected = True
                rec.reject_reason = "stream ended without output"
                return
            rec.finish_s = run.clock()
    except (httpx.HTTPError, ValueError) as exc:
        rec.rejected = True
        rec.reject_reason = f"{type(exc).__name__}: {exc}"


def _error_message(raw: bytes) -> str:
    try:
        obj = json.loads(raw)
        return str(obj["error"]["message"])[:200]
    except (ValueError, KeyError, TypeError):
        return raw[:200].decode("utf-8", "replace")


async def replay(
    workload: Workload,
    router_url: str,
    *,
    time_scale: float = 1.0,
    max_wall_s: float = math.inf,
    request_timeout_s: float = 600.0,
    oracle: OracleCache | None = None,
    progress: Callable[[float, int, int], None] | None = None,
) -> tuple[list[RequestRecord], list[float]]:
    """Send `workload` to the router at `router_url` on the wall clock; return the request
    records and how late each request was sent (trace seconds). `oracle` observes every
    request's prompt."""
    if not time_scale > 0:
        raise ValueError("time_scale must be > 0")
    run = _Run(Driver(workload), time.monotonic(), time_scale, [], asyncio.Event(), [], [])
    run.push(run.driver.start())
    tasks: set[asyncio.Task[None]] = set()
    stop_at = time.monotonic() + max_wall_s
    timeout = httpx.Timeout(connect=10.0, read=request_timeout_s, write=30.0, pool=None)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=1024)
    finished = 0

    def on_done(task: asyncio.Task[None], spec: RequestSpec, rec: RequestRecord) -> None:
        nonlocal finished
        tasks.discard(task)
        run.in_flight -= 1
        finished += 1
        end = rec.finish_s if rec.finish_s is not None else run.clock()
        run.push(run.driver.done(spec.request_id, end))
        run.wake.set()

    async with httpx.AsyncClient(base_url=router_url, timeout=timeout, limits=limits) as client:
        while True:
            now = run.clock()
            while run.heap and run.heap[0][0] <= now and time.monotonic() < stop_at:
                due, _, ticket = heapq.heappop(run.heap)
                got = run.driver.issue(ticket, due)
                if isinstance(got, list):  # a sub-agent session starts
                    run.push(got)
                    continue
                spec = got
                sent = run.clock()
                run.lags.append(max(0.0, sent - due))
                rec = RequestRecord(
                    request_id=spec.request_id,
                    arrival_s=sent,
                    prompt_tokens=spec.prompt_tokens,
                    output_tokens=spec.max_tokens,
                    session_id=spec.session_id,
                )
                run.records.append(rec)
                if oracle is not None:
                    oracle.observe(spec.block_hashes, spec.prompt_tokens)
                run.in_flight += 1
                task = asyncio.create_task(_send(client, run, spec, rec))
                tasks.add(task)
                task.add_done_callback(functools.partial(on_done, spec=spec, rec=rec))
                if progress is not None and len(run.records) % 256 == 0:
                    progress(now, len(run.records), finished)
            if time.monotonic() >= stop_at:
                run.heap.clear()
            if not run.heap and run.in_flight == 0:
                break
            wait: float | None = None
            if run.heap:
                wait = max(0.0, run.heap[0][0] * time_scale + run.t0 - time.monotonic())
                wait = min(wait, max(0.0, stop_at - time.monotonic()))
            run.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(run.wake.wait(), timeout=wait)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
    return run.records, run.lags


def _totals(worker_urls: Mapping[str, str]) -> dict[str, WorkerTotals]:
    out: dict[str, WorkerTotals] = {}
    for name, url in worker_urls.items():
        h = httpx.get(url + "/health", timeout=10.0).json()
        out[name] = WorkerTotals(
            prefix_cache_queries=int(h["prefix_cache_queries"]),
            prefix_cache_hits=int(h["prefix_cache_hits"]),
            prefill_tokens=int(h["prefill_tokens_total"]),
            preemptions=int(h["num_preemptions"]),
        )
    return out


def run_live(
    workload: Workload,
    *,
    policy_name: str,
    workers: int = 2,
    engine_config: EngineConfig | None = None,
    seed: int = 0,
    policy_opts: Mapping[str, Any] | None = None,
    options: LiveOptions | None = None,
    keep_records: bool = False,
) -> PolicyResult:
    """Start a fresh cluster routed by `policy_name`, replay `workload` through it, stop it.

    A fresh cluster per policy: every policy starts from empty caches, as in `--mode sim`."""
    opts = options or LiveOptions()
    cfg = engine_config or EngineConfig()
    popts: dict[str, Any] = {"seed": seed} if policy_name in ("kv", "dynamo") else {}
    popts.update(policy_opts or {})
    spec = ClusterSpec(
        workers=workers,
        policy=policy_name,
        policy_options=popts,
        time_scale=opts.time_scale,
        capacity_blocks=cfg.capacity_blocks,
        block_size=cfg.block_size,
        max_num_batched_tokens=cfg.max_num_batched_tokens,
        events=opts.events,
    )
    wall0 = time.perf_counter()
    cpu0 = time.process_time()
    oracle = OracleCache(cfg.block_size)
    with LocalCluster(spec) as cluster:
        records, lags = asyncio.run(
            replay(
                workload,
                cluster.router_url,
                time_scale=opts.time_scale,
                max_wall_s=opts.max_wall_s,
                request_timeout_s=opts.request_timeout_s,
                oracle=oracle,
            )
        )
        totals = _totals(cluster.worker_urls)
    failed = sum(1 for r in records if r.rejected and not r.reject_reason.startswith("HTTP 4"))
    extra = {
        "issued": float(len(records)),
        "failed": float(failed),
        "time_scale": opts.time_scale,
        "lag_ms_p50": 1000.0 * percentile(lags, 50) if lags else 0.0,
        "lag_ms_p99": 1000.0 * percentile(lags, 99) if lags else 0.0,
        "preemptions": float(sum(t.preemptions for t in totals.values())),
    }
    return summarize(
        policy_name,
        records,
        workers=list(totals),
        oracle_hit_rate=oracle.hit_rate,
        totals=totals,
        extra=extra,
        wall_s=time.perf_counter() - wall0,
        cpu_s=time.process_time() - cpu0,
        keep_records=keep_records,
    )
