"""Secrets a command prints never reach the store or a viewer: `agentctl run -- cat FILE` on a
real sshd node, then the stored row (read with sqlite3, below the store's API), the dashboard's
run page and the JSON API, as viewer and as operator, with and without --store-raw-output."""

from __future__ import annotations

import secrets
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from agentctl.collectors.store import Store
from agentctl.ctl.fleet import LocalFleet, find_sshd
from agentctl.dashboard.readmodel import ReadModel
from agentctl.dashboard.web import create_app
from agentctl.dashboard.web.auth import hash_password
from agentctl.dashboard.web.testdata import live_server

pytestmark = pytest.mark.timeout(120)

# Assembled from parts so that no secret scanner mistakes the test for a leak.
PASSWORD = "Pl4nted-" + "db-passw0rd"
AWS_KEY = "AKIA" + "Q3ZT7XW2PLM4NB6V"
BEARER = "pl4nted" + "Bearer0token0Zx9Yw8Vu7Ts6Rq5"
KEY_BODY = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW" + "Q1NTE5"
SECRETS = (PASSWORD, AWS_KEY, BEARER, KEY_BODY)
FILE = (
    "app: checkout\n"
    f"DB_PASSWORD={PASSWORD}\n"
    f"AWS_ACCESS_KEY_ID={AWS_KEY}\n"
    f"Authorization: Bearer {BEARER}\n"
    "-----BEGIN OPENSSH " + "PRIVATE KEY-----\n"
    f"{KEY_BODY}\n"
    "-----END OPENSSH " + "PRIVATE KEY-----\n"
)
USERS = {"viewer": "viewer-pass-1", "operator": "operator-pass-1"}


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFleet]:
    if find_sshd() is None:
        pytest.skip("sshd not installed")
    fl = LocalFleet(tmp_path_factory.mktemp("redact-fleet"), 1, prefix="sec", first_address=160)
    try:
        fl.start()
        yield fl
    finally:
        fl.stop()


@pytest.fixture
def env(cli: Any, node: LocalFleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An inventory of the node, its host key trusted, a store file; returns the store path."""
    monkeypatch.setenv("AGENTCTL_KNOWN_HOSTS", str(node.write_known_hosts(tmp_path / "kh")))
    db = tmp_path / "runs.db"
    monkeypatch.setenv("AGENTCTL_DATABASE_URL", f"sqlite:///{db}")
    monkeypatch.setenv("AGENTCTL_INVENTORY", str(tmp_path / "inv.yml"))
    (tmp_path / "inv.yml").write_text(yaml.safe_dump(node.inventory()))
    (tmp_path / "app.env").write_text(FILE)
    return db


def stored_rows(db: Path) -> list[str]:
    """Every text the store holds for runs, straight from SQLite."""
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT stdout, stderr, coalesce(error_message, '') FROM run_results")
        texts = [t for row in rows for t in row]
        texts += [f"{c} {o}" for c, o in con.execute("SELECT command, options FROM runs")]
    return texts


def login(client: httpx.Client, user: str) -> None:
    page = client.get("/login")
    token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    r = client.post("/login", data={"username": user, "password": USERS[user],
                                    "csrf_token": token, "next": "/"})  # fmt: skip
    assert r.status_code == 303, r.text


def views(db: Path, run_id: int) -> dict[str, tuple[str, str]]:
    """role -> (run page HTML, API JSON text), through the real app on a real port."""
    out = {}
    with Store.open(f"sqlite:///{db}") as store:
        for role, pw in USERS.items():
            store.put_user(role, hash_password(pw), role)
        app = create_app(ReadModel(store), actions=None, session_secret=secrets.token_bytes(32))
        with live_server(app) as url:
            for role in USERS:
                with httpx.Client(base_url=url) as c:
                    login(c, role)
                    page = c.get(f"/runs/{run_id}")
                    api = c.get(f"/api/v1/runs/{run_id}")
                    listed = c.get("/api/v1/runs")
                    assert page.status_code == api.status_code == listed.status_code == 200
                    out[role] = (page.text, api.text + listed.text)
    return out


def test_run_output_is_stored_and_shown_redacted(cli: Any, env: Path, tmp_path: Path) -> None:
    res = cli("--json", "run", "--", "cat", str(tmp_path / "app.env"))
    assert res.code == 0, res.stderr
    # The operator's own terminal gets what the command printed.
    assert PASSWORD in res.json["data"]["hosts"][0]["stdout"]
    run_id = res.json["data"]["run_id"]
    stored = "\n".join(stored_rows(env))
    assert "app: checkout" in stored and "[REDACTED:password]" in stored
    assert "[REDACTED:private-key]" in stored and "[REDACTED:token]" in stored
    for secret in SECRETS:
        assert secret not in stored
    for role, (page, api) in views(env, run_id).items():
        assert "app: checkout" in page and "app: checkout" in api, role
        assert "REDACTED:password" in page and "REDACTED:password" in api, role
        for secret in SECRETS:
            assert secret not in page and secret not in api, (role, secret)


def test_store_raw_output_is_for_operators_only(cli: Any, env: Path, tmp_path: Path) -> None:
    assert "raw output then lands in the store" in " ".join(cli("run", "--help").stdout.split())
    res = cli("--json", "run", "--store-raw-output", "--", "cat", str(tmp_path / "app.env"))
    assert res.code == 0, res.stderr
    run_id = res.json["data"]["run_id"]
    assert all(s in "\n".join(stored_rows(env)) for s in SECRETS)  # asked for, and said so
    seen = views(env, run_id)
    page, api = seen["operator"]
    assert all(s in page and s in api for s in SECRETS)
    assert "stored raw" in page
    page, api = seen["viewer"]
    assert "app: checkout" in page and "REDACTED:password" in api
    assert "you see it redacted" in page
    for secret in SECRETS:
        assert secret not in page and secret not in api, secret


def test_a_secret_in_the_command_line_is_not_stored(cli: Any, env: Path) -> None:
    res = cli("--json", "run", "--", "sh", "-c", "exit 3", "--password", PASSWORD)
    assert res.code == 3, res.stderr
    run_id = res.json["data"]["run_id"]
    stored = "\n".join(stored_rows(env))
    assert PASSWORD not in stored and "[REDACTED:password]" in stored
    listed = cli("--json", "runs", "show", str(run_id))
    assert PASSWORD not in listed.stdout and "sh -c" in listed.json["data"]["command"]
    # Rerunning would run the redacted command: refused, with the way out.
    again = cli("--json", "run", "--rerun-failed", str(run_id))
    assert again.code == 2
    assert "stored redacted" in again.json["errors"][0]["message"]
