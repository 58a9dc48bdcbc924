"""Forwarding a routed request to its worker and relaying the answer.

The original JSON body goes to the chosen worker with httpx; a streamed answer is relayed as
complete SSE events (bytes untouched, cut only at event boundaries so that a migration never
leaves half an event with the client); a JSON answer is passed through with its status.

What mature proxies do (Envoy's retries, outlier detection and circuit breaking, Dynamo's
request migration), and this one too:

- **Admission.** Past `max_in_flight` requests, or while its own event loop lags (the
  machine is saturated: `overload.py`), the router sheds new requests with 503 and
  `Retry-After` instead of collapsing; no healthy worker is a 503 with `Retry-After` too.
- **Retry before the answer.** A request that got nothing back from its worker (connect error
  or timeout, a pooled connection the worker had closed, a 5xx from the worker, the worker
  fenced while it waited) is routed again to another worker, up to `max_attempts`. Such
  failures are reported to the registry's outlier detection; they never fence a worker alone.
- **Migration mid-stream.** A stream whose worker fails, stalls while down, or ends without
  `[DONE]` is continued on another worker from the text already relayed (`migration.py`), up
  to `max_migrations` times, so the client sees one stream. A non-streaming request is re-sent.
  Retries and migrations together stay within a budget (Envoy's retry budget): at most
  `retry_budget_ratio` of the requests in flight, and never fewer than `retry_budget_min`.
- **Every stream ends** with `data: [DONE]`, after an SSE error event if it could not be
  finished: never a silent truncation.
- **A client that disconnects** (while its request is queued, streaming or not) closes the
  upstream request, so the worker cancels it and frees its slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
from fastapi import Request
from fastapi.responses import JSONResponse, Response

from agentctl.serving.http import SSEResponse
from agentctl.serving.protocol import SESSION_HEADER, SSE_DONE, error_body, sse
from agentctl.serving.router.migration import Relayed, Splicer, continuation_body
from agentctl.serving.router.policies import NoEligibleWorker
from agentctl.serving.router.registry import InFlight, Registry, Routed, WorkerEntry
from agentctl.serving.types import RequestSpec

__all__ = ["WORKER_HEADER", "Forwarder"]

log = logging.getLogger(__name__)

#: response header naming the worker that served a request
WORKER_HEADER = "X-Agentctl-Worker"
_FORWARD_HEADERS = ("authorization", "x-dynamo-trajectory-id", SESSION_HEADER.lower())
_PASS_BACK_HEADERS = ("x-request-id",)
_DONE = SSE_DONE.encode()
_ERROR_EVENT = b'data: {"error"'
#: seconds a shed or refused client is told to wait
RETRY_AFTER_S = 1

T = TypeVar("T")


class _Aborted(Exception):
    """The worker was fenced and the request stalled on it."""


class _ClientGone(Exception):
    """The client disconnected."""


def _bad_gateway(message: str) -> dict[str, Any]:
    return error_body(message, "upstream_error", code=502)


def _unavailable(message: str, code: str = "service_unavailable") -> Response:
    return JSONResponse(
        error_body(message, "service_unavailable", code=code),
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


async def _race(aw: Awaitable[T], abort: asyncio.Event, gone: asyncio.Event) -> T:
    """Await `aw` unless `abort` is set (`_Aborted`) or the client goes (`_ClientGone`)."""
    main: asyncio.Future[T] = asyncio.ensure_future(aw)
    stop = asyncio.ensure_future(abort.wait())
    left = asyncio.ensure_future(gone.wait())
    waiters: set[asyncio.Future[Any]] = {main, stop, left}
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        left.cancel()
        if not main.done():
            main.cancel()
            with contextlib.suppress(BaseException):
                await main
    if main.done() and not main.cancelled():
        return main.result()
    if gone.is_set():
        raise _ClientGone()
    raise _Aborted()


async def _anext_or_none(it: AsyncIterator[bytes]) -> bytes | None:
    try:
        return await it.__anext__()
    except StopAsyncIteration:
        return None


async def _drain_end(it: AsyncIterator[bytes], timeout_s: float = 1.0) -> None:
    """Read what is left of a finished stream (the chunked body's terminator), so that its
    connection goes back to the pool instead of being closed and opened anew."""
    with contextlib.suppress(Exception):
        async with asyncio.timeout(timeout_s):
            for _ in range(4):
                if await _anext_or_none(it) is None:
                    return


def _is_token_chunk(chunk: bytes, kind: object) -> bool:
    """Whether relayed events carry generated output (not just chat's opening role delta)."""
    if kind != "chat":
        return b"data:" in chunk
    return chunk.count(b"data:") > 1 or (b"data:" in chunk and b'"role"' not in chunk)


class _ClientWatch:
    """Sets `gone` when the client disconnects, until the response takes over watching."""

    def __init__(self, request: Request) -> None:
        self.gone = asyncio.Event()
        self._task = asyncio.ensure_future(self._watch(request))

    async def _watch(self, request: Request) -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                self.gone.set()
                return

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task


class _Stream:
    """An async iterator over a generator that also cleans up if it is closed unstarted
    (an async generator's `finally` never runs when it was never started)."""

    def __init__(
        self, gen: AsyncIterator[bytes], on_unstarted: Callable[[], Awaitable[None]]
    ) -> None:
        self._gen = gen
        self._on_unstarted = on_unstarted
        self._started = False

    def __aiter__(self) -> _Stream:
        return self

    async def __anext__(self) -> bytes:
        self._started = True
        return await self._gen.__anext__()

    async def aclose(self) -> None:
        if self._started:
            aclose = getattr(self._gen, "aclose", None)
            if aclose is not None:
                await aclose()
        else:
            self._started = True
            await self._on_unstarted()


@dataclass
class _Job:
    """One client request across its attempts."""

    spec: RequestSpec
    raw: bytes
    path: str
    headers: dict[str, str]
    gone: asyncio.Event
    tried: set[str] = field(default_factory=set)
    migrations: int = 0
    last_error: str = "no worker"


@dataclass
class _Open:
    routed: Routed
    flight: InFlight
    upstream: httpx.Response
    #: when the request was sent to the worker, and the router's time before that
    t0: float
    before_send_s: float

    @property
    def worker(self) -> WorkerEntry:
        return self.routed.worker


class Forwarder:
    """Sends routed requests to workers (see the module docstring)."""

    def __init__(
        self,
        registry: Registry,
        client: httpx.AsyncClient,
        *,
        client_factory: Callable[[], httpx.AsyncClient] | None = None,
        max_attempts: int = 3,
        max_migrations: int = 3,
        max_in_flight: int = 4096,
        retry_budget_ratio: float = 0.5,
        retry_budget_min: int = 64,
        shed_min_in_flight: int = 32,
    ) -> None:
        self.registry = registry
        #: for the router's own calls (/v1/models); each worker gets a pool of its own
        self.client = client
        self._make_client = client_factory
        self._clients: dict[str, httpx.AsyncClient] = {}
        self.max_attempts = max_attempts
        self.max_migrations = max_migrations
        self.max_in_flight = max_in_flight
        self.retry_budget_ratio = retry_budget_ratio
        self.retry_budget_min = retry_budget_min
        #: loop lag alone sheds only with this many in flight (a lone stall is not overload)
        self.shed_min_in_flight = shed_min_in_flight
        self._active = 0
        self._retrying = 0

    def _client_for(self, w: WorkerEntry) -> httpx.AsyncClient:
        """`w`'s own connection pool: httpcore scans every connection of a pool for each
        request, so one pool per worker keeps that scan to the worker's own connections."""
        if self._make_client is None:
            return self.client
        client = self._clients.get(w.id)
        if client is None:
            client = self._clients[w.id] = self._make_client()
        return client

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for c in clients:
            await c.aclose()
        await self.client.aclose()

    def _headers(self, incoming: Mapping[str, str]) -> dict[str, str]:
        out = {"content-type": "application/json"}
        for k in _FORWARD_HEADERS:
            v = incoming.get(k)
            if v is not None:
                out[k] = v
        return out

    def _admission(self) -> str | None:
        """Why a new request must be shed now, or None to admit it."""
        if self._active >= self.max_in_flight:
            return f"The router is at its limit of {self.max_in_flight} requests in flight"
        lag = self.registry.lag
        if self._active >= self.shed_min_in_flight and lag.overloaded:
            return f"The router is overloaded (its event loop lags {lag.lag_s:.2f} s)"
        return None

    def _retry_allowed(self) -> bool:
        budget = max(self.retry_budget_min, int(self.retry_budget_ratio * self._active))
        return self._retrying < budget

    # ---------------------------------------------------------------- entry point

    async def forward(self, request: Request, spec: RequestSpec, raw: bytes) -> Response:
        """Route `spec`, send `raw` to the chosen worker and relay its answer."""
        reg = self.registry
        refusal = self._admission()
        if refusal is not None:
            reg.metrics.shed.inc()
            reg.metrics.rejected.labels("503").inc()
            return _unavailable(f"{refusal}; retry after {RETRY_AFTER_S} s.", code="overloaded")
        watch = _ClientWatch(request)
        job = _Job(spec, raw, request.url.path, self._headers(request.headers), watch.gone)
        self._active += 1
        handed_off = False
        try:
            opened = await self._open(job)
            if isinstance(opened, Response):
                return opened
            if spec.extra.get("stream") and opened.upstream.status_code == 200:
                await watch.stop()  # SSEResponse watches the client from here on
                handed_off = True
                return SSEResponse(
                    _Stream(self._relay(job, opened), lambda: self._never_started(job, opened)),
                    on_disconnect=job.gone.set,
                    headers={**self._out_headers(opened), "Cache-Control": "no-cache"},
                )
            return await self._collect(job, opened)
        finally:
            if not handed_off:
                self._active -= 1
                await watch.stop()

    @staticmethod
    def _out_headers(opened: _Open) -> dict[str, str]:
        out = {WORKER_HEADER: opened.worker.id}
        for k in _PASS_BACK_HEADERS:
            v = opened.upstream.headers.get(k)
            if v is not None:
                out[k] = v
        return out

    async def _never_started(self, job: _Job, opened: _Open) -> None:
        """The client went before its stream was started: release what `_relay` would."""
        self._active -= 1
        with contextlib.suppress(BaseException):
            await opened.upstream.aclose()
        self.registry.finish(opened.worker, job.spec.request_id)

    # ---------------------------------------------------------------- attempts

    async def _open(self, job: _Job, *, retry: bool = False) -> _Open | Response:
        """Route and send until a worker answers with headers; a Response if none did."""
        reg = self.registry
        for attempt in range(self.max_attempts):
            again = retry or attempt > 0
            if again and not self._retry_allowed():
                job.last_error += " (retry budget exhausted)"
                break
            try:
                routed = reg.route(job.spec, exclude=frozenset(job.tried))
            except NoEligibleWorker as exc:
                if job.tried:
                    break
                reg.metrics.rejected.labels("503").inc()
                return _unavailable(f"No healthy worker available: {exc}")
            w = routed.worker
            job.tried.add(w.id)
            flight = reg.begin(w, job.spec.request_id)
            t0 = time.monotonic()
            before_send = max(0.0, t0 - job.spec.arrival_s)
            client = self._client_for(w)
            req = client.build_request(
                "POST", w.url + job.path, content=job.raw, headers=job.headers
            )
            if again:
                self._retrying += 1
            try:
                upstream = await _race(client.send(req, stream=True), flight.abort, job.gone)
            except _ClientGone:
                reg.finish(w, job.spec.request_id)
                return JSONResponse(error_body("client closed request", code=499), 499)
            except _Aborted:
                reg.finish(w, job.spec.request_id)
                self._note_retry(job, w, "aborted", f"worker {w.id} went down: {w.last_error}")
                continue
            except httpx.TransportError as exc:
                reg.finish(w, job.spec.request_id)
                timeout = isinstance(exc, httpx.TimeoutException)
                kind = "timeout" if timeout else "connect"
                reg.report_failure(w, f"{kind}: {exc!r}", timeout=timeout)
                self._note_retry(job, w, kind, f"worker {w.id} unreachable: {exc!r}")
                continue
            except BaseException:
                reg.finish(w, job.spec.request_id)
                raise
            finally:
                if again:
                    self._retrying -= 1
            if upstream.status_code >= 500 and attempt + 1 < self.max_attempts:
                await upstream.aclose()
                reg.finish(w, job.spec.request_id)
                reg.report_failure(w, f"answered {upstream.status_code}")
                self._note_retry(job, w, "status", f"worker {w.id} answered {upstream.status_code}")
                continue
            reg.report_success(w)
            return _Open(routed, flight, upstream, t0, before_send)
        reg.metrics.rejected.labels("502").inc()
        return JSONResponse(
            _bad_gateway(f"All attempts failed; last: {job.last_error}"), status_code=502
        )

    def _note_retry(self, job: _Job, w: WorkerEntry, kind: str, message: str) -> None:
        m = self.registry.metrics
        m.forward_errors.labels(w.id, kind).inc()
        m.retries.labels(kind).inc()
        job.last_error = message

    # ---------------------------------------------------------------- non-streaming

    async def _collect(self, job: _Job, opened: _Open) -> Response:
        reg = self.registry
        while True:
            w = opened.worker
            outcome = "error"
            failure: str | None = None
            try:
                body = await _race(opened.upstream.aread(), opened.flight.abort, job.gone)
                received = time.monotonic()
                outcome = "ok" if opened.upstream.status_code < 400 else "error"
                reg.metrics.ttft_seconds.labels(w.id).observe(time.monotonic() - opened.t0)
                media = opened.upstream.headers.get("content-type", "application/json")
                reg.metrics.added_latency.observe(
                    opened.before_send_s + time.monotonic() - received
                )
                return Response(
                    body,
                    status_code=opened.upstream.status_code,
                    media_type=media,
                    headers=self._out_headers(opened),
                )
            except _ClientGone:
                outcome = "aborted"
                return JSONResponse(error_body("client closed request", code=499), 499)
            except _Aborted:
                failure = f"worker {w.id} went down while handling the request: {w.last_error}"
                reg.metrics.forward_errors.labels(w.id, "aborted").inc()
            except httpx.HTTPError as exc:
                failure = f"worker {w.id} failed while handling the request: {exc!r}"
                reg.metrics.forward_errors.labels(w.id, "upstream").inc()
                reg.report_failure(w, repr(exc))
            finally:
                with contextlib.suppress(BaseException):
                    await opened.upstream.aclose()
                reg.first_token(job.spec.request_id)
                reg.finish(w, job.spec.request_id)
                reg.metrics.requests.labels(w.id, reg.policy.name, outcome).inc()
            job.last_error = failure
            if job.migrations >= self.max_migrations:
                return JSONResponse(_bad_gateway(failure), status_code=502)
            job.migrations += 1
            reg.metrics.migrations.labels("resend").inc()
            again = await self._open(job, retry=True)
            if isinstance(again, Response):
                return again
            opened = again

    # ---------------------------------------------------------------- streaming

    async def _relay(self, job: _Job, opened: _Open) -> AsyncIterator[bytes]:
        """The client's stream: complete events from each attempt, spliced into one."""
        reg = self.registry
        spec = job.spec
        kind = str(spec.extra.get("kind") or "completion")
        relayed = Relayed(kind)
        splicer: Splicer | None = None
        first = False
        try:
            while True:
                w = opened.worker
                it = opened.upstream.aiter_raw()
                buf = b""
                outcome = "error"
                failure: str | None = None
                try:
                    while True:
                        try:
                            chunk = await _race(_anext_or_none(it), opened.flight.abort, job.gone)
                        except _ClientGone:
                            outcome = "aborted"
                            return
                        except _Aborted:
                            failure = f"worker {w.id} stalled while down: {w.last_error}"
                            reg.metrics.forward_errors.labels(w.id, "aborted").inc()
                            break
                        except httpx.HTTPError as exc:
                            failure = f"worker {w.id} failed mid-stream: {exc!r}"
                            reg.metrics.forward_errors.labels(w.id, "upstream").inc()
                            reg.report_failure(w, repr(exc))
                            break
                        if chunk is None:
                            failure = f"worker {w.id} ended the stream without [DONE]"
                            reg.metrics.forward_errors.labels(w.id, "truncated").inc()
                            break
                        received = opened.flight.progress_at = time.monotonic()
                        buf += chunk
                        cut = buf.rfind(b"\n\n")
                        if cut < 0:
                            continue
                        out, buf = buf[: cut + 2], buf[cut + 2 :]
                        err_at = out.find(_ERROR_EVENT)
                        if err_at >= 0:  # the worker gave up (shutdown): finish elsewhere
                            out = out[:err_at]
                            failure = f"worker {w.id} aborted the stream"
                            reg.metrics.forward_errors.labels(w.id, "aborted").inc()
                        if splicer is not None and out:
                            out = splicer.rewrite(out)
                        if out:
                            token = not first and _is_token_chunk(out, kind)
                            if token:
                                first = True
                                reg.first_token(spec.request_id)
                                reg.metrics.ttft_seconds.labels(w.id).observe(
                                    time.monotonic() - opened.t0
                                )
                            relayed.feed(out)
                            yield out
                            if token:  # resumed once the chunk was handed to the server
                                reg.metrics.added_latency.observe(
                                    opened.before_send_s + time.monotonic() - received
                                )
                        if failure is not None:
                            break
                        if out.endswith(_DONE):
                            outcome = "ok"
                            await _drain_end(it)
                            return
                finally:
                    with contextlib.suppress(BaseException):
                        await opened.upstream.aclose()
                    reg.finish(w, spec.request_id)
                    reg.metrics.requests.labels(w.id, reg.policy.name, outcome).inc()
                # the stream broke: finish it, continue it elsewhere, or end it with an error
                job.last_error = failure or "stream broke"
                if relayed.finished:
                    yield _DONE
                    return
                nxt = await self._migrate(job, relayed)
                if isinstance(nxt, bytes):
                    log.warning("stream %s not migrated: %s", spec.request_id, failure)
                    yield nxt
                    return
                log.info("stream %s migrated after: %s", spec.request_id, failure)
                opened = nxt
                splicer = Splicer(relayed, spec.prompt_tokens)
        finally:
            self._active -= 1

    async def _migrate(self, job: _Job, relayed: Relayed) -> _Open | bytes:
        """The continuation of a broken stream, or the error event that ends it."""
        reg = self.registry
        if job.migrations >= self.max_migrations:
            return self._sse_error(f"{job.last_error}; gave up after {job.migrations} moves")
        try:
            body = json.loads(job.raw)
        except ValueError:
            body = None
        cont = (
            continuation_body(body, relayed.kind, relayed.text, relayed.tokens, job.spec.max_tokens)
            if isinstance(body, dict)
            else None
        )
        if cont is None:
            return self._sse_error(f"{job.last_error}; this request cannot be continued")
        job.migrations += 1
        job.raw = json.dumps(cont, separators=(",", ":")).encode()
        opened = await self._open(job, retry=True)
        if isinstance(opened, Response):
            return self._sse_error(f"could not continue the stream: {job.last_error}")
        if opened.upstream.status_code != 200:
            detail = (await opened.upstream.aread())[:300].decode(errors="replace")
            await opened.upstream.aclose()
            reg.finish(opened.worker, job.spec.request_id)
            return self._sse_error(f"could not continue the stream: {detail}")
        reg.metrics.migrations.labels("stream").inc()
        return opened

    @staticmethod
    def _sse_error(message: str) -> bytes:
        return sse(_bad_gateway(message)).encode() + _DONE
