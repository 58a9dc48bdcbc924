"""`agentctl users ...` and `agentctl export` through the real CLI on a real SQLite store."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from agentctl.collectors.store import EventRecord, NodeRecord, Store

PLANTED = "hf_Zx9Yw8Vu7Ts6Rq5Po4Nm3Lk2Ji1Hg0Fe"


@pytest.fixture
def db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, agentctl_env: Path) -> Path:
    path = tmp_path / "a.db"
    monkeypatch.setenv("AGENTCTL_DATABASE_URL", f"sqlite:///{path}")
    with Store.open(f"sqlite:///{path}") as store:
        store.upsert_nodes([NodeRecord("gpu-01", "10.0.0.1", 22, roles=("worker",))])
        store.record_events([EventRecord(
            node="gpu-01", kind="xid", key="xid:0000:06:00:79", code=79, severity="critical",
            at=datetime(2026, 11, 20, 3, 0, tzinfo=UTC), subject="0000:06:00",
            message=f"GPU has fallen off the bus. HF_TOKEN={PLANTED}",
        )])  # fmt: skip
    return path


def test_users_add_list_token_remove(cli: Any, db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PW", "correct horse battery")
    added = cli("--json", "users", "add", "ops", "--role", "operator", "--password-env", "PW")
    assert added.code == 0, added.stderr
    assert added.json["data"] == {"username": "ops", "role": "operator", "created": True}
    listed = cli("--json", "users", "list")
    assert [u["username"] for u in listed.json["data"]["users"]] == ["ops"]
    assert "argon2" not in listed.stdout and "hash" not in listed.stdout
    with Store.open(f"sqlite:///{db}") as store:
        user = store.get_user("ops")
        assert user is not None and user.password_hash.startswith("$argon2")
    token = cli("--json", "users", "token", "ops")
    secret = token.json["data"]["token"]
    with Store.open(f"sqlite:///{db}") as store:
        found = store.user_by_token(secret)
        assert found is not None and found.username == "ops"
    assert cli("users", "remove", "ops").code == 0
    assert cli("users", "remove", "ops").code == 2


def test_users_add_refuses_bad_input_without_a_terminal(
    cli: Any, db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli("users", "add", "x", "--role", "root").code == 2
    no_tty = cli("users", "add", "x")
    assert no_tty.code == 2 and "--password-env" in no_tty.stderr
    monkeypatch.setenv("PW", "short")
    assert cli("users", "add", "x", "--password-env", "PW").code == 2


def test_export_file_verifies_and_a_cut_file_does_not(cli: Any, db: Path, tmp_path: Path) -> None:
    out = tmp_path / "e.jsonl"
    res = cli("--json", "export", "--kind", "events", "--out", str(out))
    assert res.code == 0, res.stderr
    assert res.json["data"]["count"] == 1
    text = out.read_text()
    assert PLANTED not in text and "fallen off the bus" in text
    record = json.loads(text.splitlines()[1])
    assert record["event"]["code"] in ("79", 79) and record["host"]["name"] == "gpu-01"
    assert cli("export", "--verify", str(out)).code == 0
    out.write_text("\n".join(text.splitlines()[:-1]) + "\n")  # the trailer is gone
    assert cli("export", "--verify", str(out)).code == 6
    stdout = cli("export", "--kind", "events", "--format", "ocsf")
    assert stdout.code == 0 and '"class_uid":2004' in stdout.stdout.replace(" ", "")


class _Bulk(BaseHTTPRequestHandler):
    got: list[str] = []
    fail = 0

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"])).decode()
        if _Bulk.fail > 0:
            _Bulk.fail -= 1
            self.send_response(503)
            self.end_headers()
            return
        lines = [ln for ln in body.splitlines() if ln]
        items = []
        for action, doc in zip(lines[::2], lines[1::2], strict=True):
            _Bulk.got.append(doc)
            items.append({"create": {"_id": json.loads(action)["create"]["_id"], "status": 201}})
        payload = json.dumps({"errors": False, "items": items}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def collector() -> Iterator[str]:
    _Bulk.got, _Bulk.fail = [], 0
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Bulk)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/_bulk"
    server.shutdown()


def test_export_post_spools_while_the_collector_is_down_then_resumes(
    cli: Any, db: Path, collector: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTCTL_EXPORT_TOKEN", "elastic-api-key-123456")
    _Bulk.fail = 1000  # down for now
    down = cli("--json", "export", "--kind", "events", "--post", collector, "--max-wait", "0.5")
    assert down.code == 4, down.stdout + down.stderr
    assert down.json["data"]["delivery"]["status"] == "pending"
    assert _Bulk.got == []
    _Bulk.fail = 0
    up = cli("--json", "export", "--resume", "--post", collector)
    assert up.code == 0, up.stdout + up.stderr
    assert up.json["data"]["delivery"]["delivered"] == 1
    assert len(_Bulk.got) == 1 and PLANTED not in _Bulk.got[0]
    again = cli("--json", "export", "--resume", "--post", collector)
    assert again.json["data"]["delivery"]["delivered"] == 0 and len(_Bulk.got) == 1
