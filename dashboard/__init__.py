"""Dashboards: read model over the store, web (FastAPI + Jinja2) and TUI (Textual)."""
