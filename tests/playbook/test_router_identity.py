"""`router_workers` (drain/undrain, what the dashboard's drain runs) checks the router's
identity before the admin token leaves the node: a service at the config's address that is not
the router the config describes gets one tokenless GET /health and nothing else. The op runs
for real (local connector, the router node's python, a real HTTP listener on loopback)."""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentctl.ctl.errors import OperationError
from agentctl.ctl.local import LocalConnector
from agentctl.ctl.playbook.ops.base import HostContext
from agentctl.ctl.playbook.ops.router import RouterWorkers, RouterWorkersArgs, identity_problem

pytestmark = pytest.mark.timeout(120)
TOKEN = "admin-t0ken-" + "never-sent-0123456789"
WORKERS = {"gpu-01-w0": "http://127.0.0.5:8001", "gpu-01-w1": "http://127.0.0.5:8002"}


class Impostor(BaseHTTPRequestHandler):
    """Another fleet's router (same worker names, its own addresses), recording what it gets."""

    seen: list[tuple[str, str, str | None]] = []

    def do_GET(self) -> None:
        self.seen.append(("GET", self.path, self.headers.get("Authorization")))
        body = {"status": "ok", "policy": "kv", "block_size": 64,
                "workers": [{"id": wid, "url": "http://127.0.0.9:9" + url[-3:]}
                            for wid, url in WORKERS.items()]}  # fmt: skip
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_POST = do_GET

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def impostor() -> Iterator[tuple[int, list[tuple[str, str, str | None]]]]:
    Impostor.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Impostor)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], Impostor.seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def test_the_token_is_not_sent_to_a_router_that_is_not_the_configs(
    tmp_path: Path, impostor: tuple[int, list[tuple[str, str, str | None]]]
) -> None:
    port, seen = impostor
    (tmp_path / "router.token").write_text(TOKEN)
    config = tmp_path / "router.yaml"
    config.write_text(yaml.safe_dump({"router": {
        "host": "127.0.0.1", "port": port, "policy": "kv", "block_size": 64,
        "admin_token_file": str(tmp_path / "router.token"),
        "workers": [{"id": wid, "url": url} for wid, url in WORKERS.items()],
    }}))  # fmt: skip
    ctx = HostContext(conn=LocalConnector(), name="router-01", vars={}, become=None, timeout=60)
    args = RouterWorkersArgs(python=sys.executable, config=str(config), nodes=["gpu-01"])
    with pytest.raises(OperationError) as caught:
        RouterWorkers().plan(ctx, args)
    message = str(caught.value)
    assert "is not the router" in message and "gpu-01-w0" in message
    assert "admin token was not sent" in message
    assert seen == [("GET", "/health", None)]  # one tokenless look, no admin call


def test_nothing_answering_is_refused_too(tmp_path: Path) -> None:
    config = tmp_path / "router.yaml"
    config.write_text(yaml.safe_dump({"router": {"host": "127.0.0.1", "port": 9}}))
    ctx = HostContext(conn=LocalConnector(), name="router-01", vars={}, become=None, timeout=60)
    args = RouterWorkersArgs(python=sys.executable, config=str(config), nodes=["gpu-01"])
    with pytest.raises(OperationError, match="admin token was not sent"):
        RouterWorkers().plan(ctx, args)


def _health(**over: Any) -> dict[str, Any]:
    workers = [{"id": k, "url": v + "/"} for k, v in WORKERS.items()]
    doc: dict[str, Any] = {"policy": "kv", "block_size": 64, "workers": workers}
    doc.update(over)
    return doc


def test_identity_rules() -> None:
    expected = {"policy": "kv", "block_size": 64, "workers": WORKERS}
    assert identity_problem(expected, _health()) is None  # a trailing slash is the same URL
    extra = _health(workers=[*_health()["workers"], {"id": "added", "url": "http://x:1"}])
    assert identity_problem(expected, extra) is None  # workers added through the admin API
    problem = identity_problem(expected, _health(policy="round-robin"))
    assert problem is not None and "policy" in problem
    problem = identity_problem(expected, _health(block_size=16))
    assert problem is not None and "block_size" in problem
    assert identity_problem(expected, _health(workers=[])) is not None
    assert identity_problem(expected, "<html>") is not None
