"""The router's HTTP API: OpenAI-compatible endpoints in front of a set of workers.

Routes: `POST /v1/chat/completions`, `POST /v1/completions` (parsed with the workers' own
parsing into a `RequestSpec`, routed by the configured policy, forwarded unchanged; SSE relayed
as received), `GET /v1/models` (union of the healthy workers'), `GET /health` (router status,
per-worker health, index size; 503 when no worker may take requests), `GET /metrics`
(Prometheus), and the admin API: `GET /admin/workers`, `POST /admin/workers`
`{id, url, events, replay, capacity_blocks}`, `DELETE /admin/workers/{id}`,
`POST /admin/workers/{id}/drain` and `/undrain` (a draining worker gets no new requests; its
in-flight ones finish).

Every error leaves as an OpenAI error body: malformed JSON 400, invalid fields 400, a body over
`max_body_bytes` 413, no healthy worker 503, a worker that fails 502.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from agentctl.serving.config import RouterConfig, RouterWorkerSettings
from agentctl.serving.costmodel import CostModel
from agentctl.serving.http import install_error_handlers
from agentctl.serving.prepare import prepare_request
from agentctl.serving.protocol import (
    ProtocolError,
    RequestKind,
    parse_json_body,
    read_limited,
)
from agentctl.serving.router.policies import make_policy
from agentctl.serving.router.proxy import WORKER_HEADER, Forwarder
from agentctl.serving.router.registry import Registry, WorkerEntry
from agentctl.serving.router.router_metrics import CONTENT_TYPE_LATEST, RouterMetrics
from agentctl.serving.tokenizer import Tokenizer, load_tokenizer

__all__ = ["WORKER_HEADER", "RouterState", "create_app"]


class RouterState:
    """What the routes share; the forwarder's HTTP client lives only while the app runs."""

    def __init__(self, config: RouterConfig, tokenizer: Tokenizer, registry: Registry) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.registry = registry
        self.forwarder: Forwarder | None = None
        self.started_at = int(time.time())

    def require_forwarder(self) -> Forwarder:
        if self.forwarder is None:
            raise ProtocolError("The router is not running.", 503, type="service_unavailable")
        return self.forwarder


def create_app(config: RouterConfig) -> FastAPI:
    """The router app. Workers from `config` are registered now; event subscriptions, the
    health loop and the HTTP client start in the lifespan. `ValueError` for a bad policy or
    duplicate worker ids, `TokenizerUnavailable` for a bad tokenizer."""
    metrics = RouterMetrics()
    options = dict(config.policy_options)
    if config.policy == "kv" and "cost" not in options:
        options["cost"] = CostModel(time_scale=config.time_scale)
    policy = make_policy(config.policy, **options)
    registry = Registry(
        policy,
        block_size=config.block_size,
        metrics=metrics,
        health_interval_s=config.health_interval_s,
        health_timeout_s=config.health_timeout_s,
        replay_timeout_s=config.replay_timeout_s,
        predicted_ttl_s=config.predicted_ttl_s,
        approximate_ttl_s=config.approximate_ttl_s,
        unhealthy_threshold=config.unhealthy_threshold,
        stall_s=config.stall_s,
        eject_after=config.eject_after,
        eject_base_s=config.eject_base_s,
        eject_max_s=config.eject_max_s,
        max_ejection_percent=config.max_ejection_percent,
        snapshot_timeout_s=config.snapshot_timeout_s,
        overload_lag_s=config.overload_lag_s,
    )
    for i, ws in enumerate(config.workers):
        _add_worker(registry, ws, default_id=f"w{i}")
    for worker_id in _load_drained(config.state_file):
        if worker_id in registry.workers:
            registry.set_draining(worker_id, True)
    admin_token = _load_token(config.admin_token_file)
    state = RouterState(config, load_tokenizer(config.tokenizer), registry)

    def save_drained() -> None:
        if config.state_file is not None:
            drained = sorted(w.id for w in registry.workers.values() if w.draining)
            _atomic_write(config.state_file, json.dumps({"draining": drained}) + "\n")

    async def require_admin(request: Request) -> None:
        if admin_token is None:
            return
        got = request.headers.get("authorization", "")
        if not hmac.compare_digest(got.encode(), f"Bearer {admin_token}".encode()):
            raise ProtocolError(
                "admin endpoints need 'Authorization: Bearer <token>'",
                401,
                type="authentication_error",
            )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        timeout = httpx.Timeout(
            connect=config.connect_timeout_s,
            read=config.read_timeout_s,
            write=30.0,
            pool=config.connect_timeout_s,
        )
        # one connection per stream in flight; idle ones expire well before the workers'
        # keep-alive timeout (uvicorn: 5 s), so a request never lands on a connection the
        # worker is closing (that race was the "ReadError('')" that fenced healthy workers)
        limits = httpx.Limits(
            max_connections=config.max_in_flight + 64,
            max_keepalive_connections=1024,
            keepalive_expiry=2.0,
        )
        forwarder = Forwarder(
            registry,
            httpx.AsyncClient(timeout=timeout, limits=limits),
            client_factory=lambda: httpx.AsyncClient(timeout=timeout, limits=limits),
            max_attempts=config.max_attempts,
            max_migrations=config.max_migrations,
            max_in_flight=config.max_in_flight,
        )
        state.forwarder = forwarder
        await registry.start()
        try:
            yield
        finally:
            state.forwarder = None
            await registry.stop()
            await forwarder.aclose()

    app = FastAPI(
        title="agentctl KV-aware router",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.router = state

    def count_refused(request: Request, exc: ProtocolError) -> None:
        state: RouterState = request.app.state.router
        state.registry.metrics.rejected.labels(str(exc.status)).inc()

    install_error_handlers(app, on_refused=count_refused)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await _handle(state, request, "completion")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await _handle(state, request, "chat")

    @app.get("/v1/models")
    async def models() -> Response:
        return JSONResponse({"object": "list", "data": await _models(state)})

    @app.get("/health")
    async def health() -> Response:
        stats = registry.index_stats()
        workers = [w.describe() for w in registry.workers.values()]
        ready = any(w.healthy and not w.draining for w in registry.workers.values())
        body = {
            "status": "ok" if ready else "no_healthy_workers",
            "policy": policy.name,
            "block_size": config.block_size,
            "tokenizer": state.tokenizer.name,
            "workers": workers,
            "index": asdict(stats),
            "in_flight": registry.in_flight(),
            "loop_lag_s": round(registry.lag.lag_s, 4),
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def metrics_route() -> Response:
        metrics.observe_index(registry.index_stats())
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    # ---- admin ------------------------------------------------------------------------------

    admin = [Depends(require_admin)]

    @app.get("/admin/workers", dependencies=admin)
    async def list_workers() -> Response:
        return JSONResponse({"workers": [w.describe() for w in registry.workers.values()]})

    @app.post("/admin/workers", dependencies=admin)
    async def add_worker(request: Request) -> Response:
        raw = await read_limited(request.stream(), 65536, request.headers.get("content-length"))
        body = parse_json_body(raw)
        try:
            ws = RouterWorkerSettings.model_validate(body)
        except ValidationError as exc:
            errs = exc.errors()
            loc = ".".join(str(p) for p in errs[0]["loc"]) if errs else ""
            msg = errs[0]["msg"] if errs else "invalid value"
            raise ProtocolError(f"{loc}: {msg}", param=loc or None) from None
        if ws.id is None:
            raise ProtocolError("'id' is required.", param="id")
        if ws.id in registry.workers:
            raise ProtocolError(f"worker {ws.id!r} already exists", 409, type="conflict_error")
        w = _add_worker(registry, ws, default_id=ws.id)
        await registry.poll_health()
        return JSONResponse(w.describe(), status_code=201)

    @app.delete("/admin/workers/{worker_id}", dependencies=admin)
    async def remove_worker(worker_id: str) -> Response:
        _known(registry, worker_id)
        w = await registry.remove(worker_id)
        return JSONResponse({"removed": w.id, "in_flight": len(w.inflight)})

    @app.post("/admin/workers/{worker_id}/drain", dependencies=admin)
    async def drain(worker_id: str) -> Response:
        _known(registry, worker_id)
        w = registry.set_draining(worker_id, True)
        save_drained()
        return JSONResponse(w.describe())

    @app.post("/admin/workers/{worker_id}/undrain", dependencies=admin)
    async def undrain(worker_id: str) -> Response:
        _known(registry, worker_id)
        w = registry.set_draining(worker_id, False)
        save_drained()
        return JSONResponse(w.describe())

    return app


def _load_token(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"admin_token_file {path}: {exc.strerror or exc}") from None
    if len(token) < 16:
        raise ValueError(f"admin_token_file {path}: the token must be at least 16 characters")
    return token


def _load_drained(path: str | None) -> list[str]:
    if path is None or not Path(path).exists():
        return []
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
        drained = doc["draining"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"state_file {path}: unreadable ({exc})") from None
    if not isinstance(drained, list) or not all(isinstance(x, str) for x in drained):
        raise ValueError(f"state_file {path}: 'draining' must be a list of worker ids")
    return drained


def _atomic_write(path: str, text: str) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _known(registry: Registry, worker_id: str) -> None:
    if worker_id not in registry.workers:
        raise ProtocolError(f"no worker {worker_id!r}", 404, type="not_found_error")


def _add_worker(registry: Registry, ws: RouterWorkerSettings, *, default_id: str) -> WorkerEntry:
    try:
        return registry.add(
            ws.id or default_id,
            ws.url,
            capacity_blocks=ws.capacity_blocks,
            events=ws.events,
            replay=ws.replay,
            topic=ws.topic,
            token_budget=ws.token_budget,
        )
    except ValueError as exc:
        raise ProtocolError(str(exc), 409, type="conflict_error") from None


async def _handle(state: RouterState, request: Request, kind: RequestKind) -> Response:
    cfg = state.config
    forwarder = state.require_forwarder()
    raw = await read_limited(
        request.stream(), cfg.max_body_bytes, request.headers.get("content-length")
    )
    _, spec = await prepare_request(
        raw,
        request.headers,
        state.tokenizer,
        cfg.block_size,
        uuid.uuid4().hex,
        kind=kind,
        default_max_tokens=cfg.default_max_tokens,
        max_tokens_cap=cfg.max_tokens_cap,
        arrival_s=time.monotonic(),
    )
    return await forwarder.forward(request, spec, raw)


async def _models(state: RouterState) -> list[dict[str, Any]]:
    forwarder = state.require_forwarder()
    ws = [w for w in state.registry.workers.values() if w.healthy]

    async def one(url: str) -> list[dict[str, Any]]:
        try:
            r = await forwarder.client.get(url + "/v1/models", timeout=2.0)
            data = r.json().get("data") if r.status_code == 200 else None
        except (httpx.HTTPError, ValueError, AttributeError):
            return []
        return [m for m in data if isinstance(m, dict)] if isinstance(data, list) else []

    seen: dict[str, dict[str, Any]] = {}
    for models in await asyncio.gather(*(one(w.url) for w in ws)):
        for m in models:
            mid = m.get("id")
            if isinstance(mid, str) and mid not in seen:
                seen[mid] = m
    return list(seen.values())
