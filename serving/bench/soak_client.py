"""The soak suite's HTTP side: many concurrent chat streams, scrapes, a health watcher and
slowloris connections, all on one asyncio loop.

One `httpx.AsyncClient` with an unbounded pool carries every stream (2,000 at once at the top
of the ramp), so the client never queues requests the router should see. Every function here
reports what happened and never raises for the stack's failures: that is the measurement.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from agentctl.serving.bench.soak_stats import (
    Outcome,
    StreamResult,
    classify_http,
    classify_sse,
    has_content,
    migrated_count,
)

__all__ = [
    "HealthWatch",
    "SlowlorisResult",
    "chat_body",
    "make_client",
    "raise_nofile",
    "run_bounded",
    "scrape",
    "slowloris",
    "stream_chat",
]

WORKER_HEADER = "x-agentctl-worker"


def raise_nofile(need: int) -> tuple[int, int]:
    """Raise the soft open-files limit to the hard one (children inherit it: the router and
    workers started afterwards get it too). `OSError` with a clear message when even the
    hard limit is below `need`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, need)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        raise OSError(
            f"open-files limit {soft} (hard {hard}) is below the {need} this run needs: "
            "raise it (ulimit -n, or LimitNOFILE= in a unit) or lower --concurrency / "
            "--slowloris-conns"
        )
    return soft, hard


def make_client(base_url: str = "", *, read_timeout_s: float = 120.0) -> httpx.AsyncClient:
    """A client whose pool never limits concurrency (the router's admission control must)."""
    timeout = httpx.Timeout(connect=30.0, read=read_timeout_s, write=30.0, pool=None)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=4096)
    return httpx.AsyncClient(base_url=base_url, timeout=timeout, limits=limits)


def chat_body(prompt: str, max_tokens: int, *, stream: bool = True) -> dict[str, Any]:
    return {
        "model": "agentctl-sim",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "stream": stream,
    }


async def stream_chat(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> StreamResult:
    """POST one chat completion to `url` and read it to the end; a streaming body is
    classified by how its SSE ended (`classify_sse`), a plain one by its status."""
    t0 = time.monotonic()
    data: list[str] = []
    res = StreamResult(Outcome.FAILED)
    try:
        async with client.stream("POST", url, json=body) as r:
            res.status = r.status_code
            res.worker = r.headers.get(WORKER_HEADER)
            res.migrated = migrated_count(r.headers)
            decided = classify_http(r.status_code, r.headers)
            if decided is not None:
                await r.aread()
                res.outcome, res.reason = decided
                return res
            if not body.get("stream"):
                await r.aread()
                res.ttft_s = time.monotonic() - t0
                res.outcome = Outcome.OK
                return res
            try:
                async for line in r.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    payload = line[6:]
                    data.append(payload)
                    if res.ttft_s is None and has_content(payload):
                        res.ttft_s = time.monotonic() - t0
                    if payload == "[DONE]":
                        break
            except httpx.TimeoutException as exc:
                res.outcome, res.reason = Outcome.FAILED, f"client timeout mid-stream: {exc!r}"
                return res
            except httpx.HTTPError as exc:  # the connection broke: the stream did not end
                res.outcome = Outcome.TRUNCATED
                res.reason = f"connection lost mid-stream: {type(exc).__name__}"
                return res
            res.outcome, res.reason = classify_sse(data)
            return res
    except httpx.TimeoutException as exc:
        res.outcome, res.reason = Outcome.FAILED, f"client timeout: {type(exc).__name__}"
    except httpx.HTTPError as exc:
        res.outcome, res.reason = Outcome.FAILED, f"transport: {type(exc).__name__}"
    return res


async def run_bounded(
    count: int,
    concurrency: int,
    send: Callable[[int], Awaitable[StreamResult]],
) -> list[StreamResult]:
    """`count` requests, at most `concurrency` in flight at once (a new one starts as one
    ends), in order of start."""
    results: list[StreamResult | None] = [None] * count
    next_i = 0

    async def lane() -> None:
        nonlocal next_i
        while next_i < count:
            i = next_i
            next_i += 1
            results[i] = await send(i)

    await asyncio.gather(*(lane() for _ in range(min(concurrency, count))))
    return [r for r in results if r is not None]


async def scrape(client: httpx.AsyncClient, url: str, path: str = "/metrics") -> str:
    """The text of `url + path`, or "" when it does not answer (a dead worker)."""
    try:
        r = await client.get(url + path, timeout=10.0)
    except httpx.HTTPError:
        return ""
    return r.text if r.status_code == 200 else ""


@dataclass
class HealthWatch:
    """Polls the router's `/health` while a scenario runs: which workers it ever reported
    unhealthy, and the last body it answered."""

    client: httpx.AsyncClient
    url: str
    interval_s: float = 0.2
    seen_down: set[str] = field(default_factory=set)
    last: dict[str, Any] = field(default_factory=dict)
    failures: int = 0
    _task: asyncio.Task[None] | None = None

    async def poll_once(self) -> dict[str, Any]:
        try:
            r = await self.client.get(self.url + "/health", timeout=5.0)
            body = r.json()
        except (httpx.HTTPError, ValueError):
            self.failures += 1
            return {}
        if isinstance(body, dict):
            self.last = body
            for w in body.get("workers") or []:
                if isinstance(w, dict) and not w.get("healthy"):
                    self.seen_down.add(str(w.get("id")))
            return body
        return {}

    async def _loop(self) -> None:
        while True:
            await self.poll_once()
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def healthy(self, worker: str) -> bool | None:
        for w in self.last.get("workers") or []:
            if isinstance(w, dict) and w.get("id") == worker:
                return bool(w.get("healthy"))
        return None


# ---- slowloris ------------------------------------------------------------------------------


@dataclass
class SlowlorisResult:
    """Connections that sent partial headers to one target, and what became of them."""

    target: str
    attempted: int = 0
    refused: int = 0
    closed_by_server: int = 0
    open_at_end: int = 0

    def to_json(self) -> dict[str, object]:
        return {
            "target": self.target,
            "attempted": self.attempted,
            "refused": self.refused,
            "closed_by_server": self.closed_by_server,
            "open_at_end": self.open_at_end,
        }


async def _one_slow(
    host: str, port: int, deadline: float, trickle_s: float, gate: asyncio.Semaphore
) -> str:
    """One slowloris connection: a request line and a header, then one more header line every
    `trickle_s`, never the blank line. 'refused', 'closed' or 'open' (at the deadline)."""
    async with gate:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 10.0)
        except (OSError, TimeoutError):
            return "refused"
    try:
        lines = [f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}:{port}\r\n".encode()]
        n = 0
        while True:
            try:
                writer.write(lines.pop() if lines else f"X-Slow-{n}: 1\r\n".encode())
                await writer.drain()
            except OSError:
                return "closed"
            n += 1
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                got = await asyncio.wait_for(reader.read(4096), min(trickle_s, left))
            except TimeoutError:
                continue
            except OSError:
                return "closed"
            if not got:
                return "closed"
            # the server answered (400/408...): it will close; wait for it briefly
            with contextlib.suppress(TimeoutError, OSError):
                while await asyncio.wait_for(reader.read(4096), 5.0):
                    pass
                return "closed"
        try:
            got = await asyncio.wait_for(reader.read(4096), 0.05)
        except TimeoutError:
            return "open"
        except OSError:
            return "closed"
        return "open" if got else "closed"
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def slowloris(
    targets: Sequence[tuple[str, str, int]],
    conns: int,
    duration_s: float,
    *,
    trickle_s: float = 5.0,
    connect_parallel: int = 100,
) -> list[SlowlorisResult]:
    """`conns` slowloris connections to each `(name, host, port)` for `duration_s`."""
    deadline = time.monotonic() + duration_s
    gate = asyncio.Semaphore(connect_parallel)
    jobs = [
        (name, _one_slow(host, port, deadline, trickle_s, gate))
        for name, host, port in targets
        for _ in range(conns)
    ]
    ends = await asyncio.gather(*(j for _, j in jobs))
    out = {name: SlowlorisResult(name) for name, _, _ in targets}
    for (name, _), end in zip(jobs, ends, strict=True):
        r = out[name]
        r.attempted += 1
        if end == "refused":
            r.refused += 1
        elif end == "closed":
            r.closed_by_server += 1
        else:
            r.open_at_end += 1
    return list(out.values())
