"""The JSON API under /api/v1: the read model's views in the common envelope, the same numbers
the pages show. The TUI's remote client reads exactly these paths and schemas.

Handlers return ready JSON (no response-model re-validation on the hot path); the pydantic
models below only document the shapes in /openapi.json.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.responses import JSONResponse

from agentctl.collectors.store import EventView, RunRecord
from agentctl.ctl.envelope import envelope
from agentctl.ctl.run_output import for_viewer
from agentctl.dashboard.actions import ActionResult
from agentctl.dashboard.readmodel import NodeDetail, NodeRow, ServingView
from agentctl.dashboard.serialize import to_json

from .auth import Principal, check_csrf, current_user, has_role
from .state import API_PREFIX, WebError, do_action, web_state

RangeName = Literal["15m", "1h", "6h", "24h", "7d", "30d"]
Viewer = Annotated[Principal, Depends(current_user("viewer"))]
Operator = Annotated[Principal, Depends(current_user("operator"))]
NodeName = Annotated[str, Path(min_length=1, max_length=255, description="node name")]


class ErrorItem(BaseModel):
    kind: str
    message: str
    host: str | None = None
    hint: str | None = None


class Meta(BaseModel):
    model_config = ConfigDict(populate_by_name=True)
    tool: str
    version: str
    schema_: str = Field(alias="schema", description="names the shape of `data`")
    collected_at: str


class _Envelope(BaseModel):
    ok: bool
    errors: list[ErrorItem]
    meta: Meta


class ErrorEnvelope(_Envelope):
    data: None = None


class FleetData(BaseModel):
    generated_at: datetime
    nodes: list[NodeRow]
    totals: dict[str, Any]


class Me(BaseModel):
    username: str
    role: str
    via: str


class FleetEnvelope(_Envelope):
    data: FleetData


class NodeEnvelope(_Envelope):
    data: NodeDetail


class ServingEnvelope(_Envelope):
    data: ServingView


class EventsEnvelope(_Envelope):
    data: list[EventView]


class RunsEnvelope(_Envelope):
    data: list[RunRecord]


class RunEnvelope(_Envelope):
    data: RunRecord


class ActionEnvelope(_Envelope):
    data: ActionResult


class MeEnvelope(_Envelope):
    data: Me


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    text = {401: "not authenticated", 403: "role too weak, or CSRF token missing",
            404: "no such node or run", 422: "invalid parameters", 429: "rate limited",
            503: "actions unavailable, or the store is"}  # fmt: skip
    return {c: {"model": ErrorEnvelope, "description": text[c]} for c in codes}


router = APIRouter(prefix=API_PREFIX, tags=["api"], responses=_errors(401, 403, 422))


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


class EnvelopeResponse(JSONResponse):
    """Strict JSON: a stray infinity becomes null instead of invalid JSON or a 500."""

    def render(self, content: Any) -> bytes:
        try:
            text = json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        except ValueError:
            text = json.dumps(_finite(content), ensure_ascii=False, separators=(",", ":"))
        return text.encode("utf-8")


def answer(
    data: Any,
    schema: str,
    *,
    ok: bool = True,
    errors: list[dict[str, str]] | None = None,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> EnvelopeResponse:
    doc = envelope(data, schema=schema, ok=ok, errors=errors or [])
    return EnvelopeResponse(doc, status_code=status, headers=headers)


@router.get("/me", response_model=None, responses={200: {"model": MeEnvelope}})
def me(who: Viewer) -> EnvelopeResponse:
    """Who this session or token is, and its role."""
    return answer({"username": who.username, "role": who.role, "via": who.via}, "agentctl.api.me/1")


@router.get("/fleet", response_model=None, responses={200: {"model": FleetEnvelope}})
def fleet(request: Request, _who: Viewer) -> EnvelopeResponse:
    """Every node: health from the last L1, GPU roll-ups with sparklines, serving, alerts."""
    view = web_state(request).model.fleet()
    data = to_json(view)
    data["totals"] = view.totals()
    return answer(data, "agentctl.api.fleet/1")


@router.get("/nodes/{name:path}", response_model=None,
            responses={200: {"model": NodeEnvelope}, **_errors(404)})  # fmt: skip
def node(
    request: Request,
    name: NodeName,
    _who: Viewer,
    range_: Annotated[RangeName, Query(alias="range")] = "24h",
) -> EnvelopeResponse:
    """One node: GPUs, charts over `range` (resolution chosen by the store), diagnostics."""
    detail = web_state(request).model.node(name, range_)
    if detail is None:
        raise WebError(404, "not_found", f"no node {name!r}", schema="agentctl.api.node/1")
    return answer(to_json(detail), "agentctl.api.node/1")


@router.get("/serving", response_model=None, responses={200: {"model": ServingEnvelope}})
def serving(
    request: Request,
    _who: Viewer,
    range_: Annotated[RangeName, Query(alias="range")] = "1h",
) -> EnvelopeResponse:
    """Engine workers (load, KV usage and hit rate, TTFT/ITL, requests and charts over
    `range`), the router nodes, the stored trace replay (KV-aware against round-robin) and
    notes on where each TTFT is measured."""
    view = web_state(request).model.serving(range_)
    return answer(to_json(view), "agentctl.api.serving/1")


@router.get("/events", response_model=None, responses={200: {"model": EventsEnvelope}})
def events(
    request: Request,
    _who: Viewer,
    node: Annotated[str | None, Query(max_length=255)] = None,
    kind: Annotated[list[str] | None, Query(max_length=20)] = None,
    severity: Annotated[list[str] | None, Query(max_length=20)] = None,
    since_hours: Annotated[float | None, Query(gt=0, le=24 * 400)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> EnvelopeResponse:
    """Xids, failed checks and other events, newest first; filters combine with AND."""
    found = web_state(request).model.events(
        node=node or None,
        kinds=[k for k in kind or [] if k],
        severities=[s for s in severity or [] if s],
        since=timedelta(hours=since_hours) if since_hours else None,
        limit=limit,
    )
    return answer(to_json(found), "agentctl.api.events/1")


@router.get("/runs", response_model=None, responses={200: {"model": RunsEnvelope}})
def runs(
    request: Request, who: Viewer, limit: Annotated[int, Query(ge=1, le=500)] = 50
) -> EnvelopeResponse:
    """Provisioning and diagnostic runs, newest first, with per-host results. Output is as
    stored (redacted unless the run was stored raw) for operators, always redacted for
    viewers."""
    found = [_as_seen(r, who) for r in web_state(request).model.runs(limit)]
    return answer(to_json(found), "agentctl.api.runs/1")


@router.get("/runs/{run_id}", response_model=None,
            responses={200: {"model": RunEnvelope}, **_errors(404)})  # fmt: skip
def run(
    request: Request, run_id: Annotated[int, Path(ge=1, le=2**63 - 1)], who: Viewer
) -> EnvelopeResponse:
    """One run with its per-host results; output redacted for viewers, as in `/runs`."""
    found = web_state(request).model.run(run_id)
    if found is None:
        raise WebError(404, "not_found", f"no run {run_id}", schema="agentctl.api.run/1")
    return answer(to_json(_as_seen(found, who)), "agentctl.api.run/1")


def _as_seen(run: RunRecord, who: Principal) -> RunRecord:
    """Raw run output is for operators only: a viewer always gets it redacted."""
    return run if has_role(who.role, "operator") else for_viewer(run)


def _action_route(action: str, doc: str) -> Callable[..., EnvelopeResponse]:
    def handler(
        request: Request,
        name: NodeName,
        who: Operator,
        x_csrf_token: Annotated[str | None, Header(max_length=200)] = None,
    ) -> EnvelopeResponse:
        check_csrf(who, x_csrf_token)
        schema = "agentctl.api.action/1"
        result = do_action(web_state(request), name, action, schema=schema)
        errors = [] if result.ok else [{"kind": "action_failed", "message": result.message}]
        return answer(to_json(result), schema, ok=result.ok, errors=errors)

    handler.__doc__ = doc + " Operators and admins; with a session cookie, send X-CSRF-Token."
    handler.__name__ = f"node_{action}"
    return handler


for _action, _doc in (("l1", "Run L1 diagnostics on the node now."),
                      ("drain", "Stop routing new requests to the node's workers."),
                      ("undrain", "Route requests to the node's workers again.")):  # fmt: skip
    router.add_api_route(
        f"/nodes/{{name:path}}/{_action}",
        _action_route(_action, _doc),
        methods=["POST"],
        response_model=None,
        responses={200: {"model": ActionEnvelope}, **_errors(404, 503)},
    )
