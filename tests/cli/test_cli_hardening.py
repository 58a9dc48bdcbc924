"""The CLI with hostile data: values that look like rich markup, addresses the resolver rejects."""

from __future__ import annotations

import pytest
import yaml

pytestmark = pytest.mark.timeout(120)

MARKUP = "[/x]"


@pytest.fixture
def markup_inventory(tmp_path, monkeypatch):
    monkeypatch.setenv("AGENTCTL_KNOWN_HOSTS", str(tmp_path / "kh"))
    monkeypatch.setenv("AGENTCTL_CONNECT_RETRIES", "0")
    inv = tmp_path / "inv.yml"
    inv.write_text(
        yaml.safe_dump(
            {
                "all": {
                    "hosts": {
                        "h1": {"ansible_host": MARKUP, "ansible_user": "[bold]u[/bold]"},
                    }
                }
            }
        )
    )
    return inv


def test_markup_like_inventory_value_does_not_crash(cli, markup_inventory):
    """An ansible_host of '[/x]' used to raise rich.errors.MarkupError: traceback, exit 1."""
    res = cli("-i", str(markup_inventory), "run", "--", "true")
    assert res.code == 4, res.stdout + res.stderr
    assert MARKUP in res.stdout  # the recap shows the value literally


def test_markup_like_values_print_literally_everywhere(cli, markup_inventory):
    res = cli("-i", str(markup_inventory), "run", "--", "true")
    assert res.code == 4
    res = cli("-i", str(markup_inventory), "runs", "list")
    assert res.code == 0, res.stderr
    res = cli("-i", str(markup_inventory), "runs", "show", "1")
    assert res.code == 0, res.stderr
    assert MARKUP in res.stdout
    res = cli("-i", str(markup_inventory), "inventory", "show")
    assert res.code == 0, res.stderr
    assert "[bold]u[/bold]" in res.stdout
    res = cli("-i", str(markup_inventory), "inventory", "show", "h1")
    assert res.code == 0, res.stderr
    res = cli("-i", str(markup_inventory), "hosts", "list")
    assert res.code == 0, res.stderr
    assert MARKUP in res.stdout
    res = cli("-i", str(markup_inventory), "hosts", "trust", "--yes")
    assert res.code == 4, res.stderr
    assert MARKUP in res.stdout


def test_markup_in_an_error_message_is_printed_literally(cli, markup_inventory):
    res = cli("-i", str(markup_inventory), "--limit", "[/y]", "run", "--", "true")
    assert res.code == 2, res.stderr
    assert "[/y]" in res.stderr


def test_bad_address_gives_exit_4_and_closes_the_run(cli, tmp_path, monkeypatch):
    """An address the idna codec rejects (UnicodeError) is unreachable, and the run is closed."""
    monkeypatch.setenv("AGENTCTL_KNOWN_HOSTS", str(tmp_path / "kh"))
    monkeypatch.setenv("AGENTCTL_CONNECT_RETRIES", "0")
    inv = tmp_path / "inv.yml"
    inv.write_text(yaml.safe_dump({"all": {"hosts": {"h1": {"ansible_host": "a..b"}}}}))
    res = cli("-i", str(inv), "--json", "run", "--", "true")
    assert res.code == 4
    assert res.json["errors"][0]["kind"] == "unreachable"
    runs = cli("-i", str(inv), "--json", "runs", "list").json["data"]["runs"]
    assert [r["status"] for r in runs] != ["running"]
