"""Forwarding a routed request to its worker and relaying the answer unchanged.

The original JSON body goes to the chosen worker with httpx. A streamed answer is relayed chunk
by chunk as received (SSE bytes untouched); a JSON answer is passed through with its status.
The load tracker hears of the first generated chunk (`first_token`) and of the end (`finish`).

Failure is always fast and always an OpenAI error body, never a hang or a traceback:

- a connect error (the worker is gone) fences the worker and the request is routed again to
  another one (nothing was sent yet, so this is safe), up to `max_attempts`;
- a worker that dies or is fenced by the health check while a request is in flight ends that
  request at once: non-streaming with a 502, streaming with an SSE error event then `[DONE]`
  (the status line was already sent);
- a client that disconnects closes the upstream request, so the worker cancels it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import Any, TypeVar

import httpx
from fastapi import Request
from fastapi.responses import JSONResponse, Response

from agentctl.serving.http import SSEResponse
from agentctl.serving.protocol import SESSION_HEADER, SSE_DONE, error_body, sse
from agentctl.serving.router.policies import NoEligibleWorker
from agentctl.serving.router.registry import Registry, Routed, WorkerEntry
from agentctl.serving.types import RequestSpec

__all__ = ["WORKER_HEADER", "Forwarder"]

log = logging.getLogger(__name__)

#: response header naming the worker that served a request
WORKER_HEADER = "X-Agentctl-Worker"
_FORWARD_HEADERS = ("authorization", "x-dynamo-trajectory-id", SESSION_HEADER.lower())
_PASS_BACK_HEADERS = ("x-request-id",)

T = TypeVar("T")


class _Aborted(Exception):
    """The worker was fenced while the request was in flight."""


class _ClientGone(Exception):
    """The client disconnected."""


def _bad_gateway(message: str, status: int = 502) -> dict[str, Any]:
    return error_body(
        message, "upstream_error" if status == 502 else "service_unavailable", code=status
    )


async def _race(aw: Awaitable[T], abort: asyncio.Event, gone: asyncio.Future[None] | None) -> T:
    """Await `aw` unless `abort` is set (`_Aborted`) or the client goes (`_ClientGone`) first."""
    main: asyncio.Future[T] = asyncio.ensure_future(aw)
    stop = asyncio.ensure_future(abort.wait())
    waiters: set[asyncio.Future[Any]] = {main, stop}
    if gone is not None:
        waiters.add(gone)
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        if not main.done():
            main.cancel()
            with contextlib.suppress(BaseException):
                await main
    if main.done() and not main.cancelled():
        return main.result()
    if gone is not None and gone.done():
        raise _ClientGone()
    raise _Aborted()


async def _anext_or_none(it: AsyncIterator[bytes]) -> bytes | None:
    try:
        return await it.__anext__()
    except StopAsyncIteration:
        return None


def _is_token_chunk(chunk: bytes, kind: object) -> bool:
    """Whether a relayed chunk carries generated output (not just chat's opening role delta)."""
    if kind != "chat":
        return b"data:" in chunk
    return chunk.count(b"data:") > 1 or (b"data:" in chunk and b'"role"' not in chunk)


class Forwarder:
    """Sends routed requests to workers (see the module docstring)."""

    def __init__(
        self,
        registry: Registry,
        client: httpx.AsyncClient,
        *,
        max_attempts: int = 3,
    ) -> None:
        self.registry = registry
        self.client = client
        self.max_attempts = max_attempts

    def _headers(self, incoming: Mapping[str, str]) -> dict[str, str]:
        out = {"content-type": "application/json"}
        for k in _FORWARD_HEADERS:
            v = incoming.get(k)
            if v is not None:
                out[k] = v
        return out

    async def forward(self, request: Request, spec: RequestSpec, raw: bytes) -> Response:
        """Route `spec`, send `raw` to the chosen worker and relay its answer."""
        reg = self.registry
        stream = bool(spec.extra.get("stream"))
        headers = self._headers(request.headers)
        tried: set[str] = set()
        last_error = "no worker"
        for _ in range(self.max_attempts):
            try:
                routed = reg.route(spec, exclude=frozenset(tried))
            except NoEligibleWorker as exc:
                if tried:
                    break
                reg.metrics.rejected.labels("503").inc()
                return JSONResponse(
                    error_body(
                        f"No healthy worker available: {exc}", "service_unavailable", code=503
                    ),
                    status_code=503,
                )
            w = routed.worker
            tried.add(w.id)
            abort = reg.begin(w, spec.request_id)
            t0 = time.monotonic()
            upstream_req = self.client.build_request(
                "POST", w.url + request.url.path, content=raw, headers=headers
            )
            try:
                upstream = await _race(self.client.send(upstream_req, stream=True), abort, None)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                reg.finish(w, spec.request_id)
                reg.metrics.forward_errors.labels(w.id, "connect").inc()
                reg.mark_down(w, f"connect failed: {exc}")
                last_error = f"worker {w.id} unreachable: {exc}"
                continue
            except _Aborted:
                reg.finish(w, spec.request_id)
                reg.metrics.forward_errors.labels(w.id, "aborted").inc()
                last_error = f"worker {w.id} went down before answering"
                continue
            except httpx.HTTPError as exc:
                if isinstance(exc, httpx.TransportError) and not isinstance(
                    exc, httpx.TimeoutException
                ):
                    reg.mark_down(w, f"connection lost: {exc!r}")
                return self._fail(w, spec, "upstream", f"worker {w.id} failed: {exc!r}")
            except BaseException:
                reg.finish(w, spec.request_id)
                raise
            out_headers = {WORKER_HEADER: w.id}
            for k in _PASS_BACK_HEADERS:
                v = upstream.headers.get(k)
                if v is not None:
                    out_headers[k] = v
            if stream and upstream.status_code == 200:
                return SSEResponse(
                    self._relay(routed, spec, upstream, abort, t0),
                    on_disconnect=abort.set,
                    headers={**out_headers, "Cache-Control": "no-cache"},
                )
            return await self._collect(request, routed, spec, upstream, abort, t0, out_headers)
        reg.metrics.rejected.labels("502").inc()
        return JSONResponse(
            _bad_gateway(f"All attempts failed; last: {last_error}"), status_code=502
        )

    def _fail(self, w: WorkerEntry, spec: RequestSpec, kind: str, message: str) -> Response:
        reg = self.registry
        reg.finish(w, spec.request_id)
        reg.metrics.forward_errors.labels(w.id, kind).inc()
        reg.metrics.requests.labels(w.id, reg.policy.name, "error").inc()
        return JSONResponse(_bad_gateway(message), status_code=502, headers={WORKER_HEADER: w.id})

    async def _collect(
        self,
        request: Request,
        routed: Routed,
        spec: RequestSpec,
        upstream: httpx.Response,
        abort: asyncio.Event,
        t0: float,
        headers: dict[str, str],
    ) -> Response:
        reg, w = self.registry, routed.worker
        gone = asyncio.ensure_future(_wait_disconnect(request))
        outcome = "error"
        try:
            body = await _race(upstream.aread(), abort, gone)
            outcome = "ok" if upstream.status_code < 400 else "error"
            reg.metrics.ttft_seconds.labels(w.id).observe(time.monotonic() - t0)
            media = upstream.headers.get("content-type", "application/json")
            return Response(
                body, status_code=upstream.status_code, media_type=media, headers=headers
            )
        except _ClientGone:
            outcome = "aborted"
            return JSONResponse(error_body("client closed request", code=499), status_code=499)
        except _Aborted:
            reg.metrics.forward_errors.labels(w.id, "aborted").inc()
            return JSONResponse(
                _bad_gateway(f"worker {w.id} went down while handling the request: {w.last_error}"),
                status_code=502,
                headers=headers,
            )
        except httpx.HTTPError as exc:
            reg.metrics.forward_errors.labels(w.id, "upstream").inc()
            if isinstance(exc, httpx.TransportError) and not isinstance(
                exc, httpx.TimeoutException
            ):
                reg.mark_down(w, f"connection lost: {exc!r}")
            return JSONResponse(
                _bad_gateway(f"worker {w.id} failed while handling the request: {exc!r}"),
                status_code=502,
                headers=headers,
            )
        finally:
            gone.cancel()
            with contextlib.suppress(BaseException):
                await gone
            await upstream.aclose()
            reg.first_token(spec.request_id)
            reg.finish(w, spec.request_id)
            reg.metrics.requests.labels(w.id, reg.policy.name, outcome).inc()

    async def _relay(
        self,
        routed: Routed,
        spec: RequestSpec,
        upstream: httpx.Response,
        abort: asyncio.Event,
        t0: float,
    ) -> AsyncIterator[bytes]:
        reg, w = self.registry, routed.worker
        kind = spec.extra.get("kind")
        it = upstream.aiter_raw()
        first = False
        outcome = "error"
        tail = b"\n\n"
        try:
            while True:
                try:
                    chunk = await _race(_anext_or_none(it), abort, None)
                except _Aborted:
                    if w.healthy:  # the client went away (on_disconnect), not the worker
                        outcome = "aborted"
                        return
                    reg.metrics.forward_errors.labels(w.id, "aborted").inc()
                    yield self._sse_error(
                        tail, f"worker {w.id} went down mid-stream: {w.last_error}"
                    )
                    return
                except httpx.HTTPError as exc:
                    reg.metrics.forward_errors.labels(w.id, "upstream").inc()
                    if not isinstance(exc, httpx.TimeoutException):
                        reg.mark_down(w, f"connection lost mid-stream: {exc!r}")
                    yield self._sse_error(tail, f"worker {w.id} failed mid-stream: {exc!r}")
                    return
                if chunk is None:
                    outcome = "ok"
                    return
                if not chunk:
                    continue
                if not first and _is_token_chunk(chunk, kind):
                    first = True
                    reg.first_token(spec.request_id)
                    reg.metrics.ttft_seconds.labels(w.id).observe(time.monotonic() - t0)
                tail = chunk[-2:]
                yield chunk
        finally:
            with contextlib.suppress(BaseException):
                await upstream.aclose()
            reg.finish(w, spec.request_id)
            reg.metrics.requests.labels(w.id, reg.policy.name, outcome).inc()

    @staticmethod
    def _sse_error(tail: bytes, message: str) -> bytes:
        sep = b"" if tail == b"\n\n" else b"\n\n"
        return sep + sse(_bad_gateway(message)).encode() + SSE_DONE.encode()


async def _wait_disconnect(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return
