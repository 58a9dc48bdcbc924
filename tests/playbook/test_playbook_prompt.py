"""Without --yes, on a terminal, a playbook run shows the plan and asks once (a real pty)."""

from __future__ import annotations

import os
import pty
import select
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import children
import pytest
import yaml

from agentctl.ctl.fleet import LocalFleet, find_sshd

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    if find_sshd() is None:
        pytest.skip("sshd not installed")
    tmp = tmp_path_factory.mktemp("prompt")
    fl = LocalFleet(tmp / "fleet", 1, prefix="pt", first_address=170)
    try:  # start() may fail half-way, with some nodes up
        fl.start()
        doc = fl.inventory()
        (tmp / "inv.yml").write_text(yaml.safe_dump(doc))
        target = tmp / "made.txt"
        (tmp / "pb.yml").write_text(
            f"tasks:\n  - name: the file\n    file: {{path: {target}, content: hello}}\n"
        )
        env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTCTL_")}
        env.update(
            AGENTCTL_KNOWN_HOSTS=str(fl.write_known_hosts(tmp / "kh")),
            AGENTCTL_DATABASE_URL=f"sqlite:///{tmp / 'a.db'}",
            AGENTCTL_USE_SSH_CONFIG="false",
            AGENTCTL_LOOK_FOR_KEYS="false",
            AGENTCTL_USE_AGENT="false",
            NO_COLOR="1",
        )
        yield tmp, env
    finally:
        fl.stop()


def _run_on_pty(argv: list[str], env: dict[str, str], answer: bytes) -> tuple[int, str]:
    """Run `argv` with a pty as its terminal; type `answer` when it asks."""
    master, slave = pty.openpty()
    proc = children.start(argv, stdin=slave, stdout=slave, stderr=slave, env=env, close_fds=True)
    os.close(slave)
    seen = b""
    answered = False
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    chunk = os.read(master, 4096)
                except OSError:  # the child closed the pty
                    break
                if not chunk:
                    break
                seen += chunk
                if not answered and b"Apply these changes" in seen:
                    os.write(master, answer)
                    answered = True
            elif proc.poll() is not None:
                break
        return proc.wait(timeout=30), seen.decode("utf-8", "replace")
    finally:
        os.close(master)
        children.stop(proc)  # SIGTERM (a clean stop for the CLI), then SIGKILL, its group


def test_plan_then_one_question_no_applies_nothing_yes_applies(
    setup: tuple[Path, dict[str, str]],
) -> None:
    tmp, env = setup
    argv = [sys.executable, "-m", "agentctl.ctl", "-i", str(tmp / "inv.yml"), "playbook", "run",
            str(tmp / "pb.yml")]  # fmt: skip
    code, out = _run_on_pty(argv, env, b"n\n")
    assert "the file" in out and "create" in out  # the plan was shown first
    assert out.count("Apply these changes") == 1
    assert code == 1 and "not applied" in out
    assert not (tmp / "made.txt").exists()
    code, out = _run_on_pty(argv, env, b"y\n")
    assert code == 0, out
    assert (tmp / "made.txt").read_text() == "hello"
    code, out = _run_on_pty(argv, env, b"y\n")  # nothing to change: no question at all
    assert code == 0 and "nothing to change" in out and "Apply these changes" not in out
