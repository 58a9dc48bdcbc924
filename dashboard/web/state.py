"""What every request handler shares (the read model, actions, auth state), and the one error
type handlers raise: the exception handlers in `app.py` turn it into an envelope for
`/api/...` and into a page (or a login redirect) everywhere else."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

from starlette.requests import HTTPConnection

from agentctl.dashboard.actions import ActionResult, Actions
from agentctl.dashboard.readmodel import ReadModel

if TYPE_CHECKING:
    from jinja2 import Environment

    from .auth import LoginLimiter, RevokedSessions

log = logging.getLogger(__name__)
API_PREFIX = "/api/v1"
ERROR_SCHEMA = "agentctl.api.error/1"


@dataclass
class WebState:
    model: ReadModel
    actions: Actions | None
    bundle_dir: Path | None
    secure: bool
    session_cookie: str
    session_max_age_s: int
    limiter: LoginLimiter
    revoked: RevokedSessions
    templates: Environment


def web_state(conn: HTTPConnection) -> WebState:
    return cast(WebState, conn.app.state.web)


def is_api(conn: HTTPConnection) -> bool:
    return conn.url.path == API_PREFIX or conn.url.path.startswith(API_PREFIX + "/")


class WebError(Exception):
    """An expected failure with its HTTP status: `kind` is the envelope's error kind."""

    def __init__(
        self,
        status: int,
        kind: str,
        message: str,
        *,
        schema: str = ERROR_SCHEMA,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.schema = schema
        self.headers = headers or {}


#: operator actions by URL segment (`POST .../nodes/{name}/{action}`)
ACTIONS = ("l1", "drain", "undrain")


def do_action(state: WebState, node: str, action: str, *, schema: str) -> ActionResult:
    """Run one operator action on a known node; the `Actions` implementation does the work."""
    if action not in ACTIONS:
        raise WebError(404, "not_found", f"no action {action!r}", schema=schema)
    if state.actions is None:
        raise WebError(503, "unavailable", "this dashboard was started without operator "
                       "actions (read-only)", schema=schema)  # fmt: skip
    if node not in {n.name for n in state.model.store.list_nodes()}:
        raise WebError(404, "not_found", f"no node {node!r}", schema=schema)
    run = {"l1": state.actions.run_l1, "drain": state.actions.drain,
           "undrain": state.actions.undrain}[action]  # fmt: skip
    try:
        return run(node)
    except Exception as exc:  # the boundary: an action's failure is a result, not a 500
        log.exception("action %s on %s failed", action, node)
        return ActionResult(False, f"{action} failed: {type(exc).__name__}: {str(exc)[:300]}")
