"""The web dashboard: FastAPI + Jinja2 pages and the /api/v1 JSON API over the read model."""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
