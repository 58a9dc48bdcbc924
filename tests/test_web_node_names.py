"""Any node name works in the dashboard: `/`, `%`, spaces, unicode. Through the real app on a
real port: every link the pages generate leads to the node's page, the API answers for the
name, an action form reaches the actions with the exact name, and a logged-out visit comes
back to the same node after the login."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import unescape
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from agentctl.collectors.store import EventRecord, HostResult, NodeRecord, Store
from agentctl.dashboard.actions import ActionResult
from agentctl.dashboard.readmodel import ReadModel
from agentctl.dashboard.web import create_app
from agentctl.dashboard.web.auth import hash_password
from agentctl.dashboard.web.testdata import live_server

NAMES = ("rack1/gpu-01", "50%", "node 7", "gpü-東京", "a/l1", "end/")
PW = "operator-pass-1"


@dataclass
class Actions:
    calls: list[tuple[str, str]] = field(default_factory=list)

    def run_l1(self, node: str) -> ActionResult:
        self.calls.append(("l1", node))
        return ActionResult(True, "queued")

    def drain(self, node: str) -> ActionResult:
        self.calls.append(("drain", node))
        return ActionResult(True, "drained")

    def undrain(self, node: str) -> ActionResult:
        self.calls.append(("undrain", node))
        return ActionResult(True, "undrained")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Actions]]:
    root: Path = tmp_path_factory.mktemp("names")
    with Store.open(f"sqlite:///{root}/names.db") as store:
        store.upsert_nodes([NodeRecord(n, f"10.0.0.{i + 1}", 22) for i, n in enumerate(NAMES)])
        store.record_events([EventRecord(node=n, kind="xid", key=f"xid:{i}", code=79,
                                         severity="critical", subject="gpu0", message="x",
                                         at=datetime(2026, 1, 1, tzinfo=UTC))
                             for i, n in enumerate(NAMES)])  # fmt: skip
        run_id = store.start_run("run", command="true", selection=None, hosts=list(NAMES),
                                 options={})  # fmt: skip
        for n in NAMES:
            store.record_result(run_id, HostResult(n, "ok", 0, "", "", 0.1))
        store.finish_run(run_id, status="ok", recap={"ok": len(NAMES)})
        store.put_user("op", hash_password(PW), "operator")
        actions = Actions()
        app = create_app(ReadModel(store), actions=actions, session_secret=secrets.token_bytes(32))
        with live_server(app) as url:
            yield url, actions


def login(c: httpx.Client, next: str = "/") -> httpx.Response:
    page = c.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token
    return c.post("/login", data={"username": "op", "password": PW,
                                  "csrf_token": token.group(1), "next": next})  # fmt: skip


def node_links(html: str) -> set[str]:
    return {unescape(h) for h in re.findall(r'href="(/nodes/[^"?]*)"', html)}


def test_every_generated_node_link_opens_that_node(site: tuple[str, Actions]) -> None:
    url, _ = site
    with httpx.Client(base_url=url) as c:
        assert login(c).status_code == 303
        links = set()
        for page in ("/", "/events?since=all", "/runs/1"):
            r = c.get(page)
            assert r.status_code == 200, page
            links |= node_links(r.text)
        assert links == {f"/nodes/{quote(n, safe='')}" for n in NAMES}
        for n in NAMES:
            r = c.get(f"/nodes/{quote(n, safe='')}")
            assert r.status_code == 200, (n, r.status_code)
            assert re.search(r"<h1>([^<]*)", r.text).group(1).strip() == n  # type: ignore[union-attr]
            api = c.get(f"/api/v1/nodes/{quote(n, safe='')}")
            assert api.status_code == 200, (n, api.text)
            assert api.json()["data"]["row"]["name"] == n
        assert c.get("/nodes/rack1%2Fnope").status_code == 404


def test_actions_reach_the_exact_name_and_come_back(site: tuple[str, Actions]) -> None:
    url, actions = site
    with httpx.Client(base_url=url) as c:
        assert login(c).status_code == 303
        for n in NAMES:
            page = c.get(f"/nodes/{quote(n, safe='')}").text
            form = re.search(r'<form method="post" action="([^"]+)/drain"', page)
            assert form, n
            token = re.search(r'name="csrf_token" value="([^"]+)"', page)
            assert token
            r = c.post(unescape(form.group(1)) + "/drain", data={"csrf_token": token.group(1)})
            assert r.status_code == 303 and c.get(r.headers["location"]).status_code == 200, n
            csrf = re.search(r'<meta name="csrf-token" content="([^"]+)"', page)
            assert csrf
            api = c.post(f"/api/v1/nodes/{quote(n, safe='')}/undrain",
                         headers={"X-CSRF-Token": csrf.group(1)})  # fmt: skip
            assert api.status_code == 200, (n, api.text)
    assert actions.calls == [(a, n) for n in NAMES for a in ("drain", "undrain")]


@pytest.mark.parametrize("name", ["50%", "rack1/gpu-01", "gpü-東京"])
def test_a_logged_out_visit_returns_to_the_same_node(site: tuple[str, Actions], name: str) -> None:
    url, _ = site
    with httpx.Client(base_url=url) as c:
        path = f"/nodes/{quote(name, safe='')}?range=1h"
        r = c.get(path)
        assert r.status_code == 303
        target = httpx.URL(r.headers["location"]).params["next"]
        assert target == path
        r = login(c, next=target)
        assert r.status_code == 303 and r.headers["location"] == path
        assert f"<h1>{name}" in unescape(c.get(path).text)
