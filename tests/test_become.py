"""Privilege escalation where it changes something, and a clear error where it cannot happen.

A fresh Debian image has no sudo: sudo from root to root is skipped (the command runs as is), and
a step that really needs sudo on such a host fails with a `SudoError` naming the host and the
package to install, not a bare `sudo: command not found`. Real commands, real shells; sudo is
hidden by a PATH without it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from agentctl.ctl.connector import Become, build_command, effective_become
from agentctl.ctl.errors import SudoError
from agentctl.ctl.local import LocalConnector


def test_become_to_the_login_user_is_skipped():
    assert effective_become(Become("root"), "root") is None
    assert effective_become(Become("root"), "alice") == Become("root")
    assert effective_become(Become("nobody"), "root") == Become("nobody")
    assert effective_become(None, "root") is None


def test_sudo_wrapper_only_when_needed_and_quoted():
    cmd = build_command(["id", "-un"], become=Become("nobody; touch /tmp/x"))
    assert cmd.startswith("if command -v sudo >/dev/null 2>&1; then sudo -n")
    assert "'nobody; touch /tmp/x'" in cmd
    assert build_command(["id"]) == "id"


def _path_without_sudo(tmp_path: Path) -> str:
    """A PATH with the shell tools a command needs (sh, id, printf) and no sudo."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for tool in ("sh", "id", "env", "true", "printf", "cat"):
        found = shutil.which(tool)
        if found:
            (bindir / tool).symlink_to(found)
    return str(bindir)


def test_local_connector_as_root_needs_no_sudo(tmp_path, monkeypatch):
    conn = LocalConnector()
    monkeypatch.setenv("PATH", _path_without_sudo(tmp_path))
    res = conn.run(["id", "-un"], become=Become(conn.login_user), timeout=10)
    assert res.exit_status == 0, res.stderr
    assert res.stdout.strip() == conn.login_user
    assert "sudo" not in res.command


def test_missing_sudo_is_a_clear_error_naming_the_host(tmp_path, monkeypatch):
    conn = LocalConnector(host="gpu07")
    monkeypatch.setenv("PATH", _path_without_sudo(tmp_path))
    other = "nobody" if conn.login_user != "nobody" else "root"
    with pytest.raises(SudoError) as err:
        conn.run(["id", "-un"], become=Become(other), timeout=10)
    assert err.value.host == "gpu07"
    assert "sudo is not installed on gpu07" in err.value.message
    assert "apt-get install sudo" in err.value.message


@pytest.mark.skipif(not shutil.which("sudo") or os.geteuid() != 0, reason="needs root and sudo")
def test_sudo_still_runs_for_another_user():
    res = LocalConnector().run(["id", "-un"], become=Become("nobody"), timeout=10)
    assert res.exit_status == 0, res.stderr
    assert res.stdout.strip() == "nobody"
