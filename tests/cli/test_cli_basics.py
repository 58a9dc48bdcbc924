"""The CLI's contract: envelope, exit codes, usage errors, settings, inventory commands."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from agentctl.ctl import __version__
from agentctl.ctl.envelope import ENVELOPE_SCHEMA

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "inventory"


def test_version(cli):
    res = cli("--version")
    assert res.code == 0
    assert res.stdout.strip() == f"agentctl {__version__}"


def test_no_inventory_is_a_usage_error_with_an_envelope(cli):
    res = cli("--json", "inventory", "check")
    assert res.code == 2
    doc = res.json
    jsonschema.validate(doc, ENVELOPE_SCHEMA)
    assert doc["ok"] is False
    assert doc["errors"][0]["kind"] == "usage"
    assert "--inventory" in doc["errors"][0]["message"]


def test_malformed_inventory_names_file_line_and_field(cli, tmp_path):
    inv = tmp_path / "bad.yml"
    inv.write_text("all:\n  hosts:\n    web1:\n      ansible_port: eighty\n")
    res = cli("-i", str(inv), "inventory", "check")
    assert res.code == 2
    assert f"{inv}:4" in res.stderr
    assert "ansible_port" in res.stderr
    # Nothing runs: `run` refuses before any connection, with the same message.
    res = cli("-i", str(inv), "--json", "run", "--", "true")
    assert res.code == 2
    assert res.json["errors"][0]["kind"] == "inventory"


def test_inventory_show_masks_secrets(cli, tmp_path):
    inv = tmp_path / "inv.yml"
    inv.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "hosts": {"gpu1": {"ansible_host": "10.0.0.5", "ansible_port": 2222}},
                    "vars": {"ansible_become_password": "hunter2", "api_token": "tok-123"},
                    "children": {"workers": {"hosts": {"gpu1": None}}},
                }
            }
        )
    )
    res = cli("-i", str(inv), "--json", "inventory", "show")
    assert res.code == 0
    assert "hunter2" not in res.stdout and "tok-123" not in res.stdout
    (host,) = res.json["data"]["hosts"]
    assert host["name"] == "gpu1" and host["port"] == 2222
    res = cli("-i", str(inv), "inventory", "show")
    assert "hunter2" not in res.stdout + res.stderr


def test_inventory_check_on_every_good_fixture(cli):
    for path in sorted((FIXTURES / "good").glob("*.y*ml")):
        res = cli("-i", str(path), "--json", "inventory", "check")
        assert res.code == 0, (path, res.stdout, res.stderr)
        jsonschema.validate(res.json, ENVELOPE_SCHEMA)


def test_limit_matching_nothing_is_a_usage_error(cli, tmp_path):
    inv = tmp_path / "inv.yml"
    inv.write_text("all:\n  hosts:\n    a: {}\n    b: {}\n")
    res = cli("-i", str(inv), "--limit", "zzz*", "run", "--", "true")
    assert res.code == 2
    assert "no hosts selected" in res.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["run", "--batch", "0", "--", "true"],
        ["run", "--batch", "x%", "--", "true"],
        ["run"],
        ["run", "--forks", "0", "--", "true"],
        ["facts", "--family", "nope"],
        ["no-such-command"],
    ],
)
def test_usage_errors_exit_2(cli, tmp_path, args):
    inv = tmp_path / "inv.yml"
    inv.write_text("all:\n  hosts:\n    a:\n      ansible_connection: local\n")
    res = cli("-i", str(inv), "--json", *args)
    assert res.code == 2, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    jsonschema.validate(doc, ENVELOPE_SCHEMA)
    assert doc["ok"] is False


def test_config_show_reports_sources(cli, agentctl_env, monkeypatch):
    monkeypatch.setenv("AGENTCTL_FORKS", "7")
    monkeypatch.setenv("AGENTCTL_DATABASE_URL", "postgresql://ops:s3cret@db.example/agentctl")
    res = cli("--json", "config", "show")
    assert res.code == 0
    doc = res.json
    assert doc["data"]["settings"]["forks"] == 7
    assert doc["data"]["sources"]["forks"] == "env:AGENTCTL_FORKS"
    assert "s3cret" not in res.stdout
    res = cli("--json", "config", "paths")
    assert res.code == 0
    assert str(agentctl_env) in res.json["data"]["data_dir"]


def test_invalid_setting_is_a_usage_error(cli, monkeypatch):
    monkeypatch.setenv("AGENTCTL_CONNECT_TIMEOUT", "-1")
    res = cli("--json", "config", "show")
    assert res.code == 2
    assert "AGENTCTL_CONNECT_TIMEOUT" in res.json["errors"][0]["message"]


def test_local_connector_run_and_facts_are_recorded(cli, tmp_path):
    inv = tmp_path / "inv.yml"
    inv.write_text("all:\n  hosts:\n    me:\n      ansible_connection: local\n")
    res = cli("-i", str(inv), "--json", "run", "--", "echo", "$(hostname)")
    assert res.code == 0
    assert res.json["data"]["hosts"][0]["stdout"] == "$(hostname)\n"
    res = cli("-i", str(inv), "--json", "facts", "-F", "os", "-F", "memory")
    assert res.code == 0
    res = cli("--json", "runs", "list")
    kinds = [r["kind"] for r in res.json["data"]["runs"]]
    assert kinds == ["facts", "run"]
    res = cli("--json", "runs", "show", "999")
    assert res.code == 2
