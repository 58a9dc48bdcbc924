"""Server-rendered pages: fleet, node, serving, events, runs, login; forms for operator
actions. No JavaScript: sorting and filtering are query parameters, actions are POST forms
carrying the session's CSRF token, and every answer is a whole page."""

from __future__ import annotations

import hmac
import re
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Request
from starlette.responses import FileResponse, RedirectResponse, Response

from agentctl.ctl.run_output import for_viewer, stored_raw
from agentctl.dashboard.readmodel import GPU_FIELDS, NODE_CHARTS, RANGES, Chart, NodeRow

from .auth import (
    USED,
    Principal,
    check_csrf,
    client_ip,
    current_user,
    end_session,
    has_role,
    is_one_time,
    login_csrf,
    safe_next,
    start_session,
    verify_password,
)
from .render import flash, render
from .state import ACTIONS, WebError, WebState, do_action, web_state

router = APIRouter(include_in_schema=False)
Viewer = Annotated[Principal, Depends(current_user("viewer"))]
Operator = Annotated[Principal, Depends(current_user("operator"))]

BUNDLE_NAME = re.compile(r"^agentctl-l2-([A-Za-z0-9_.-]{1,64})-(\d{8}T\d{6}Z)\.tar\.gz$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")  # as the bundle writer names hosts
HEALTH_RANK = {"fail": 0, "warn": 1, "unknown": 2, "skip": 3, "pass": 4}
SORTS: dict[str, Callable[[NodeRow], Any]] = {
    "name": lambda r: r.name,
    "health": lambda r: HEALTH_RANK.get(r.health or "unknown", 2),
    "gpus": lambda r: (r.gpu_count or 0) + r.replayed_gpus if r.gpu_count is not None else None,
    "cpu": lambda r: r.cpu_pct,
    "util": lambda r: r.util_pct,
    "mem": lambda r: r.mem_used_pct,
    "temp": lambda r: r.temp_c,
    "power": lambda r: r.power_w,
    "kv": lambda r: r.kv_hit_rate,
    "ttft": lambda r: r.ttft_p99_s,
    "alerts": lambda r: r.open_alerts,
}
#: first click on a column: names A-Z, health worst first, numbers largest first
FIRST_DIR = {"name": "asc", "health": "asc"}
SINCE = {"1h": 1, "6h": 6, "24h": 24, "7d": 24 * 7, "30d": 24 * 30, "all": None}
SEVERITIES = ("critical", "warn", "info")


def _ctx(request: Request, who: Principal, nav: str, **extra: Any) -> dict[str, Any]:
    state = web_state(request)
    can_act = has_role(who.role, "operator") and state.actions is not None
    return {"user": who, "csrf": who.csrf or "", "nav": nav, "can_act": can_act, **extra}


def sort_rows(rows: list[NodeRow], key: str, direction: str) -> list[NodeRow]:
    """Server-side sort; rows without a value go last whatever the direction."""
    get = SORTS[key]
    have = [r for r in rows if get(r) is not None]
    have.sort(key=lambda r: (get(r), r.name), reverse=direction == "desc")
    return have + sorted((r for r in rows if get(r) is None), key=lambda r: r.name)


def chart_start(range_start: datetime, charts: Sequence[Chart]) -> datetime:
    """Where the charts' time axis begins: the range's start, or a step before the oldest
    point when the data begins later (a minutes-old fleet would otherwise be a dot at the
    right edge). The end stays `now`, so a node gone silent still shows as a gap."""
    firsts = [(c.points[0][0], c.step_s) for c in charts if c.points]
    if not firsts:
        return range_start
    first, step = min(firsts)
    return max(range_start, first - timedelta(seconds=max(step, 1.0)))


def _matches(row: NodeRow, q: str) -> bool:
    hay = " ".join((row.name, row.address, row.health or "unknown", *row.roles, *row.groups))
    return q.casefold() in hay.casefold()


# -- login -------------------------------------------------------------------------------------


@router.get("/login")
def login_form(request: Request, next: str = "/") -> Response:
    return render(request, "login.html.j2", {"csrf": login_csrf(request), "next": safe_next(next),
                                             "error": None})  # fmt: skip


@router.post("/login")
def login(
    request: Request,
    username: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    csrf_token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    state = web_state(request)
    target = safe_next(next)

    def again(error: str, status: int, headers: dict[str, str] | None = None) -> Response:
        ctx = {"csrf": login_csrf(request), "next": target, "error": error, "username": username}
        page = render(request, "login.html.j2", ctx, status)
        page.headers.update(headers or {})
        return page

    expected = login_csrf(request)
    if not hmac.compare_digest(csrf_token.encode(), expected.encode()):
        return again("The form expired; please try again.", 403)
    username = username.strip()[:255]
    ip = client_ip(request)
    wait = state.limiter.retry_after(ip, username)
    if wait is not None:
        return again(f"Too many failed logins; try again in {wait} s.", 429,
                     {"Retry-After": str(wait)})  # fmt: skip
    user = state.model.store.get_user(username) if username else None
    usable = user is not None and not user.disabled
    ok, new_hash = verify_password(password, user.password_hash if usable and user else None)
    # a one-time password is consumed by the login that uses it, and by that login only
    if ok and user is not None and is_one_time(user.password_hash):
        ok = state.model.store.swap_password_hash(user.username, user.password_hash, USED)
    if not ok or user is None:
        state.limiter.failed(ip, username)
        return again("Invalid username or password.", 401)
    state.limiter.succeeded(ip, username)
    if new_hash:
        state.model.store.put_user(user.username, new_hash, user.role)
    state.model.store.touch_login(user.username)
    start_session(request, user)
    return RedirectResponse(target, status_code=303)


@router.post("/logout")
def logout(request: Request, csrf_token: Annotated[str, Form()] = "") -> Response:
    expected = request.session.get("csrf")
    if isinstance(expected, str) and hmac.compare_digest(csrf_token.encode(), expected.encode()):
        end_session(request)
        return RedirectResponse("/login", status_code=303)
    raise WebError(403, "csrf", "missing or invalid CSRF token: reload the page and retry")


# -- pages -------------------------------------------------------------------------------------


@router.get("/")
def fleet(request: Request, who: Viewer, sort: str = "name", dir: str = "",
          q: str = "") -> Response:  # fmt: skip
    view = web_state(request).model.fleet()
    key = sort if sort in SORTS else "name"
    direction = dir if dir in ("asc", "desc") else FIRST_DIR.get(key, "desc")
    rows = sort_rows([r for r in view.nodes if not q or _matches(r, q)], key, direction)
    return render(request, "fleet.html.j2", _ctx(
        request, who, "fleet", view=view, rows=rows, totals=view.totals(), sort=key,
        dir=direction, q=q, first_dir=FIRST_DIR,
    ))  # fmt: skip


@router.get("/nodes/{name:path}")
def node(request: Request, name: str, who: Viewer, range: str = "") -> Response:
    """One node. `{name:path}`: a node name may hold `/` (encoded `%2F`, which the server
    decodes before routing), so the name is the rest of the path; actions are POSTs on
    `<name>/<action>`, told apart by method and their last segment."""
    state = web_state(request)
    detail = state.model.node(name, range)
    if detail is None:
        raise WebError(404, "not_found", f"no node {name!r}")
    operator = has_role(who.role, "operator")
    bundles = list_bundles(state, name, detail) if operator else []
    now = state.model.now()
    start = chart_start(now - RANGES[detail.range_name], detail.charts)
    return render(request, "node.html.j2", _ctx(
        request, who, "fleet", d=detail, row=detail.row, ranges=list(RANGES),
        start=start, end=now, gpu_fields=GPU_FIELDS,
        node_charts=NODE_CHARTS, bundles=bundles, operator=operator, actions=ACTIONS,
    ))  # fmt: skip


@router.post("/nodes/{name:path}/{action}")
def node_action(request: Request, name: str, action: str, who: Operator,
                csrf_token: Annotated[str, Form()] = "") -> Response:  # fmt: skip
    check_csrf(who, csrf_token)
    result = do_action(web_state(request), name, action, schema="agentctl.api.action/1")
    flash(request, "ok" if result.ok else "error", f"{action} on {name}: {result.message}")
    return RedirectResponse(f"/nodes/{quote(name, safe='')}", status_code=303)


@router.get("/serving")
def serving(request: Request, who: Viewer, range: str = "") -> Response:
    view = web_state(request).model.serving(range)
    now = web_state(request).model.now()
    start = chart_start(now - RANGES[view.range_name],
                        [c for wc in view.worker_charts for c in wc.charts])  # fmt: skip
    return render(request, "serving.html.j2", _ctx(
        request, who, "serving", view=view, ranges=list(RANGES), start=start, end=now,
    ))  # fmt: skip


@router.get("/events")
def events(request: Request, who: Viewer, node: str = "", kind: str = "", severity: str = "",
           since: str = "24h") -> Response:  # fmt: skip
    model = web_state(request).model
    since = since if since in SINCE else "24h"
    hours = SINCE[since]
    found = model.events(
        node=node or None,
        kinds=[kind] if kind else [],
        severities=[severity] if severity else [],
        since=timedelta(hours=hours) if hours else None,
        limit=500,
    )
    nodes = [n.name for n in model.store.list_nodes()]
    return render(request, "events.html.j2", _ctx(
        request, who, "events", events=found, node=node, kind=kind, severity=severity,
        since=since, since_choices=list(SINCE), severities=SEVERITIES, nodes=nodes,
    ))  # fmt: skip


@router.get("/runs")
def runs(request: Request, who: Viewer) -> Response:
    found = web_state(request).model.runs(100)
    if not has_role(who.role, "operator"):
        found = [for_viewer(r) for r in found]
    return render(request, "runs.html.j2", _ctx(request, who, "runs", runs=found))


@router.get("/runs/{run_id:int}")
def run(request: Request, run_id: int, who: Viewer) -> Response:
    found = web_state(request).model.run(run_id) if 0 < run_id < 2**63 else None
    if found is None:
        raise WebError(404, "not_found", f"no run {run_id}")
    operator = has_role(who.role, "operator")
    raw = stored_raw(found)
    shown = found if operator else for_viewer(found)
    return render(request, "run.html.j2", _ctx(request, who, "runs", run=shown, raw=raw,
                                               operator=operator))  # fmt: skip


# -- L2 bundles --------------------------------------------------------------------------------


def _bundle_path(state: WebState, filename: str) -> Path | None:
    """The file inside bundle_dir named `filename`, if it is a bundle: no other names, no
    links, no way out of the directory."""
    if state.bundle_dir is None or not BUNDLE_NAME.fullmatch(filename):
        return None
    root = state.bundle_dir.resolve()
    path = root / filename
    if path.is_symlink() or not path.is_file() or path.resolve().parent != root:
        return None
    return path


def list_bundles(state: WebState, node: str, detail: Any) -> list[dict[str, Any]]:
    if state.bundle_dir is None or not state.bundle_dir.is_dir():
        return []
    host = _UNSAFE.sub("_", node)[:64]
    sums = {Path(str(d.data.get("path", ""))).name: d.data.get("sha256")
            for d in detail.diagnostics if d.kind == "l2"}  # fmt: skip
    out = []
    for entry in sorted(state.bundle_dir.iterdir(), key=lambda p: p.name, reverse=True):
        m = BUNDLE_NAME.fullmatch(entry.name)
        if m and m.group(1) == host and _bundle_path(state, entry.name) is not None:
            out.append({"name": entry.name, "bytes": entry.stat().st_size,
                        "sha256": sums.get(entry.name), "stamp": m.group(2)})  # fmt: skip
    return out[:50]


@router.get("/bundles/{filename}")
def bundle(request: Request, filename: str, _who: Operator) -> Response:
    path = _bundle_path(web_state(request), filename)
    if path is None:
        raise WebError(404, "not_found", "no such bundle")
    return FileResponse(path, media_type="application/gzip", filename=path.name)
