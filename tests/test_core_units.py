"""Pure pieces of the core: command quoting, output caps, batches, recap exit codes."""

from __future__ import annotations

import shlex
import subprocess

import pytest

from agentctl.ctl.connector import Become, build_command, cap_output
from agentctl.ctl.errors import (
    AuthError,
    CommandTimeout,
    ExitCode,
    HostKeyError,
    UnreachableError,
    UsageError,
)
from agentctl.ctl.fanout import (
    FanOut,
    FanoutOptions,
    HostOutcome,
    Recap,
    Status,
    TaskOutput,
    parse_batches,
)
from agentctl.ctl.local import LocalConnector


@pytest.mark.parametrize(
    "argv",
    [["echo", "; rm -rf /"], ["printf", "%s", "$(id)"], ["echo", "a'b\"c\nd"], ["echo", "`id`"]],
)
def test_build_command_round_trips_through_a_real_shell(argv):
    cmd = build_command(argv)
    assert shlex.split(cmd) == argv
    out = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, check=True).stdout
    expected = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    assert out == expected


def test_sudo_password_never_appears_in_the_command():
    cmd = build_command(["id"], become=Become("root", password="hunter2"))
    assert "hunter2" not in cmd
    assert "then sudo -S -p '[agentctl-sudo-" in cmd
    assert "hunter2" not in repr(Become("root", password="hunter2"))
    assert build_command(["id"], become=Become("nobody; reboot")).count("'nobody; reboot'") == 1


def test_env_names_are_validated():
    with pytest.raises(ValueError):
        build_command(["true"], env={"A;B": "x"})
    assert build_command(["true"], env={"A": "x y"}) == "env 'A=x y' true"


def test_cap_output_keeps_head_and_tail():
    text, cut = cap_output(b"H" * 100 + b"M" * 1000 + b"T" * 100, cap=200)
    assert cut and text.startswith("H" * 100) and text.endswith("T" * 100)
    assert "bytes cut by agentctl" in text
    assert cap_output(b"short", cap=200) == ("short", False)


@pytest.mark.parametrize(
    ("spec", "n", "expected"),
    [
        (None, 5, [5]),
        ("1,10%,100%", 50, [1, 5, 44]),
        ("2", 5, [2, 2, 1]),
        ("50%", 3, [1, 1, 1]),
        ("1,3", 10, [1, 3, 3, 3]),
    ],
)
def test_parse_batches(spec, n, expected):
    assert parse_batches(spec, n) == expected


@pytest.mark.parametrize("bad", ["0", "-1", "0%", "101%", "x", ""])
def test_parse_batches_rejects(bad):
    with pytest.raises(UsageError):
        parse_batches(bad, 10)


def _recap(*outcomes: HostOutcome, **kw: bool) -> Recap:
    return Recap(list(outcomes), **kw)


def test_exit_code_order_worst_wins():
    ok = HostOutcome("a", Status.OK)
    failed = HostOutcome("b", Status.FAILED, error=CommandTimeout("t"))
    unreachable = HostOutcome("c", Status.UNREACHABLE, error=UnreachableError("u"))
    key = HostOutcome("d", Status.UNREACHABLE, error=HostKeyError("k"))
    auth = HostOutcome("e", Status.UNREACHABLE, error=AuthError("a"))
    assert _recap(ok).exit_code == ExitCode.OK
    assert _recap(ok, unreachable).exit_code == ExitCode.UNREACHABLE
    assert _recap(ok, unreachable, failed).exit_code == ExitCode.HOSTS_FAILED
    assert _recap(failed, key).exit_code == ExitCode.HOST_KEY_OR_AUTH
    assert _recap(auth).exit_code == ExitCode.HOST_KEY_OR_AUTH
    assert _recap(ok, aborted=True).exit_code == ExitCode.HOSTS_FAILED
    assert _recap(key, interrupted=True).exit_code == ExitCode.INTERRUPTED


def test_retries_are_for_connection_failures_only():
    """Two refused connects then success: 3 attempts. An auth refusal: 1 attempt."""
    calls: dict[str, int] = {}

    def connect(name: str) -> LocalConnector:
        calls[name] = calls.get(name, 0) + 1
        if name == "flaky" and calls[name] < 3:
            raise UnreachableError("refused", host=name)
        if name == "locked":
            raise AuthError("denied", host=name)
        return LocalConnector(name)

    def task(conn, _name):  # type: ignore[no-untyped-def]
        return TaskOutput(Status.OK, conn.run(["true"]))

    fan: FanOut[str] = FanOut(
        connect,
        task,
        name_of=str,
        options=FanoutOptions(connect_retries=2, retry_backoff=0.01),
    )
    recap = fan.run(["flaky", "locked", "fine"])
    by_host = {o.host: o for o in recap.outcomes}
    assert by_host["flaky"].status is Status.OK and by_host["flaky"].attempts == 3
    assert by_host["locked"].status is Status.UNREACHABLE and by_host["locked"].attempts == 1
    assert calls["locked"] == 1
    assert by_host["fine"].attempts == 1
    assert recap.exit_code == ExitCode.HOST_KEY_OR_AUTH


def test_local_connector_deadline_kills_the_process_group(tmp_path):
    marker = tmp_path / "still-running"
    conn = LocalConnector()
    with pytest.raises(CommandTimeout):
        conn.run(["sh", "-c", f"sleep 0.5 && sleep 2 && touch {marker}"], timeout=0.2)
    import time

    time.sleep(2.8)
    assert not marker.exists()
