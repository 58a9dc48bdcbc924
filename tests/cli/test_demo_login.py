"""The demo's dashboard login is one-time for real: its own check does not use it up, the first
login consumes it, a second one with the same password is refused, and the check's throwaway
user is gone afterwards. Real server on loopback, real SQLite store."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from agentctl.collectors.store import NodeRecord
from agentctl.ctl.cli.dashboard_cmd import demo_dashboard
from agentctl.ctl.cli.state import State

pytestmark = pytest.mark.timeout(120)


def login(client: httpx.Client, password: str) -> httpx.Response:
    page = client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token, page.text[:300]
    return client.post("/login", data={"username": "demo", "password": password,
                                       "csrf_token": token.group(1), "next": "/"})  # fmt: skip


def test_the_demo_login_works_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, agentctl_env: Path
) -> None:
    monkeypatch.setenv("AGENTCTL_DATABASE_URL", f"sqlite:///{tmp_path / 'demo.db'}")
    st = State()
    st.store().upsert_nodes([NodeRecord("demo-01", "127.0.0.50", 22)])
    server, data, password = demo_dashboard(st)
    try:
        assert data["checked"] is True and data["user"] == "demo"
        assert [u.username for u in st.store().list_users()] == ["demo"]
        with httpx.Client(base_url=data["url"]) as c:
            assert login(c, password).status_code == 303
            assert 'data-node="demo-01"' in c.get("/").text
        with httpx.Client(base_url=data["url"]) as c:
            assert login(c, password).status_code == 401
    finally:
        server.stop()
