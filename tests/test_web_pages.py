"""The dashboard's HTML pages over a real uvicorn server and httpx: login (rate limit, cookie
flags, session rotation, logout), every page with the fixture fleet's data, sorting and
filtering, roles and CSRF on the action forms, bundle downloads, security headers; plus the
SVG chart functions. (The headless-browser tests are separate.)"""

from __future__ import annotations

import re
import secrets
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from agentctl.collectors.store import Store
from agentctl.dashboard.actions import ActionResult
from agentctl.dashboard.readmodel import ReadModel
from agentctl.dashboard.web import charts, create_app
from agentctl.dashboard.web.auth import LoginLimiter, hash_password, one_time_hash, safe_next
from agentctl.dashboard.web.testdata import Populated, live_server, populate

PW = {"viewer": "viewer-pass-1", "operator": "operator-pass-1", "gone": "gone-pass-1"}


class RecordingActions:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def run_l1(self, node: str) -> ActionResult:
        self.calls.append(("l1", node))
        return ActionResult(True, "L1 queued")

    def drain(self, node: str) -> ActionResult:
        self.calls.append(("drain", node))
        return ActionResult(True, "drained")

    def undrain(self, node: str) -> ActionResult:
        self.calls.append(("undrain", node))
        return ActionResult(True, "undrained")


@dataclass
class Site:
    url: str
    store: Store
    fleet: Populated
    actions: RecordingActions
    model: ReadModel
    bundles: Path
    bundle: str


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("webpages")
    store = Store.open(f"sqlite:///{root}/dash.db")
    fleet = populate(store, nodes=5, hours=2, seed=2)
    for role, pw in PW.items():
        store.put_user(role, hash_password(pw), "viewer" if role == "gone" else role)
    bundles = root / "bundles"
    bundles.mkdir()
    name = f"agentctl-l2-{fleet.xid_node}-20260101T000000Z.tar.gz"
    (bundles / name).write_bytes(b"\x1f\x8b bundle bytes")
    (root / "secret.txt").write_text("not for download")
    (bundles / f"agentctl-l2-{fleet.xid_node}-20260102T000000Z.tar.gz").symlink_to(
        root / "secret.txt"
    )
    (bundles / "notes.txt").write_text("not a bundle")
    actions = RecordingActions()
    model = ReadModel(store, clock=lambda: fleet.now)
    app = create_app(model, actions=actions, session_secret=secrets.token_bytes(32),
                     bundle_dir=bundles)  # fmt: skip
    with live_server(app) as url:
        yield Site(url, store, fleet, actions, model, bundles, name)
    store.close()


def form_token(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, html[:500]
    return m.group(1)


def login(c: httpx.Client, user: str, password: str, next: str = "/") -> httpx.Response:
    token = form_token(c.get("/login").text)
    return c.post("/login", data={"username": user, "password": password, "csrf_token": token,
                                  "next": next})  # fmt: skip


@pytest.fixture
def viewer(site: Site) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=site.url) as c:
        assert login(c, "viewer", PW["viewer"]).status_code == 303
        yield c


@pytest.fixture
def operator(site: Site) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=site.url) as c:
        assert login(c, "operator", PW["operator"]).status_code == 303
        yield c


def test_pages_redirect_to_login_and_back(site: Site) -> None:
    with httpx.Client(base_url=site.url) as c:
        for path in ("/", f"/nodes/{site.fleet.xid_node}?range=7d", "/serving", "/events",
                     "/runs", "/runs/1", f"/bundles/{site.bundle}"):  # fmt: skip
            r = c.get(path)
            assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")
        r = c.get(f"/nodes/{site.fleet.xid_node}?range=7d")
        target = httpx.URL(r.headers["location"]).params["next"]
        assert target == f"/nodes/{site.fleet.xid_node}?range=7d"
        r = login(c, "viewer", PW["viewer"], next=target)
        assert r.status_code == 303 and r.headers["location"] == target
        assert "<h1>gpu-node-01" in c.get(target).text


@pytest.mark.parametrize("evil", ["//evil.example/x", "https://evil.example/", "/\\evil.example",
                                  "javascript:alert(1)", "/ok\r\nSet-Cookie: x=1"])  # fmt: skip
def test_next_never_leaves_the_site(evil: str) -> None:
    assert safe_next(evil) == "/"
    assert safe_next("/events?node=a") == "/events?node=a"


def test_wrong_password_then_rate_limited(site: Site) -> None:
    app = create_app(site.model, actions=None, session_secret=secrets.token_bytes(32),
                     limiter=LoginLimiter(per_user=3, window_s=60))  # fmt: skip
    with live_server(app) as url, httpx.Client(base_url=url) as c:
        for _ in range(3):
            r = login(c, "viewer", "wrong")
            assert r.status_code == 401 and "Invalid username or password" in r.text
        r = login(c, "viewer", PW["viewer"])  # even the right password now waits
        assert r.status_code == 429 and "Too many failed logins" in r.text
        assert 1 <= int(r.headers["retry-after"]) <= 60
        assert login(c, "nobody", "x").status_code == 401  # another username is its own window
        assert login(c, "operator", PW["operator"]).status_code == 303
        # a form without its CSRF token is refused before any password check
        r = c.post("/login", data={"username": "viewer", "password": PW["viewer"]})
        assert r.status_code == 403


def test_guesses_spread_over_many_addresses_are_limited_per_account(site: Site) -> None:
    """52 wrong passwords for one user from 22 loopback addresses: the per-IP windows never
    fill (2 or 3 each), the per-account backoff stops evaluating after 10; the account's owner
    waits at most the capped backoff, and the count decays (a slowdown, not a lockout)."""
    now = [1000.0]
    limiter = LoginLimiter(per_account=10, backoff_s=1, max_backoff_s=60, half_life_s=900,
                           clock=lambda: now[0])  # fmt: skip
    app = create_app(site.model, actions=None, session_secret=secrets.token_bytes(32),
                     limiter=limiter)  # fmt: skip
    clients = [httpx.Client(base_url="", transport=httpx.HTTPTransport(
        local_address=f"127.0.0.{10 + i}")) for i in range(23)]  # fmt: skip
    try:
        with live_server(app) as url:
            for c in clients:
                c.base_url = httpx.URL(url)
            codes = Counter(login(clients[i % 22], "viewer", f"guess-{i}").status_code
                            for i in range(52))  # fmt: skip
            assert codes == {401: 10, 429: 42}
            owner = clients[22]  # a 23rd address, the right password: still waits
            r = login(owner, "viewer", PW["viewer"])
            assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 60
            now[0] += int(r.headers["retry-after"])
            assert login(owner, "viewer", PW["viewer"]).status_code == 303  # then gets in
            assert login(clients[0], "operator", PW["operator"]).status_code == 303
    finally:
        for c in clients:
            c.close()
    for i in range(1000):  # however long the attack, the wait stays capped
        limiter.failed(f"10.0.{i // 250}.{i % 250}", "operator")
    assert limiter.account_wait("operator") == 60
    now[0] += 4 * 3600  # hours without a failure: the count has decayed, guesses are free
    assert limiter.account_wait("operator") == 0
    assert limiter.retry_after("10.9.9.9", "operator") is None


def test_a_one_time_password_logs_in_once(site: Site) -> None:
    site.store.put_user("once", one_time_hash("once-pass-1"), "viewer")
    with httpx.Client(base_url=site.url) as c:
        assert login(c, "once", "wrong").status_code == 401  # a wrong guess consumes nothing
        assert login(c, "once", "once-pass-1").status_code == 303
        assert c.get("/").status_code == 200  # the session it opened works
    with httpx.Client(base_url=site.url) as c:
        r = login(c, "once", "once-pass-1")
        assert r.status_code == 401 and "Invalid username or password" in r.text
    # two logins racing with a fresh one-time password: exactly one gets in
    site.store.put_user("twice", one_time_hash("twice-pass-1"), "viewer")
    clients = [httpx.Client(base_url=site.url) for _ in range(4)]
    tokens = [form_token(c.get("/login").text) for c in clients]
    try:
        with ThreadPoolExecutor(4) as pool:
            codes = list(pool.map(lambda ct: ct[0].post("/login", data={
                "username": "twice", "password": "twice-pass-1", "csrf_token": ct[1],
                "next": "/"}).status_code, zip(clients, tokens, strict=True)))  # fmt: skip
    finally:
        for c in clients:
            c.close()
    assert sorted(codes) == [303, 401, 401, 401]


def test_login_sets_a_hardened_cookie_and_rotates_the_session(site: Site) -> None:
    with httpx.Client(base_url=site.url) as c:
        before = form_token(c.get("/login").text)
        r = login(c, "viewer", PW["viewer"])
        cookie = r.headers["set-cookie"]
        assert cookie.startswith("agentctl_session=")
        assert "httponly" in cookie.lower() and "samesite=lax" in cookie.lower()
        assert "secure" not in cookie.lower() and "Max-Age=43200" in cookie
        after = re.search(r'<meta name="csrf-token" content="([^"]+)"', c.get("/").text)
        assert after and after.group(1) != before
    app = create_app(site.model, actions=None, session_secret=secrets.token_bytes(32),
                     secure_cookies=True)  # fmt: skip
    with live_server(app) as url, httpx.Client(base_url=url) as c:
        r = login(c, "viewer", PW["viewer"])
        assert r.headers["set-cookie"].startswith("__Host-agentctl_session=")
        assert "; secure" in r.headers["set-cookie"].lower()
        assert r.headers["strict-transport-security"].startswith("max-age=")


def test_logout_needs_csrf_and_revokes_the_cookie(site: Site) -> None:
    with httpx.Client(base_url=site.url) as c:
        login(c, "viewer", PW["viewer"])
        stolen = dict(c.cookies)
        assert c.post("/logout", data={"csrf_token": "nope"}).status_code == 403
        token = form_token(c.get("/").text)
        r = c.post("/logout", data={"csrf_token": token})
        assert r.status_code == 303 and r.headers["location"] == "/login"
        assert c.get("/").status_code == 303
    with httpx.Client(base_url=site.url, cookies=stolen) as replay:
        assert replay.get("/").status_code == 303  # the old cookie is dead too


def test_a_removed_user_loses_the_session_at_once(site: Site) -> None:
    with httpx.Client(base_url=site.url) as c:
        login(c, "gone", PW["gone"])
        assert c.get("/").status_code == 200
        site.store.remove_user("gone")
        assert c.get("/").status_code == 303


def test_every_page_renders_for_a_viewer(site: Site, viewer: httpx.Client) -> None:
    f = site.fleet
    page = viewer.get("/").text
    for name in f.nodes:
        assert f'data-node="{name}"' in page
    assert "<b>5</b> nodes" in page and "<b>39</b> GPUs" in page
    assert 'class="badge health-fail"' in page and "missing" in page  # 7 of 8 GPUs
    assert page.count("<svg") >= 5 * 4  # sparklines
    node = viewer.get(f"/nodes/{f.xid_node}").text
    assert "Xid 79" in node and "GPU has fallen off the bus" in node
    assert 'data-series="node.gpu_util_avg"' in node and "<polyline" in node
    assert 'data-gpu="7"' in node and "error" in node  # GPU 3 fell off: its readings are errors
    assert "Run L1 now" not in node and "L2 bundles" not in node  # viewers see, do not act
    reboot = viewer.get(f"/nodes/{f.reboot_node}").text
    assert "kernel_panic" in reboot and "confidence high" in reboot
    assert "Kernel panic - not syncing" in reboot  # the report's evidence, in its details
    for r in ("1h", "6h", "7d", "30d", "bogus"):
        assert viewer.get(f"/nodes/{f.xid_node}", params={"range": r}).status_code == 200
    assert viewer.get("/nodes/nobody").status_code == 404
    serving = viewer.get("/serving").text
    assert f"{f.nodes[1]}-w0" in serving and f"/nodes/{f.nodes[0]}" in serving
    events = viewer.get("/events").text
    assert "Xid 79" in events and "Xid 31" in events and "expected 8 GPUs, found 7" in events
    runs = viewer.get("/runs").text
    assert f'data-run="{f.run_id}"' in runs and "partial" in runs
    run = viewer.get(f"/runs/{f.run_id}").text
    assert "nvidia-smi: No devices were found" in run and "step gpu-check failed" in run
    assert viewer.get("/runs/424242").status_code == 404
    assert viewer.get("/runs/abc").status_code == 404


def test_events_page_filters(viewer: httpx.Client, site: Site) -> None:
    page = viewer.get("/events", params={"kind": "xid", "severity": "critical"}).text
    assert "Xid 79" in page and "Xid 31" not in page and "found 7" not in page
    page = viewer.get("/events", params={"node": site.fleet.hot_node}).text
    assert "Xid 31" in page and "Xid 79" not in page
    page = viewer.get("/events", params={"since": "1h"}).text
    assert "Xid 79" in page and "Xid 31" not in page  # 65 minutes old
    assert viewer.get("/events", params={"since": "forever"}).status_code == 200


def _order(html: str) -> list[str]:
    return re.findall(r'<tr data-node="([^"]+)"', html)


def test_fleet_sorts_and_filters_server_side(viewer: httpx.Client, site: Site) -> None:
    f = site.fleet
    assert _order(viewer.get("/").text) == list(f.nodes)
    assert _order(viewer.get("/?sort=name&dir=desc").text) == list(reversed(f.nodes))
    assert _order(viewer.get("/?sort=temp&dir=desc").text)[0] == f.hot_node
    health = _order(viewer.get("/?sort=health").text)
    assert health[0] == f.xid_node and health[1] == f.hot_node  # worst first
    alerts = _order(viewer.get("/?sort=alerts&dir=desc").text)
    assert alerts[0] == f.xid_node
    kv = _order(viewer.get("/?sort=kv&dir=asc").text)
    assert kv[-1] == f.nodes[0]  # the router has no workers: no value sorts last
    page = viewer.get("/?sort=util&dir=desc").text
    utils = [float(v) for v in re.findall(r'<td[^>]*data-col="util" data-value="([^"]+)"', page)]
    assert len(utils) == 5 and utils == sorted(utils, reverse=True)
    assert 'aria-sort="descending"' in page
    assert _order(viewer.get("/?q=router").text) == [f.nodes[0]]
    assert _order(viewer.get("/?q=FAIL").text) == [f.xid_node]
    assert "No node matches" in viewer.get("/?q=zzz").text
    assert _order(viewer.get("/?sort=bogus&dir=sideways").text) == list(f.nodes)


def test_viewers_get_403_on_actions(site: Site, viewer: httpx.Client) -> None:
    token = form_token(viewer.get("/").text)
    r = viewer.post(f"/nodes/{site.fleet.xid_node}/drain", data={"csrf_token": token})
    assert r.status_code == 403 and "<h1>403" in r.text and "Traceback" not in r.text
    assert viewer.get(f"/bundles/{site.bundle}").status_code == 403


def test_operator_actions_need_csrf_and_flash_the_result(
    site: Site, operator: httpx.Client
) -> None:
    node = site.fleet.xid_node
    site.actions.calls.clear()
    page = operator.get(f"/nodes/{node}").text
    assert "Run L1 now" in page and "L2 bundles" in page
    r = operator.post(f"/nodes/{node}/drain")
    assert r.status_code == 403 and "CSRF" in r.text
    r = operator.post(f"/nodes/{node}/drain", data={"csrf_token": "forged"})
    assert r.status_code == 403
    assert site.actions.calls == []
    token = form_token(page)
    r = operator.post(f"/nodes/{node}/drain", data={"csrf_token": token})
    assert r.status_code == 303 and r.headers["location"] == f"/nodes/{node}"
    assert "drain on gpu-node-01: drained" in operator.get(r.headers["location"]).text
    assert "drained" not in operator.get(f"/nodes/{node}").text.split("<main>")[1][:300]
    operator.post(f"/nodes/{node}/l1", data={"csrf_token": token})
    assert operator.post("/nodes/nobody/l1", data={"csrf_token": token}).status_code == 404
    assert operator.post(f"/nodes/{node}/reboot", data={"csrf_token": token}).status_code == 404
    assert site.actions.calls == [("drain", node), ("l1", node)]


def test_bundles_download_only_real_bundles(site: Site, operator: httpx.Client) -> None:
    page = operator.get(f"/nodes/{site.fleet.xid_node}").text
    assert site.bundle in page and "20260102T000000Z" not in page  # the symlink is not listed
    r = operator.get(f"/bundles/{site.bundle}")
    assert r.status_code == 200 and r.content == b"\x1f\x8b bundle bytes"
    assert "attachment" in r.headers["content-disposition"]
    linked = f"agentctl-l2-{site.fleet.xid_node}-20260102T000000Z.tar.gz"
    other = "agentctl-l2-x-20260101T000000Z.tar.gz"
    for bad in ("..%2f..%2fsecret.txt", "..%2fsecret.txt", "%2e%2e", "notes.txt", linked, other,
                "agentctl-l2-..%2f..%2fs.tar.gz"):  # fmt: skip
        r = operator.get(f"/bundles/{bad}")
        assert r.status_code == 404, bad
        assert b"not for download" not in r.content


def test_security_headers_and_static_css(site: Site, viewer: httpx.Client) -> None:
    r = viewer.get("/")
    h = r.headers
    assert "default-src 'self'" in h["content-security-policy"]
    assert "style-src 'self'" in h["content-security-policy"]
    assert "'unsafe-inline'" not in h["content-security-policy"]
    assert h["x-content-type-options"] == "nosniff" and h["x-frame-options"] == "DENY"
    assert h["referrer-policy"] == "same-origin" and h["cache-control"] == "no-store"
    assert "<script" not in r.text and "style=" not in r.text  # nothing inline for CSP to block
    css = viewer.get("/static/app.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert css.headers["cache-control"] != "no-store"
    login_page = httpx.get(f"{site.url}/login")
    assert login_page.headers["x-frame-options"] == "DENY"


def test_charts_escape_text_and_leave_gaps() -> None:
    svg = charts.sparkline([10.0, None, 55.0, 90.0], "util", unit="<b>")
    assert "lvl-crit" in svg and "<b>" not in svg and "&lt;b&gt;" in svg
    assert svg.count("<polyline") == 1 and svg.count("<circle") == 1  # gap after the first
    assert "no data" in charts.sparkline([], "temp")
    from datetime import UTC, datetime, timedelta

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    pts = [(t0 + timedelta(minutes=i), 1.0, 2.0, 3.0) for i in range(5)]
    pts += [(t0 + timedelta(minutes=30 + i), 1.0, 2.0, 3.0) for i in range(5)]  # a hole
    svg = charts.line_chart(pts, "°C", label="<script>x</script>", kind="temp", step_s=60)
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    assert svg.count('<polyline class="avg"') == 2 and svg.count('<polygon class="band"') == 2
    assert "no data in this range" in charts.line_chart([], "W", label="power")
    assert [charts.level("temp", v) for v in (69.9, 70, 85, None)] == ["ok", "warn", "crit", "na"]
    assert charts.level("power", 5000) == "plain"


def test_lines_chart_draws_each_series_on_one_axis_with_gaps_and_a_legend() -> None:
    kv = [(2.5, 40.0), (7.5, None), (12.5, 90.0), (17.5, 95.0)]
    rr = [(2.5, 20.0), (7.5, 30.0)]
    svg = charts.lines_chart([("round-robin", rr), ("<kv>", kv)], "%", label="hit", x_end=20,
                             y_max=100, highlight="<kv>")  # fmt: skip
    assert "<kv>" not in svg and 'data-series="&lt;kv&gt;"' in svg
    kv_group = svg.split('data-series="&lt;kv&gt;"')[1].split("</g>")[0]
    assert kv_group.count("<circle") == 1 and kv_group.count("<polyline") == 1  # a gap at 7.5
    assert 'class="series s1 hl"' in svg and 'class="series s0"' in svg
    assert svg.count('class="legend series') == 2 and ">20 s</text>" in svg and ">0 s</text>" in svg
    assert ">100</text>" in svg  # the fixed top of a percentage axis
    # x is trace seconds: 2.5 of 0..20 is 1/8 of the plot width from its left edge (48)
    left, plot = 48, 640 - 48 - 8
    assert f'cx="{left + plot * 2.5 / 20:.1f}"' in kv_group
    assert "no data" in charts.lines_chart([("kv", [(1.0, None)])], "ms")
