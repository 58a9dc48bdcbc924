"""`bench soak`: the serving stack under load, faults and bad input, on loopback, on demand.

Each scenario starts its own `LocalCluster` (real router and worker processes, fresh caches),
drives it from one asyncio client and returns a `ScenarioResult`: its figures and whether it met
its bar (issue 14):

- ramp: bounded concurrency ramps of small chat streams; per level ok / failed / truncated /
  shed / migrated, client TTFT and the router's added latency. Added latency compares
  *distributions*: the client's TTFT percentile minus the engines' TTFT percentile from their
  `vllm:time_to_first_token_seconds` histograms (deltas over the level, all workers, linear
  interpolation inside buckets), so it is approximate to a bucket's width and not per request.
- kill: 64 streams in flight, SIGKILL one worker, SIGSTOP another for `stop_s` then SIGCONT;
  bar: nothing failed or truncated, and the stopped worker back in rotation.
- poison: one ~4.8 MiB legal prompt while 6 lanes of streams run; bar: none of their streams
  fails, no worker reported down.
- restart: the router SIGTERMed with 32 streams in flight and started again on its port; no
  new request until its index is checked (so only the workers' state can refill it); bar: the
  index's `confirmed_blocks` back to 90% of its value before within `restart_wait_s`, and
  nothing failed or truncated, in flight at SIGTERM or in the load afterwards.
- slowloris: connections sending partial headers to the router and a worker; bar: the servers
  closed all of them, and normal requests were served meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from agentctl.serving.bench.soak_client import (
    HealthWatch,
    chat_body,
    make_client,
    run_bounded,
    scrape,
    slowloris,
    stream_chat,
)
from agentctl.serving.bench.soak_stats import (
    Outcome,
    OutcomeCounts,
    StreamResult,
    histogram_buckets,
    histogram_delta,
    histogram_quantile,
    metric_value,
    percentile,
)
from agentctl.serving.cluster import ClusterSpec, LocalCluster

__all__ = ["SCENARIOS", "ScenarioResult", "SoakOptions", "run_scenario"]

ENGINE_TTFT = "vllm:time_to_first_token_seconds"
MIGRATIONS = "agentctl_router_migrations_total"
ADDED_LATENCY_METHOD = (
    "client TTFT percentile minus engine TTFT percentile (vllm:time_to_first_token_seconds "
    "histogram deltas over the level, all workers, interpolated in buckets); not per request"
)


@dataclass(frozen=True)
class SoakOptions:
    workers: int = 3
    time_scale: float = 1.0
    concurrency: tuple[int, ...] = (64, 500, 2000)
    #: requests per ramp level, as a multiple of its concurrency
    requests_factor: int = 3
    ramp_max_tokens: int = 16
    kill_streams: int = 64
    stop_s: float = 20.0
    poison_mib: float = 4.8
    poison_streams: int = 6
    restart_wait_s: float = 30.0
    slowloris_s: float = 45.0
    slowloris_conns: int = 1500
    log_level: str = "warning"


@dataclass
class ScenarioResult:
    """One scenario's figures. `rows` feed the table (one per ramp level, one otherwise)."""

    name: str
    passed: bool
    bar: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "scenario": self.name,
            "passed": self.passed,
            "bar": self.bar,
            "rows": self.rows,
            "figures": self.figures,
            "error": self.error,
        }


def _ms(x: float) -> float | None:
    return None if math.isnan(x) else round(1000.0 * x, 1)


def _prompt(i: int, words: int = 8) -> str:
    return f"soak request {i}: " + " ".join(f"w{(i * 7 + k) % 997}" for k in range(words))


def _cluster(opts: SoakOptions) -> LocalCluster:
    return LocalCluster(
        ClusterSpec(workers=opts.workers, time_scale=opts.time_scale, log_level=opts.log_level)
    )


async def _migrations(client: httpx.AsyncClient, router: str) -> float | None:
    return metric_value(await scrape(client, router), MIGRATIONS)


#: the router's own measure of its share of each request's TTFT (serving/router/proxy.py)
ROUTER_ADDED = "agentctl_router_added_latency_seconds"


async def _router_added(client: httpx.AsyncClient, router: str) -> dict[float, float]:
    return histogram_buckets(await scrape(client, router), ROUTER_ADDED)


async def _engine_ttft(client: httpx.AsyncClient, workers: list[str]) -> dict[float, float]:
    texts = await asyncio.gather(*(scrape(client, u) for u in workers))
    return histogram_buckets("\n".join(t for t in texts if t), ENGINE_TTFT)


def _counts_row(results: list[StreamResult], **extra: Any) -> dict[str, Any]:
    counts = OutcomeCounts.of(results)
    ttfts = [r.ttft_s for r in results if r.outcome is Outcome.OK and r.ttft_s is not None]
    return {
        **counts.to_json(),
        "client_ttft_ms_p50": _ms(percentile(ttfts, 50)),
        "client_ttft_ms_p99": _ms(percentile(ttfts, 99)),
        **extra,
    }


def _down_lines(cluster: LocalCluster) -> int:
    """How many times the router logged a worker down (`Registry.mark_down`)."""
    if cluster.router is None:
        return 0
    try:
        text = cluster.router.log.read_text(errors="replace")
    except OSError:
        return 0
    return sum(1 for line in text.splitlines() if " is down" in line)


# ---- ramp -----------------------------------------------------------------------------------


async def _ramp(cluster: LocalCluster, opts: SoakOptions) -> ScenarioResult:
    router = cluster.router_url
    workers = list(cluster.worker_urls.values())
    rows: list[dict[str, Any]] = []
    async with make_client() as client:
        for level in opts.concurrency:
            n = opts.requests_factor * level
            before = await _engine_ttft(client, workers)
            own0 = await _router_added(client, router)
            mig0 = await _migrations(client, router)
            down0 = _down_lines(cluster)
            t0 = time.monotonic()
            results = await run_bounded(
                n,
                level,
                lambda i: stream_chat(
                    client,
                    router + "/v1/chat/completions",
                    chat_body(_prompt(i), opts.ramp_max_tokens),
                ),
            )
            wall = time.monotonic() - t0
            after = await _engine_ttft(client, workers)
            own = histogram_delta(await _router_added(client, router), own0)
            mig1 = await _migrations(client, router)
            engine = histogram_delta(after, before)
            row = _counts_row(
                results,
                case=f"{level} concurrent",
                concurrency=level,
                requests=n,
                wall_s=round(wall, 1),
                engine_ttft_ms_p50=_ms(histogram_quantile(engine, 0.5)),
                engine_ttft_ms_p99=_ms(histogram_quantile(engine, 0.99)),
                migrations_metric=None if mig1 is None else mig1 - (mig0 or 0.0),
                workers_logged_down=_down_lines(cluster) - down0,
                router_ms_p50=_ms(histogram_quantile(own, 0.5)) if own else None,
                router_ms_p99=_ms(histogram_quantile(own, 0.99)) if own else None,
            )
            for q in ("p50", "p99"):
                c, e = row[f"client_ttft_ms_{q}"], row[f"engine_ttft_ms_{q}"]
                row[f"added_ms_{q}"] = None if c is None or e is None else round(c - e, 1)
            rows.append(row)
            _progress(
                f"ramp {level}: {row['ok']} ok, {row['failed']} failed, "
                f"{row['truncated']} truncated, {row['shed']} shed in {wall:.1f}s"
            )
    passed = all(r["failed"] == 0 and r["truncated"] == 0 for r in rows)
    return ScenarioResult(
        "ramp",
        passed,
        "0 failed and 0 truncated at every level (shed with Retry-After allowed)",
        rows,
        {"added_latency_method": ADDED_LATENCY_METHOD},
    )


# ---- kill / stop ----------------------------------------------------------------------------


async def _steady_load(
    client: httpx.AsyncClient,
    url: str,
    lanes: int,
    stop: asyncio.Event,
    body: Callable[[int], dict[str, Any]],
    results: list[StreamResult],
    pause_after_failure_s: float = 0.1,
    go: asyncio.Event | None = None,
) -> None:
    """`lanes` concurrent streams, each lane starting its next request as one ends, until
    `stop` is set (requests in flight finish). While `go` is clear no new request starts."""
    counter = 0

    async def lane() -> None:
        nonlocal counter
        while not stop.is_set():
            if go is not None and not go.is_set():
                await go.wait()
                continue
            counter += 1
            r = await stream_chat(client, url, body(counter))
            results.append(r)
            if r.outcome is not Outcome.OK:
                await asyncio.sleep(pause_after_failure_s)

    await asyncio.gather(*(lane() for _ in range(lanes)))


async def _kill(cluster: LocalCluster, opts: SoakOptions) -> ScenarioResult:
    router = cluster.router_url
    names = list(cluster.workers)
    killed, stopped = names[0], names[1]
    stopped_proc = cluster.workers[stopped].popen
    assert stopped_proc is not None
    results: list[StreamResult] = []
    stop = asyncio.Event()
    back_after_s: float | None = None
    async with make_client() as client:
        watch = HealthWatch(client, router)
        watch.start()
        mig0 = await _migrations(client, router)
        load = asyncio.create_task(
            _steady_load(
                client,
                router + "/v1/chat/completions",
                opts.kill_streams,
                stop,
                lambda i: chat_body(_prompt(i), 256),
                results,
            )
        )
        try:
            await asyncio.sleep(3.0)
            _progress(f"kill: SIGKILL {killed} with {opts.kill_streams} streams in flight")
            cluster.kill_worker(killed)
            await asyncio.sleep(1.0)
            _progress(f"kill: SIGSTOP {stopped} for {opts.stop_s:g}s")
            os.kill(stopped_proc.pid, signal.SIGSTOP)
            try:
                await asyncio.sleep(opts.stop_s)
            finally:
                os.kill(stopped_proc.pid, signal.SIGCONT)
            t_cont = time.monotonic()
            await asyncio.sleep(5.0)
        finally:
            stop.set()
            await load
        while time.monotonic() - t_cont < 30.0:
            await watch.poll_once()
            if watch.healthy(stopped):
                back_after_s = time.monotonic() - t_cont
                break
            await asyncio.sleep(0.2)
        mig1 = await _migrations(client, router)
        await watch.stop()
    row = _counts_row(
        results,
        case=f"{opts.kill_streams} streams, kill -9 {killed}, STOP {stopped} {opts.stop_s:g}s",
        migrations_metric=None if mig1 is None else mig1 - (mig0 or 0.0),
        stopped_back=back_after_s is not None,
        stopped_back_after_cont_s=None if back_after_s is None else round(back_after_s, 1),
        workers_seen_down=sorted(watch.seen_down),
        workers_logged_down=_down_lines(cluster),
    )
    passed = row["failed"] == 0 and row["truncated"] == 0 and row["stopped_back"]
    return ScenarioResult(
        "kill", passed, "0 failed, 0 truncated, the stopped worker back after CONT", [row]
    )


# ---- poison ---------------------------------------------------------------------------------


def poison_prompt(mib: float) -> str:
    """A legal prompt of about `mib` MiB of plain words."""
    size = int(mib * 1024 * 1024)
    unit = "the quick brown fox jumps over the lazy dog "
    return (unit * (size // len(unit) + 1))[:size]


async def _poison(cluster: LocalCluster, opts: SoakOptions) -> ScenarioResult:
    router = cluster.router_url
    url = router + "/v1/chat/completions"
    prompt = poison_prompt(opts.poison_mib)
    results: list[StreamResult] = []
    stop = asyncio.Event()
    async with make_client(read_timeout_s=300.0) as client:
        watch = HealthWatch(client, router)
        watch.start()
        down0 = _down_lines(cluster)
        load = asyncio.create_task(
            _steady_load(
                client,
                url,
                opts.poison_streams,
                stop,
                lambda i: chat_body(_prompt(i), 256),
                results,
            )
        )
        try:
            await asyncio.sleep(1.0)
            t0 = time.monotonic()
            poison = await stream_chat(client, url, chat_body(prompt, 1, stream=False))
            poison_s = time.monotonic() - t0
            await asyncio.sleep(2.0)
        finally:
            stop.set()
            await load
        await watch.stop()
    counts = OutcomeCounts.of(results)
    row = _counts_row(
        results,
        case=f"{len(prompt) / 2**20:.1f} MiB prompt + {opts.poison_streams} lanes of streams",
        poison_status=poison.status,
        poison_outcome=poison.outcome.value,
        poison_reason=poison.reason,
        poison_s=round(poison_s, 1),
        workers_seen_down=sorted(watch.seen_down),
        workers_logged_down=_down_lines(cluster) - down0,
    )
    passed = (
        counts.failed == 0
        and counts.truncated == 0
        and not watch.seen_down
        and row["workers_logged_down"] == 0
    )
    return ScenarioResult(
        "poison",
        passed,
        f"none of the streams of the {opts.poison_streams} lanes running meanwhile fails, "
        "no worker reported down",
        [row],
    )


# ---- restart --------------------------------------------------------------------------------


def _restart_router(cluster: LocalCluster, grace_s: float = 15.0) -> None:
    """SIGTERM the router and start the same command again (same port); `cluster.stop()`
    stops the new process."""
    p = cluster.router
    assert p is not None and p.popen is not None
    p.popen.send_signal(signal.SIGTERM)
    try:
        p.popen.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        p.popen.kill()
        p.popen.wait()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(p.log, "ab") as log:
        p.popen = subprocess.Popen(
            p.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )


def _restart_prompt(i: int) -> str:
    """One of 64 distinct ~600-word prompts: several full KV blocks each, and the same 64
    over and over, so after warm-up the load adds few new blocks to the index."""
    k = i % 64
    return f"session {k} " + " ".join(f"t{(k * 131 + j) % 5003}" for j in range(600))


async def _restart(cluster: LocalCluster, opts: SoakOptions) -> ScenarioResult:
    router = cluster.router_url
    results: list[StreamResult] = []
    stop = asyncio.Event()
    go = asyncio.Event()
    go.set()
    up_s: float | None = None
    index_s: float | None = None
    confirmed_before = confirmed_after = 0
    async with make_client() as client:
        watch = HealthWatch(client, router)
        load = asyncio.create_task(
            _steady_load(
                client,
                router + "/v1/chat/completions",
                32,
                stop,
                lambda i: chat_body(_restart_prompt(i), 16),
                results,
                go=go,
            )
        )
        try:
            await asyncio.sleep(8.0)
            body = await watch.poll_once()
            confirmed_before = int((body.get("index") or {}).get("confirmed_blocks") or 0)
            _progress(
                f"restart: confirmed_blocks {confirmed_before}; SIGTERM the router with "
                "32 streams in flight"
            )
            go.clear()  # no new requests until the index check: only a dump can refill it
            await asyncio.to_thread(_restart_router, cluster)
            t0 = time.monotonic()
            while time.monotonic() - t0 < opts.restart_wait_s:
                body = await watch.poll_once()
                if body:
                    ws = body.get("workers") or []
                    if up_s is None and ws and all(w.get("healthy") for w in ws):
                        up_s = time.monotonic() - t0
                    confirmed_after = int((body.get("index") or {}).get("confirmed_blocks") or 0)
                    if confirmed_before and confirmed_after >= 0.9 * confirmed_before:
                        index_s = time.monotonic() - t0
                        break
                await asyncio.sleep(0.2)
            go.set()
            _progress(f"restart: confirmed_blocks {confirmed_after}; load again for 5s")
            await asyncio.sleep(5.0)
        finally:
            stop.set()
            go.set()
            await load
    row = _counts_row(
        results,
        case="router SIGTERM + start, 32 streams",
        confirmed_before=confirmed_before,
        confirmed_after=confirmed_after,
        healthy_after_s=None if up_s is None else round(up_s, 1),
        index_recovered_after_s=None if index_s is None else round(index_s, 1),
    )
    passed = index_s is not None and row["truncated"] == 0 and row["failed"] == 0
    return ScenarioResult(
        "restart",
        passed,
        f"confirmed_blocks back to 90% within {opts.restart_wait_s:g}s of the restart (no new "
        "requests meanwhile, so only the workers' state can refill it); 0 failed or truncated "
        "among the streams in flight at SIGTERM and the load after",
        [row],
    )


# ---- slowloris ------------------------------------------------------------------------------


async def _probe(client: httpx.AsyncClient, url: str, stop: asyncio.Event) -> tuple[int, int]:
    """One normal request a second to `url` until `stop`: (served, attempted)."""
    served = attempted = 0
    while not stop.is_set():
        attempted += 1
        with contextlib.suppress(httpx.HTTPError):
            if url.endswith("/health"):
                r = await client.get(url, timeout=10.0)
                served += r.status_code == 200
            else:
                res = await stream_chat(client, url, chat_body("hello", 4, stream=False))
                served += res.outcome is Outcome.OK
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
    return served, attempted


async def _slowloris(cluster: LocalCluster, opts: SoakOptions) -> ScenarioResult:
    router = cluster.router_url
    worker = next(iter(cluster.worker_urls.values()))
    targets = [
        ("router", *_host_port(router)),
        ("worker", *_host_port(worker)),
    ]
    stop = asyncio.Event()
    async with make_client(read_timeout_s=10.0) as client:
        probes = [
            asyncio.create_task(_probe(client, router + "/v1/chat/completions", stop)),
            asyncio.create_task(_probe(client, worker + "/health", stop)),
        ]
        _progress(
            f"slowloris: {opts.slowloris_conns} connections each to the router and a worker "
            f"for {opts.slowloris_s:g}s"
        )
        try:
            ends = await slowloris(targets, opts.slowloris_conns, opts.slowloris_s)
        finally:
            stop.set()
            served = await asyncio.gather(*probes)
    rows = []
    for end, (ok, tried) in zip(ends, served, strict=True):
        rows.append(
            {
                "case": f"{opts.slowloris_conns} to the {end.target}, {opts.slowloris_s:g}s",
                **end.to_json(),
                "probes_served": ok,
                "probes": tried,
            }
        )
    passed = all(r["open_at_end"] == 0 and r["probes_served"] == r["probes"] for r in rows)
    return ScenarioResult(
        "slowloris",
        passed,
        "every partial-header connection closed by the server; normal requests served",
        rows,
    )


def _host_port(url: str) -> tuple[str, int]:
    u = httpx.URL(url)
    return u.host, int(u.port or 80)


# ---- driver ---------------------------------------------------------------------------------

SCENARIOS: dict[str, Callable[[LocalCluster, SoakOptions], Any]] = {
    "ramp": _ramp,
    "kill": _kill,
    "poison": _poison,
    "restart": _restart,
    "slowloris": _slowloris,
}

_progress_sink: Callable[[str], None] | None = None


def _progress(message: str) -> None:
    if _progress_sink is not None:
        _progress_sink(message)


def run_scenario(
    name: str, opts: SoakOptions, progress: Callable[[str], None] | None = None
) -> ScenarioResult:
    """Run one scenario on a fresh cluster, stopped afterwards whatever happens. A cluster
    that does not start, or a scenario that raises, is a failed result with the error."""
    global _progress_sink
    _progress_sink = progress
    fn = SCENARIOS[name]
    t0 = time.monotonic()
    try:
        with _cluster(opts) as cluster:
            res: ScenarioResult = asyncio.run(fn(cluster, opts))
    except Exception as exc:  # the report says which scenario broke and how
        res = ScenarioResult(name, False, "", error=f"{type(exc).__name__}: {exc}")
    res.figures["wall_s"] = round(time.monotonic() - t0, 1)
    return res
