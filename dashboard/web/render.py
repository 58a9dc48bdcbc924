"""The Jinja2 environment (autoescaped: template names end in `.j2`, which Starlette's default
`select_autoescape` would not escape) and the filters the templates share."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse

from . import charts
from .state import web_state

TEMPLATES = Path(__file__).parent / "templates"
_JSON_CAP = 20_000
NONE = "\u2013"  # an en dash: no value


def utc(value: datetime | None) -> str:
    return "never" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def age(value: datetime | None, now: datetime | None = None) -> str:
    """ "3m ago" style: how old a datum is matters more than its timestamp."""
    if value is None:
        return "never"
    secs = ((now or datetime.now(UTC)) - value).total_seconds()
    if secs < 0:
        return "in the future"
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if secs >= size:
            return f"{int(secs // size)}{unit} ago"
    return f"{int(secs)}s ago"


def num(value: float | None, digits: int = 1, unit: str = "") -> str:
    if value is None or not math.isfinite(value):
        return NONE
    return f"{value:,.{digits}f}{unit}"


def pct(fraction: float | None) -> str:
    """A 0..1 fraction as a percentage (KV hit rate, KV usage)."""
    return NONE if fraction is None else num(fraction * 100, 1, " %")


def ms(seconds: float | None) -> str:
    return NONE if seconds is None else num(seconds * 1000, 0, " ms")


def field_value(value: float | None, unit: str) -> str:
    """A GPU_FIELDS value in its unit: bytes as GiB, the rest as given."""
    if value is None:
        return NONE
    if unit == "B":
        return num(value / 1024**3, 1, " GiB")
    if unit in ("", "x"):
        return f"{unit}{value:.0f}"
    return num(value, 0, f" {unit}")


def size(n: int | None) -> str:
    if n is None:
        return NONE
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return NONE  # pragma: no cover


def pretty_json(value: Any) -> str:
    text = json.dumps(value, indent=2, sort_keys=True, default=str)
    return text if len(text) <= _JSON_CAP else text[:_JSON_CAP] + "\n… (truncated)"


def pathq(value: str) -> str:
    """One URL path segment (a node name with a slash stays one segment)."""
    return quote(str(value), safe="")


def _markup(fn: Any) -> Any:
    def wrapped(*args: Any, **kwargs: Any) -> Markup:
        return Markup(fn(*args, **kwargs))  # noqa: S704 (charts escape their own text)

    return wrapped


def make_environment() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(utc=utc, age=age, num=num, pct=pct, ms=ms, field_value=field_value,
                       pretty_json=pretty_json, pathq=pathq, size=size)  # fmt: skip
    env.globals.update(
        sparkline=_markup(charts.sparkline),
        line_chart=_markup(charts.line_chart),
        bars=_markup(charts.bars),
        lines_chart=_markup(charts.lines_chart),
        level=charts.level,
        kind_of=charts.KIND_OF_FIELD.get,
    )
    return env


def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    """Render a page; `flash` messages kept in the session are shown once."""
    state = web_state(request)
    session = request.scope.get("session")  # absent when a 500 is rendered outside it
    flash = session.pop("flash", []) if session and "flash" in session else []
    ctx = {"request": request, "user": None, "csrf": "", "flash": flash, "nav": "",
           "now": state.model.now(), "can_act": False, **context}  # fmt: skip
    html = state.templates.get_template(name).render(ctx)
    return HTMLResponse(html, status_code=status)


def flash(request: Request, level: str, message: str) -> None:
    request.session["flash"] = [*request.session.get("flash", []), [level, message]][-5:]
