"""The sudo password handshake: sent only after sudo's own prompt, never to the command.

Real sudo as root never prompts, so the prompting side is a small script speaking sudo's
`-S -p PROMPT` protocol (prompt on stderr, one line read from stdin); the not-prompting side
is the real sudo (see tests/review and tests/ssh for the real-sshd variants). The tests become
`nobody`: sudo to the login user itself is skipped (tests/test_become.py).
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from agentctl.ctl.connector import Become
from agentctl.ctl.local import LocalConnector

FAKE_SUDO = """#!/bin/sh
# minimal `sudo -S -p PROMPT -H -u USER -- cmd...`: prompt, read a line, compare
prompt=""
while [ $# -gt 0 ]; do
  case "$1" in
    -S|-H|-n) shift ;;
    -p) prompt="$2"; shift 2 ;;
    -u) shift 2 ;;
    --) shift; break ;;
    *) break ;;
  esac
done
tries=0
while [ $tries -lt 3 ]; do
  printf '%s' "$prompt" >&2
  IFS= read -r pw || { echo "sudo: no password" >&2; exit 1; }
  if [ "$pw" = "right-horse" ]; then exec "$@"; fi
  echo "Sorry, try again." >&2
  tries=$((tries+1))
done
echo "sudo: 3 incorrect password attempts" >&2
exit 1
"""


@pytest.fixture
def fake_sudo_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script = bindir / "sudo"
    script.write_text(FAKE_SUDO)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return bindir


def test_password_sent_after_prompt_and_command_gets_no_stdin(fake_sudo_path):
    conn = LocalConnector()
    become = Become("nobody", "right-horse")
    res = conn.run(["sh", "-c", "cat; echo done"], become=become, timeout=10)
    assert res.exit_status == 0, res.stderr
    assert res.stdout == "done\n"  # cat saw EOF, not the password
    assert "right-horse" not in res.stdout + res.stderr
    assert "agentctl-" not in res.stderr  # prompt and start marker are stripped


def test_wrong_password_fails_fast_instead_of_hanging(fake_sudo_path):
    conn = LocalConnector()
    res = conn.run(["true"], become=Become("nobody", "wrong"), timeout=10)
    assert res.exit_status == 1
    assert "wrong" not in res.stdout + res.stderr


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("sudo"), reason="needs root and sudo")
def test_real_sudo_that_does_not_prompt_never_receives_the_password():
    conn = LocalConnector()
    res = conn.run(["cat"], become=Become("nobody", "hunter2"), timeout=10)
    assert res.exit_status == 0, res.stderr
    assert "hunter2" not in res.stdout
