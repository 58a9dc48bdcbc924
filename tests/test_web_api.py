"""The dashboard's JSON API against a real uvicorn server on loopback, a real SQLite store filled
by `testdata.populate`, and httpx: authentication (session and bearer token), roles, CSRF,
envelopes for every error, the documented OpenAPI, and schemathesis over that document."""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import jsonschema
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode

from agentctl.collectors.store import Store
from agentctl.ctl.envelope import ENVELOPE_SCHEMA
from agentctl.dashboard.actions import ActionResult
from agentctl.dashboard.readmodel import ReadModel
from agentctl.dashboard.web import create_app
from agentctl.dashboard.web.auth import hash_password
from agentctl.dashboard.web.testdata import Populated, live_server, populate

PASSWORDS = {"viewer": "viewer-pass-1", "operator": "operator-pass-1", "admin": "admin-pass-1"}
GET_PATHS = ["/api/v1/me", "/api/v1/fleet", "/api/v1/nodes/gpu-node-01", "/api/v1/serving",
             "/api/v1/events", "/api/v1/runs", "/api/v1/runs/1"]  # fmt: skip


@dataclass
class RecordingActions:
    """The boundary: records what the dashboard asked for; `fail` makes an action raise."""

    calls: list[tuple[str, str]] = field(default_factory=list)
    fail: bool = False

    def _do(self, action: str, node: str) -> ActionResult:
        self.calls.append((action, node))
        if self.fail:
            raise RuntimeError("ssh: connection refused")
        return ActionResult(True, f"{action} accepted", {"node": node})

    def run_l1(self, node: str) -> ActionResult:
        return self._do("l1", node)

    def drain(self, node: str) -> ActionResult:
        return self._do("drain", node)

    def undrain(self, node: str) -> ActionResult:
        return self._do("undrain", node)


@dataclass
class Site:
    url: str
    store: Store
    fleet: Populated
    actions: RecordingActions
    tokens: dict[str, str]
    model: ReadModel


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("webapi")
    store = Store.open(f"sqlite:///{root}/dash.db")
    fleet = populate(store, nodes=5, hours=2, seed=1)
    tokens = {}
    for role, pw in PASSWORDS.items():
        store.put_user(role, hash_password(pw), role)
        tokens[role] = secrets.token_urlsafe(24)
        store.add_token(role, "tests", tokens[role])
    actions = RecordingActions()
    model = ReadModel(store, clock=lambda: fleet.now)
    app = create_app(model, actions=actions, session_secret=secrets.token_bytes(32))
    with live_server(app) as url:
        yield Site(url, store, fleet, actions, tokens, model)
    store.close()


def bearer(site: Site, role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {site.tokens[role]}"}


def login(client: httpx.Client, user: str, password: str) -> httpx.Response:
    page = client.get("/login")
    token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    return client.post("/login", data={"username": user, "password": password,
                                       "csrf_token": token, "next": "/"})  # fmt: skip


def csrf_of(client: httpx.Client) -> str:
    page = client.get("/")
    return page.text.split('<meta name="csrf-token" content="', 1)[1].split('"', 1)[0]


def assert_envelope(resp: httpx.Response, status: int, schema: str | None = None) -> Any:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    doc = resp.json()
    jsonschema.validate(doc, ENVELOPE_SCHEMA)
    assert doc["ok"] is (200 <= status < 300) or status == 200
    if status >= 400:
        assert doc["data"] is None and doc["errors"] and doc["errors"][0]["message"]
    if schema:
        assert doc["meta"]["schema"] == schema
    return doc


def test_without_authentication_every_api_call_is_a_401_envelope(site: Site) -> None:
    with httpx.Client(base_url=site.url) as c:
        for path in GET_PATHS:
            r = c.get(path)
            doc = assert_envelope(r, 401, "agentctl.api.error/1")
            assert doc["errors"][0]["kind"] == "unauthenticated"
            assert r.headers["www-authenticate"] == "Bearer"
        for action in ("l1", "drain", "undrain"):
            assert_envelope(c.post(f"/api/v1/nodes/gpu-node-01/{action}"), 401)
        # a bad token or another scheme is refused, not treated as anonymous
        assert_envelope(c.get("/api/v1/fleet", headers={"Authorization": "Bearer nope"}), 401)
        assert_envelope(c.get("/api/v1/fleet", headers={"Authorization": "Basic dTpw"}), 401)
    assert site.actions.calls == []


def test_bearer_token_reads_the_fleet_in_the_common_envelope(site: Site) -> None:
    with httpx.Client(base_url=site.url, headers=bearer(site, "viewer")) as c:
        doc = assert_envelope(c.get("/api/v1/fleet"), 200, "agentctl.api.fleet/1")
        assert_envelope(c.get("/api/v1/me"), 200, "agentctl.api.me/1")
        me = c.get("/api/v1/me").json()["data"]
    assert me == {"username": "viewer", "role": "viewer", "via": "token"}
    data = doc["data"]
    assert [n["name"] for n in data["nodes"]] == list(site.fleet.nodes)
    assert data["totals"]["nodes"] == 5 and data["totals"]["open_alerts"] == 2
    by_name = {n["name"]: n for n in data["nodes"]}
    assert by_name[site.fleet.xid_node]["health"] == "fail"
    assert by_name[site.fleet.xid_node]["gpu_count"] == 7
    assert by_name[site.fleet.hot_node]["temp_c"] > 85
    assert by_name[site.fleet.unchecked_node or ""]["health"] is None
    assert len(by_name[site.fleet.xid_node]["sparks"]["util"]) > 10
    # the same numbers as the read model
    model = site.model.fleet()
    assert by_name[site.fleet.hot_node]["util_pct"] == model.nodes[2].util_pct


def test_session_cookie_works_for_the_api_too(site: Site) -> None:
    with httpx.Client(base_url=site.url) as c:
        assert login(c, "viewer", PASSWORDS["viewer"]).status_code == 303
        me = assert_envelope(c.get("/api/v1/me"), 200)["data"]
        assert me["via"] == "session" and me["role"] == "viewer"


def test_node_detail_ranges_and_unknown_node(site: Site) -> None:
    with httpx.Client(base_url=site.url, headers=bearer(site, "viewer")) as c:
        doc = assert_envelope(c.get(f"/api/v1/nodes/{site.fleet.xid_node}"), 200,
                              "agentctl.api.node/1")  # fmt: skip
        d = doc["data"]
        assert d["range_name"] == "24h" and d["row"]["name"] == site.fleet.xid_node
        assert d["charts"][0]["series"] == "node.gpu_util_avg"
        assert len(d["gpus"]) == 8
        assert any(e["code"] == 79 and e["kind"] == "xid" for e in d["events"])
        assert {r["kind"] for r in d["diagnostics"]} >= {"l1", "l2"}
        month = c.get(f"/api/v1/nodes/{site.fleet.xid_node}", params={"range": "30d"}).json()
        assert month["data"]["range_name"] == "30d"
        assert month["data"]["charts"][0]["resolution_s"] == 3600
        hour = c.get(f"/api/v1/nodes/{site.fleet.xid_node}", params={"range": "1h"}).json()
        assert (
            hour["data"]["charts"][0]["resolution_s"] == 0 and hour["data"]["charts"][0]["points"]
        )
        missing = assert_envelope(c.get("/api/v1/nodes/no-such-node"), 404, "agentctl.api.node/1")
        assert missing["errors"][0]["kind"] == "not_found"
        bad = assert_envelope(c.get("/api/v1/nodes/x", params={"range": "2y"}), 422)
        assert "range" in bad["errors"][0]["message"]


def test_events_filters(site: Site) -> None:
    with httpx.Client(base_url=site.url, headers=bearer(site, "viewer")) as c:
        every = assert_envelope(c.get("/api/v1/events"), 200, "agentctl.api.events/1")["data"]
        assert len(every) == 4
        xids = c.get("/api/v1/events", params={"kind": "xid"}).json()["data"]
        assert {e["code"] for e in xids} == {79, 31}
        query = {"severity": "critical", "node": site.fleet.xid_node}
        crit = c.get("/api/v1/events", params=query).json()["data"]
        assert {e["kind"] for e in crit} == {"xid", "check"}
        recent = c.get("/api/v1/events", params={"since_hours": 0.25}).json()["data"]
        assert [e["kind"] for e in recent] == ["check"]  # only the 10-minute-old one
        assert len(c.get("/api/v1/events", params={"limit": 1}).json()["data"]) == 1
        both = c.get("/api/v1/events", params=[("kind", "xid"), ("kind", "check")]).json()
        assert len(both["data"]) == 4
        for bad in ({"limit": 0}, {"since_hours": -1}, {"since_hours": "nan"}, {"limit": "x"}):
            assert_envelope(c.get("/api/v1/events", params=bad), 422)


def test_runs_and_serving(site: Site) -> None:
    with httpx.Client(base_url=site.url, headers=bearer(site, "viewer")) as c:
        runs = assert_envelope(c.get("/api/v1/runs"), 200, "agentctl.api.runs/1")["data"]
        assert runs[0]["id"] == site.fleet.run_id and runs[0]["status"] == "partial"
        one = assert_envelope(c.get(f"/api/v1/runs/{site.fleet.run_id}"), 200, "agentctl.api.run/1")
        failed = [r for r in one["data"]["results"] if r["status"] == "failed"]
        assert [r["host"] for r in failed] == [site.fleet.xid_node]
        assert_envelope(c.get("/api/v1/runs/9999"), 404, "agentctl.api.run/1")
        assert_envelope(c.get("/api/v1/runs/0"), 422)
        assert_envelope(c.get(f"/api/v1/runs/{2**70}"), 422)
        serving = assert_envelope(c.get("/api/v1/serving"), 200, "agentctl.api.serving/1")["data"]
        assert serving["routers"] == [site.fleet.nodes[0]]
        workers = {w["worker"] for w in serving["workers"]}
        assert workers == {f"{n}-w0" for n in site.fleet.nodes[1:]}
        assert all(0 <= w["kv_hit_rate"] <= 1 for w in serving["workers"])
        assert_envelope(c.get("/api/v1/nope"), 404)


def test_actions_need_an_operator_and_csrf_with_a_session(site: Site) -> None:
    node = site.fleet.xid_node
    site.actions.calls.clear()
    with httpx.Client(base_url=site.url) as c:
        r = c.post(f"/api/v1/nodes/{node}/drain", headers=bearer(site, "viewer"))
        assert assert_envelope(r, 403)["errors"][0]["kind"] == "forbidden"
        r = c.post(f"/api/v1/nodes/{node}/drain", headers=bearer(site, "operator"))
        doc = assert_envelope(r, 200, "agentctl.api.action/1")
        assert doc["data"] == {"ok": True, "message": "drain accepted", "data": {"node": node}}
        r = c.post(f"/api/v1/nodes/{node}/l1", headers=bearer(site, "admin"))
        assert_envelope(r, 200)
        assert_envelope(c.post("/api/v1/nodes/nobody/undrain", headers=bearer(site, "admin")), 404)
    assert site.actions.calls == [("drain", node), ("l1", node)]
    with httpx.Client(base_url=site.url) as c:
        login(c, "operator", PASSWORDS["operator"])
        r = c.post(f"/api/v1/nodes/{node}/undrain")
        assert assert_envelope(r, 403)["errors"][0]["kind"] == "csrf"
        r = c.post(f"/api/v1/nodes/{node}/undrain", headers={"X-CSRF-Token": "forged"})
        assert_envelope(r, 403)
        r = c.post(f"/api/v1/nodes/{node}/undrain", headers={"X-CSRF-Token": csrf_of(c)})
        assert_envelope(r, 200, "agentctl.api.action/1")
    assert site.actions.calls[-1] == ("undrain", node)


def test_a_failing_action_is_a_result_and_a_read_only_dashboard_answers_503(site: Site) -> None:
    site.actions.fail = True
    try:
        with httpx.Client(base_url=site.url, headers=bearer(site, "operator")) as c:
            r = c.post(f"/api/v1/nodes/{site.fleet.xid_node}/l1")
        doc = assert_envelope(r, 200, "agentctl.api.action/1")
        assert doc["ok"] is False and "connection refused" in doc["errors"][0]["message"]
    finally:
        site.actions.fail = False
    app = create_app(site.model, actions=None, session_secret=secrets.token_bytes(32))
    with live_server(app) as url, httpx.Client(base_url=url, headers=bearer(site, "operator")) as c:
        r = c.post(f"/api/v1/nodes/{site.fleet.xid_node}/drain")
        assert assert_envelope(r, 503)["errors"][0]["kind"] == "unavailable"


def test_openapi_documents_the_api(site: Site) -> None:
    with httpx.Client(base_url=site.url) as c:
        spec = c.get("/openapi.json").json()
        assert c.get("/docs").status_code == 404  # Swagger UI would load a CDN script
    paths = spec["paths"]
    assert set(paths) == {
        "/api/v1/me", "/api/v1/fleet", "/api/v1/nodes/{name}", "/api/v1/serving",
        "/api/v1/events", "/api/v1/runs", "/api/v1/runs/{run_id}", "/api/v1/nodes/{name}/l1",
        "/api/v1/nodes/{name}/drain", "/api/v1/nodes/{name}/undrain",
    }  # fmt: skip
    fleet = paths["/api/v1/fleet"]["get"]
    assert {"200", "401", "403", "422"} <= set(fleet["responses"])
    assert fleet["security"] == [{"token": []}]
    assert "FleetEnvelope" in spec["components"]["schemas"]
    assert "503" in paths["/api/v1/nodes/{name}/drain"]["post"]["responses"]


def test_security_headers_on_api_answers(site: Site) -> None:
    with httpx.Client(base_url=site.url, headers=bearer(site, "viewer")) as c:
        r = c.get("/api/v1/fleet")
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert "strict-transport-security" not in r.headers


@pytest.mark.timeout(120)
def test_schemathesis_finds_no_500_and_no_data_without_authentication(site: Site) -> None:
    schema = schemathesis.openapi.from_url(f"{site.url}/openapi.json")
    ops = [r.ok() for r in schema.get_all_operations()]
    assert len(ops) == 10

    def bounded(n: int) -> Any:
        return settings(max_examples=n, deadline=None, database=None, derandomize=True,
                        phases=[Phase.explicit, Phase.generate],
                        suppress_health_check=list(HealthCheck))  # fmt: skip

    auth = bearer(site, "operator")
    seen: Counter[int] = Counter()
    for op in ops:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @bounded(8)
            @given(case=op.as_strategy(generation_mode=mode))
            def authed(case: Any) -> None:
                resp = case.call(base_url=site.url, headers=auth)
                seen[resp.status_code] += 1
                assert resp.status_code < 500, (case.path, resp.status_code, resp.text[:300])
                assert resp.headers["content-type"][0].startswith("application/json")
                jsonschema.validate(resp.json(), ENVELOPE_SCHEMA)

            authed()

        @bounded(5)
        @given(case=op.as_strategy())
        def anonymous(case: Any) -> None:
            resp = case.call(base_url=site.url)
            assert resp.status_code == 401, (case.path, resp.status_code, resp.text[:300])
            assert resp.json()["data"] is None

        @bounded(4)
        @given(case=op.as_strategy())
        def conforms(case: Any) -> None:  # status, content type and body as documented
            case.call_and_validate(base_url=site.url, headers=auth)

        anonymous()
        conforms()
    assert seen[200] > 0 and seen[422] > 0, seen  # the token worked; bad input was refused
