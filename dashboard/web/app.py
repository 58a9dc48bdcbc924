"""`create_app`: the dashboard's FastAPI application, built from its parts and nothing global
(importing this module opens no file or socket). Errors from anywhere become an envelope under
/api/v1 and a page elsewhere; an unauthenticated page request is sent to the login form."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.sessions import SessionMiddleware
from starlette.responses import RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from agentctl.ctl import __version__
from agentctl.ctl.errors import StoreError
from agentctl.dashboard.actions import Actions
from agentctl.dashboard.readmodel import ReadModel

from . import api, pages
from .auth import LoginLimiter, RevokedSessions
from .render import make_environment, render
from .security import SecurityHeaders
from .state import ERROR_SCHEMA, WebError, WebState, is_api

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
SESSION_MAX_AGE_S = 12 * 3600
_KINDS = {400: "bad_request", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 422: "invalid", 429: "rate_limited"}  # fmt: skip


def create_app(
    model: ReadModel,
    *,
    actions: Actions | None,
    session_secret: bytes,
    secure_cookies: bool = False,
    bundle_dir: Path | None = None,
    session_max_age_s: int = SESSION_MAX_AGE_S,
    limiter: LoginLimiter | None = None,
) -> FastAPI:
    """The dashboard app. `actions=None` makes it read-only (action routes answer 503);
    `secure_cookies` (serving over TLS) adds the cookie's Secure flag, the `__Host-` cookie
    prefix and HSTS; `bundle_dir` holds the L2 bundles operators may download."""
    if len(session_secret) < 32:
        raise ValueError("session_secret must be at least 32 random bytes")
    cookie = "__Host-agentctl_session" if secure_cookies else "agentctl_session"
    app = FastAPI(
        title="agentctl dashboard",
        version=__version__,
        description="Fleet, node, serving, events and runs of an agentctl fleet, in the common "
        "envelope `{ok, data, errors[], meta{tool, version, schema, collected_at}}`.",
        docs_url=None,  # Swagger UI loads script from a CDN: not air-gap or CSP friendly
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.web = WebState(
        model=model,
        actions=actions,
        bundle_dir=bundle_dir,
        secure=secure_cookies,
        session_cookie=cookie,
        session_max_age_s=session_max_age_s,
        limiter=limiter or LoginLimiter(),
        revoked=RevokedSessions(session_max_age_s),
        templates=make_environment(),
    )
    app.add_middleware(
        SessionMiddleware,
        secret_key=session_secret.hex(),
        session_cookie=cookie,
        max_age=session_max_age_s,
        same_site="lax",  # see auth.py for why not "strict"
        https_only=secure_cookies,
    )
    app.add_middleware(SecurityHeaders, secure=secure_cookies)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(api.router)
    app.include_router(pages.router)
    _install_handlers(app)
    return app


def error_response(
    request: Request, status: int, kind: str, message: str, *, schema: str = ERROR_SCHEMA,
    headers: dict[str, str] | None = None,
) -> Response:  # fmt: skip
    if is_api(request):
        return api.answer(None, schema, ok=False, errors=[{"kind": kind, "message": message}],
                          status=status, headers=headers)  # fmt: skip
    if status == 401:
        # the path as sent (still percent-encoded): a node named `a/b` or `50%` comes back
        raw = request.scope.get("raw_path")
        path = raw.decode("latin-1") if isinstance(raw, bytes) else quote(request.url.path)
        target = path + (f"?{request.url.query}" if request.url.query else "")
        if request.method not in ("GET", "HEAD"):
            target = "/"
        return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
    ctx = {"status": status, "kind": kind, "message": message}
    page = render(request, "error.html.j2", ctx, status)
    page.headers.update(headers or {})
    return page


def _install_handlers(app: FastAPI) -> None:
    async def web_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, WebError)
        return error_response(request, exc.status, exc.kind, exc.message, schema=exc.schema,
                              headers=exc.headers)  # fmt: skip

    async def invalid(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        msgs = []
        for e in exc.errors()[:10]:
            where = ".".join(str(p) for p in e.get("loc", ()) if p not in ("query", "path"))
            msgs.append(f"{where}: {e.get('msg', 'invalid')}" if where else str(e.get("msg")))
        status = 422 if is_api(request) else 400
        return error_response(request, status, "invalid", "; ".join(msgs) or "invalid request")

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        kind = _KINDS.get(exc.status_code, "http_error")
        return error_response(request, exc.status_code, kind, str(exc.detail),
                              headers=dict(exc.headers or {}))  # fmt: skip

    async def store_down(request: Request, exc: Exception) -> Response:
        log.warning("store error: %s", exc)
        return error_response(request, 503, "store_unavailable", "the store is unavailable")

    async def crashed(request: Request, exc: Exception) -> Response:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return error_response(request, 500, "internal", "internal error (see the server log)")

    app.add_exception_handler(WebError, web_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(StoreError, store_down)
    app.add_exception_handler(Exception, crashed)
