"""The worker's HTTP API: OpenAI-compatible completions over a simulated engine.

Routes: `POST /v1/completions`, `POST /v1/chat/completions` (SSE with `stream: true`, ending
with `data: [DONE]`; else JSON with `usage.prompt_tokens_details.cached_tokens`),
`GET /v1/models`, `GET /health` (engine stats, the boot `instance_id`), `GET /metrics`
(Prometheus, vLLM names), `GET /kv/snapshot` (every block in the prefix cache, see
`snapshot_json`, with the KV event sequence number it is exact at),
`POST /v1/admin/reset_prefix_cache` (also `/reset_prefix_cache`, vLLM's path).

Bodies are read and parsed here rather than by FastAPI so that every bad input gets an OpenAI
error body and a 4xx: malformed JSON 400, invalid fields 400, a body over `max_body_bytes` 413,
a prompt larger than the whole KV cache 400. A client that disconnects (mid-stream or while
waiting for a JSON response) has its request cancelled in the engine, releasing its blocks.
Generated text is deterministic filler: the simulation models timing and caching, not content.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from agentctl.serving.config import WorkerConfig
from agentctl.serving.engine import EngineCore, RequestTooLarge
from agentctl.serving.events import ZmqEventPublisher
from agentctl.serving.http import SSEResponse, install_error_handlers
from agentctl.serving.prepare import prepare_request
from agentctl.serving.protocol import (
    SSE_DONE,
    ProtocolError,
    RequestKind,
    chat_chunk,
    chat_completion_response,
    completion_chunk,
    completion_response,
    error_body,
    read_limited,
    sse,
    usage,
    usage_chunk,
)
from agentctl.serving.tokenizer import Tokenizer, load_tokenizer
from agentctl.serving.worker.metrics import CONTENT_TYPE_LATEST, WorkerMetrics
from agentctl.serving.worker.runner import CacheSnapshot, EngineRunner, Output, RequestHandle

__all__ = ["FILLER", "WorkerState", "create_app", "filler_text", "snapshot_json"]

#: the generated "text": token i is FILLER[i % len(FILLER)]
FILLER = (" lorem", " ipsum", " dolor", " sit", " amet", ",", " consectetur", " adipiscing", ".")


def filler_text(start: int, count: int) -> str:
    """The text of generated tokens `start .. start + count - 1`."""
    n = len(FILLER)
    return "".join(FILLER[i % n] for i in range(start, start + count))


class WorkerState:
    """What the routes share; the runner exists only while the app is started (lifespan)."""

    def __init__(self, config: WorkerConfig, tokenizer: Tokenizer, metrics: WorkerMetrics):
        self.config = config
        self.tokenizer = tokenizer
        self.metrics = metrics
        self.runner: EngineRunner | None = None
        self.publisher: ZmqEventPublisher | None = None
        self.started_at = int(time.time())
        #: boot nonce, in /health and in every KV event batch: a new one means a new process
        #: (a new cache, sequence numbers from 0), whatever the sequence numbers say
        self.instance_id = secrets.token_hex(8)
        #: bodies being parsed and tokenized (large ones in a thread, see `prepare.py`)
        self.preparing = 0

    def require_runner(self) -> EngineRunner:
        if self.runner is None or not self.runner.running:
            raise ProtocolError("The engine is not running.", 503, type="service_unavailable")
        return self.runner


def create_app(config: WorkerConfig) -> FastAPI:
    """The worker app. Sockets (KV events) are bound and the engine loop started in the app's
    lifespan, so building the app has no side effects; a bad tokenizer fails here."""
    state = WorkerState(config, load_tokenizer(config.tokenizer), WorkerMetrics(config.model))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ev = config.events
        publisher = None
        if ev.endpoint:
            publisher = ZmqEventPublisher(
                ev.endpoint,
                ev.replay_endpoint,
                ev.topic,
                ev.buffer_steps,
                instance_id=state.instance_id if ev.send_instance_id else None,
            )
        runner = EngineRunner(
            EngineCore(config.engine_config(), config.cost_model()),
            publisher=publisher,
            metrics=state.metrics,
        )
        await runner.start()
        state.runner, state.publisher = runner, publisher
        try:
            yield
        finally:
            await runner.stop()
            state.runner = None
            if publisher is not None:
                publisher.close()

    app = FastAPI(
        title="agentctl simulated engine worker",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.worker = state
    install_error_handlers(app)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await _generate(state, request, "completion")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await _generate(state, request, "chat")

    @app.get("/v1/models")
    async def models() -> Response:
        eng = config.engine
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {
                        "id": config.model,
                        "object": "model",
                        "created": state.started_at,
                        "owned_by": "agentctl",
                        "max_model_len": eng.capacity_blocks * eng.block_size,
                        "max_tokens_cap": config.max_tokens_cap,
                    }
                ],
            }
        )

    @app.get("/health")
    async def health() -> Response:
        runner = state.runner
        if runner is None or not runner.running:
            return JSONResponse(
                {"status": "starting", **error_body("engine not running", "service_unavailable")},
                status_code=503,
            )
        eng = config.engine
        return JSONResponse(
            {
                "status": "ok",
                "instance_id": state.instance_id,
                "model": config.model,
                "tokenizer": state.tokenizer.name,
                "block_size": eng.block_size,
                "capacity_blocks": eng.capacity_blocks,
                "max_num_batched_tokens": eng.max_num_batched_tokens,
                "max_num_seqs": eng.max_num_seqs,
                "time_scale": config.cost.time_scale,
                "kv_events": {
                    "endpoint": config.events.endpoint,
                    "replay_endpoint": config.events.replay_endpoint,
                    "topic": config.events.topic,
                },
                **runner.stats(),
                "requests_preparing": state.preparing,
            }
        )

    @app.get("/kv/snapshot")
    async def kv_snapshot() -> Response:
        snap = await state.require_runner().snapshot()
        # the copy was taken on the loop (cheap); encoding 16k pairs is not, so off it
        body = await asyncio.to_thread(
            snapshot_json, state.instance_id, config.engine.block_size, snap
        )
        return Response(body, media_type="application/json")

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def reset_prefix_cache() -> Response:
        await state.require_runner().reset_prefix_cache()
        return JSONResponse({"status": "ok"})

    app.add_api_route("/v1/admin/reset_prefix_cache", reset_prefix_cache, methods=["POST"])
    app.add_api_route("/reset_prefix_cache", reset_prefix_cache, methods=["POST"])
    return app


def snapshot_json(instance_id: str, block_size: int, snap: CacheSnapshot) -> bytes:
    """`GET /kv/snapshot`'s body: `{"instance_id", "next_seq", "block_size", "blocks":
    [[hash, parent_or_null], ...]}`, parents before children."""
    doc = {
        "instance_id": instance_id,
        "next_seq": snap.next_seq,
        "block_size": block_size,
        "blocks": list(zip(snap.hashes, snap.parents, strict=True)),
    }
    return json.dumps(doc, separators=(",", ":")).encode()


# ---- generation -----------------------------------------------------------------------------


async def _generate(state: WorkerState, request: Request, kind: RequestKind) -> Response:
    cfg = state.config
    runner = state.require_runner()
    raw = await read_limited(
        request.stream(), cfg.max_body_bytes, request.headers.get("content-length")
    )
    rid = uuid.uuid4().hex
    state.preparing += 1
    try:
        body, spec = await prepare_request(
            raw,
            request.headers,
            state.tokenizer,
            cfg.engine.block_size,
            rid,
            kind=kind,
            default_max_tokens=cfg.default_max_tokens,
            max_tokens_cap=cfg.max_tokens_cap,
            arrival_s=runner.now(),
        )
    finally:
        state.preparing -= 1
    runner = state.require_runner()  # a large body was prepared in a thread: still running?
    try:
        handle = runner.submit(spec)
    except RequestTooLarge as exc:
        raise ProtocolError(
            f"This request needs more KV cache than the worker has: {exc}.",
            param="messages" if kind == "chat" else "prompt",
            code="context_length_exceeded",
        ) from None
    except ValueError as exc:
        raise ProtocolError(str(exc)) from None
    model = body.get("model") if isinstance(body.get("model"), str) else None
    ctx = _ResponseContext(
        kind=kind,
        response_id=("chatcmpl-" if kind == "chat" else "cmpl-") + rid,
        model=model or cfg.model,
        created=int(time.time()),
        include_usage=bool(spec.extra.get("include_usage")),
    )
    headers = {"X-Request-Id": rid}
    if spec.extra.get("stream"):
        return SSEResponse(
            _stream(runner, handle, ctx),
            on_disconnect=lambda: _abandon(runner, handle),
            headers={**headers, "Cache-Control": "no-cache"},
        )
    return await _collect(runner, handle, ctx, request, headers)


class _ResponseContext:
    __slots__ = ("created", "include_usage", "kind", "model", "response_id")

    def __init__(
        self, *, kind: RequestKind, response_id: str, model: str, created: int, include_usage: bool
    ) -> None:
        self.kind = kind
        self.response_id = response_id
        self.model = model
        self.created = created
        self.include_usage = include_usage

    def chunk(self, text: str, finish_reason: str | None = None) -> str:
        if self.kind == "chat":
            delta: dict[str, Any] = {"content": text} if text else {}
            return sse(chat_chunk(self.response_id, self.model, self.created, delta, finish_reason))
        return sse(
            completion_chunk(self.response_id, self.model, self.created, text, finish_reason)
        )

    def usage_of(self, h: RequestHandle) -> dict[str, Any]:
        return usage(h.spec.prompt_tokens, h.generated, h.cached_tokens)


def _abandon(runner: EngineRunner, h: RequestHandle) -> None:
    """The client is gone: free the request's blocks now and end its stream."""
    if runner.cancel(h.request_id):
        h.queue.put_nowait(Output("abort", reason="client disconnected"))


async def _stream(
    runner: EngineRunner, h: RequestHandle, ctx: _ResponseContext
) -> AsyncIterator[str]:
    """SSE chunks, one per token; ends early with an error event if the request is aborted
    (shutdown, or the client gone: see `SSEResponse`). If the generator is closed before the
    end, the `finally` releases the request in the engine."""
    ended = False
    sent = 0
    try:
        if ctx.kind == "chat":
            yield sse(
                chat_chunk(
                    ctx.response_id, ctx.model, ctx.created, {"role": "assistant", "content": ""}
                )
            )
        while not ended:
            outs = [await h.queue.get()]
            while not h.queue.empty():
                outs.append(h.queue.get_nowait())
            parts: list[str] = []
            for out in outs:
                if out.kind == "token":
                    parts.append(ctx.chunk(filler_text(sent, 1)))
                    sent += 1
                elif out.kind == "finish":
                    parts.append(ctx.chunk("", out.reason or "length"))
                    if ctx.include_usage:
                        parts.append(
                            sse(
                                usage_chunk(
                                    ctx.kind,
                                    ctx.response_id,
                                    ctx.model,
                                    ctx.created,
                                    ctx.usage_of(h),
                                )
                            )
                        )
                    parts.append(SSE_DONE)
                    ended = True
                    break
                else:
                    parts.append(sse(error_body(out.reason, "service_unavailable", code=503)))
                    parts.append(SSE_DONE)
                    ended = True
                    break
            yield "".join(parts)
    finally:
        if not ended:
            runner.cancel(h.request_id)


async def _wait_disconnect(request: Request) -> None:
    """Returns when the client closes the connection (the body has been read already)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def _drain(h: RequestHandle) -> Output:
    while True:
        out = await h.queue.get()
        if out.kind != "token":
            return out


async def _collect(
    runner: EngineRunner,
    h: RequestHandle,
    ctx: _ResponseContext,
    request: Request,
    headers: dict[str, str],
) -> Response:
    final = asyncio.ensure_future(_drain(h))
    gone = asyncio.ensure_future(_wait_disconnect(request))
    try:
        await asyncio.wait({final, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not final.done():
            final.cancel()
            runner.cancel(h.request_id)
        gone.cancel()
        for t in (final, gone):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
    if final.cancelled():
        return JSONResponse(error_body("client closed request", code=499), status_code=499)
    out = final.result()
    if out.kind == "abort":
        return JSONResponse(
            error_body(out.reason, "service_unavailable", code=503),
            status_code=503,
            headers=headers,
        )
    text = filler_text(0, h.generated)
    build = chat_completion_response if ctx.kind == "chat" else completion_response
    body = build(ctx.response_id, ctx.model, ctx.created, text, out.reason, ctx.usage_of(h))
    return JSONResponse(body, headers=headers)
