"""The dashboard's operator actions done for real: `FleetActions` (what `agentctl dashboard
serve` hands the web app) runs L1 on a real sshd node when an operator asks through the API,
stores it like `agentctl diag l1`, and a viewer's request never reaches the node."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agentctl.collectors.store import NodeRecord
from agentctl.ctl.cli.dashboard_cmd import FleetActions
from agentctl.ctl.cli.state import State
from agentctl.ctl.fleet import LocalFleet, find_sshd
from agentctl.dashboard.readmodel import ReadModel
from agentctl.dashboard.tui.source import RemoteSource
from agentctl.dashboard.web import create_app
from agentctl.dashboard.web.auth import hash_password
from agentctl.dashboard.web.testdata import live_server

pytestmark = pytest.mark.timeout(180)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[LocalFleet]:
    if find_sshd() is None:
        pytest.skip("sshd not installed")
    fl = LocalFleet(tmp_path / "fleet", 1, prefix="da", first_address=190)
    try:  # start() may fail half-way, with some nodes up
        fl.start()
        yield fl
    finally:
        fl.stop()


def test_an_operator_runs_l1_on_a_real_node_through_the_api(
    node: LocalFleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, agentctl_env: Path
) -> None:
    monkeypatch.setenv("AGENTCTL_KNOWN_HOSTS", str(node.write_known_hosts(tmp_path / "kh")))
    monkeypatch.setenv("AGENTCTL_DATABASE_URL", f"sqlite:///{tmp_path / 'd.db'}")
    st = State(inventory_path=str(node.write_inventory(tmp_path / "inv.yml")))
    store = st.store()
    store.upsert_nodes([NodeRecord("da01", "127.0.0.190", None)])  # as facts/diag would
    store.put_user("op", hash_password("operator-pw-1"), "operator")
    store.put_user("view", hash_password("viewer-pw-1"), "viewer")
    tokens = {}
    for user in ("op", "view"):
        tokens[user] = secrets.token_urlsafe(16)
        store.add_token(user, "test", tokens[user])
    app = create_app(ReadModel(store), actions=FleetActions(st),
                     session_secret=secrets.token_bytes(32))  # fmt: skip
    with live_server(app) as url, httpx.Client(base_url=url, timeout=120) as client:
        denied = client.post("/api/v1/nodes/da01/l1",
                             headers={"Authorization": f"Bearer {tokens['view']}"})  # fmt: skip
        assert denied.status_code == 403
        assert store.latest_diag("l1") == {}  # the viewer's request never reached the node
        done = client.post("/api/v1/nodes/da01/l1",
                           headers={"Authorization": f"Bearer {tokens['op']}"})  # fmt: skip
        assert done.status_code == 200, done.text
        result = done.json()["data"]
        assert result["ok"] is True and result["data"]["verdict"] in ("pass", "warn", "fail")
        # what `agentctl watch --remote` uses: the token's role and the same endpoints
        viewer, operator = RemoteSource(url, tokens["view"]), RemoteSource(url, tokens["op"])
        try:
            assert (viewer.role(), operator.role()) == ("viewer", "operator")
            refused = viewer.actions().run_l1("da01")
            assert refused.ok is False and "operator" in refused.message
            again = operator.actions().run_l1("da01")
            assert again.ok is True and again.data["run_id"] > result["data"]["run_id"]
        finally:
            viewer.close()
            operator.close()
        unknown = client.post("/api/v1/nodes/nope/l1",
                              headers={"Authorization": f"Bearer {tokens['op']}"})  # fmt: skip
        assert unknown.status_code in (404, 400, 422) or unknown.json()["ok"] is False
    stored = store.latest_diag("l1")["da01"]
    assert stored.run_id == again.data["run_id"]  # the newest of the two runs
    run = store.get_run(stored.run_id)
    assert run is not None and run.kind == "diag-l1" and run.results[0].host == "da01"
    st.close()
