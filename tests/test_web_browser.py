"""The web dashboard in a real headless browser: Debian's chromium driven by playwright
(`executable_path`; no downloaded browser), against the app served by uvicorn on 127.0.0.1
with a real SQLite store. Screenshots are kept under test-artifacts/ (git-ignored)."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agentctl.collectors.store import Store
from agentctl.dashboard.readmodel import ReadModel
from agentctl.dashboard.web import create_app
from agentctl.dashboard.web.auth import hash_password
from agentctl.dashboard.web.testdata import Populated, live_server, populate

sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt-get install chromium)"),
    pytest.mark.timeout(180),
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "web"
PASSWORD = "browser-test-pw-1"


class _NoActions:
    """The dashboard's action boundary for a read-only browser check (viewers never reach it)."""

    def run_l1(self, node: str) -> Any:
        raise AssertionError("a viewer must never reach an action")

    drain = undrain = run_l1


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Populated]]:
    db = tmp_path_factory.mktemp("web") / "w.db"
    store = Store.open(f"sqlite:///{db}")
    fleet = populate(store, nodes=4, gpus=8, hours=2)
    store.put_user("viewer", hash_password(PASSWORD), "viewer")
    app = create_app(ReadModel(store), actions=_NoActions(), session_secret=secrets.token_bytes(32))
    with live_server(app) as url:
        yield url, fleet
    store.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    pg = context.new_page()
    problems: list[str] = []
    pg.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: problems.append(str(e)))
    yield pg
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()
    assert problems == [], problems  # no console errors (CSP violations show up here too)


def _login(page: Any, url: str, next_path: str = "/") -> None:
    page.goto(f"{url}{next_path}")
    assert "/login" in page.url
    page.fill("input[name=username]", "viewer")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def test_login_redirects_and_the_fleet_shows_every_node(page: Any, site: Any) -> None:
    url, fleet = site
    _login(page, url)
    assert page.url.rstrip("/") == url
    rows = page.locator("tr[data-node]")
    assert sorted(rows.evaluate_all("rs => rs.map(r => r.dataset.node)")) == sorted(fleet.nodes)
    hot = page.locator(f"tr[data-node='{fleet.hot_node}'] td[data-col=temp]")
    assert "lvl-" in (hot.get_attribute("class") or "")
    assert page.locator("svg").count() > 0  # server-rendered sparklines


def test_sorting_by_a_column_reorders_the_rows(page: Any, site: Any) -> None:
    url, fleet = site
    _login(page, url)

    def temps() -> list[float]:
        cells = page.locator("tr[data-node] td[data-col=temp]")
        values = cells.evaluate_all("cs => cs.map(c => c.dataset.value)")
        return [float(v) for v in values if v]

    page.goto(f"{url}/?sort=temp&dir=desc")
    down = temps()
    assert down == sorted(down, reverse=True) and len(down) >= 2
    page.goto(f"{url}/?sort=temp&dir=asc")
    assert temps() == sorted(down)
    first = page.locator("tr[data-node]").first.get_attribute("data-node")
    page.goto(f"{url}/?sort=temp&dir=desc")
    assert page.locator("tr[data-node]").first.get_attribute("data-node") == fleet.hot_node
    assert first != fleet.hot_node


def test_the_xid_event_appears_on_its_node_page(page: Any, site: Any) -> None:
    url, fleet = site
    _login(page, url, f"/nodes/{fleet.xid_node}")
    assert page.url.endswith(f"/nodes/{fleet.xid_node}")
    assert page.get_by_text("Xid 79").count() >= 1
    assert page.locator("svg").count() >= 4  # the node's charts


def test_a_viewer_gets_403_on_an_operator_action(page: Any, site: Any) -> None:
    url, fleet = site
    _login(page, url, f"/nodes/{fleet.xid_node}")
    assert page.locator("form[action$='/l1']").count() == 0  # no buttons for viewers
    token = page.locator("meta[name=csrf-token]").get_attribute("content")
    res = page.request.post(f"{url}/nodes/{fleet.xid_node}/l1", form={"csrf_token": token or ""})
    assert res.status == 403
    api = page.request.post(f"{url}/api/v1/nodes/{fleet.xid_node}/drain",
                            headers={"X-CSRF-Token": token or ""})  # fmt: skip
    assert api.status == 403 and api.json()["ok"] is False
