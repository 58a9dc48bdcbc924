"""Review findings in the fan-out, the CLI, target resolution and the local connector.

Regression tests for findings of a code review (F-numbers); each failed before its fix.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
from pathlib import Path

import proctable
import pytest
import yaml

from agentctl.ctl.connector import CommandResult
from agentctl.ctl.errors import CommandTimeout, UnreachableError
from agentctl.ctl.fanout import FanOut, FanoutOptions, Status, TaskOutput
from agentctl.ctl.local import LocalConnector
from agentctl.ctl.ssh import Aborter, ConnectOptions, KnownHosts, SSHConnector, Target

pytestmark = pytest.mark.timeout(120)


def _inventory(path: Path, fleet, **extra_hosts) -> Path:
    doc = fleet.inventory()
    doc["all"]["hosts"].update(extra_hosts)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# --- F1 (HIGH): the sudo password is fed to the command when sudo does not ask for it --------


def test_sudo_password_never_reaches_the_command(cli, small_fleet, tmp_path, monkeypatch):
    """`sudo -S -p ''` + password written blindly to stdin: when sudo needs no password
    (root, NOPASSWD, a cached timestamp) the password line becomes the command's stdin. Here
    `cat` prints it: it lands in the JSON envelope, in the terminal and in the run store.
    It becomes `nobody`: sudo from root to root is skipped altogether."""
    monkeypatch.setenv("AGENTCTL_KNOWN_HOSTS", str(small_fleet.write_known_hosts(tmp_path / "kh")))
    monkeypatch.setenv("AGENTCTL_SUDO_PASSWORD_ENV", "REVIEW_PW")
    monkeypatch.setenv("REVIEW_PW", "hunter2-s3cret")
    inv = _inventory(tmp_path / "inv.yml", small_fleet)
    res = cli("-i", str(inv), "--limit", "edge02", "--json", "run", "--sudo",
              "--become-user", "nobody", "--", "cat")  # fmt: skip
    assert res.code == 0, res.stdout
    db = next(Path(tmp_path).rglob("agentctl.db"))
    stored = sqlite3.connect(db).execute("select stdout from run_results").fetchall()
    assert "hunter2" not in res.stdout, "sudo password in the JSON output"
    assert not any("hunter2" in (row[0] or "") for row in stored), "sudo password in the store"


# --- F12: a Ctrl-C landing outside wait() loses the batch's outcomes --------------------------


class _Stub:
    def __init__(self, host: str) -> None:
        self.host = host

    def run(self, argv, **_kw):
        return CommandResult(self.host, "x", 0, "", "", 0.0)

    def close(self) -> None:
        pass


def test_interrupt_during_on_done_keeps_finished_outcomes():
    """SIGINT/SIGTERM (main.py turns SIGTERM into KeyboardInterrupt) raised while the main
    thread is in on_done (a store write) escapes _run_batch; the outcomes it had gathered are
    dropped and FanOut.run re-reports those hosts as 'skipped' (overwriting the 'ok' row in the
    store), and hosts that were hung up on are 'skipped' too, so --rerun-failed misses them."""
    calls = []

    def on_done(outcome) -> None:
        calls.append((outcome.host, outcome.status))
        if len(calls) == 1:
            raise KeyboardInterrupt

    def task(conn, host):
        if host != "fast":
            time.sleep(0.5)
        return TaskOutput(Status.OK, conn.run(["true"]))

    fan = FanOut(_Stub, task, name_of=str, on_done=on_done, options=FanoutOptions(forks=4))
    recap = fan.run(["fast", "slow1", "slow2"])
    status = {o.host: o.status for o in recap.outcomes}
    assert status["fast"] is Status.OK, status  # it ran and was already recorded as ok
    assert recap.interrupted


# --- F13: Ctrl-C cannot interrupt a handshake in progress -------------------------------------


def test_cancel_interrupts_connects_in_progress(tmp_path):
    """Only connected sessions are in FanOut._live; a thread inside connect_chain (TCP up,
    waiting for a banner, kex, auth) is not, so cancel() waits up to banner_timeout (15 s by
    default, more with auth) and pool.shutdown(wait=True) blocks even on a second Ctrl-C.

    The SSH half is in ctl/ssh/transport.py (Aborter, tested in tests/ssh/test_ssh_hardening.py);
    this passes once SSHConnector takes `aborter=` and hands it to connect_chain, and the
    fan-out's cancel calls the aborter (FanOut(on_cancel=...); Connections.abort in the CLI)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    port = srv.getsockname()[1]
    kh = tmp_path / "kh"
    kh.write_text("")
    # no banner ever comes, and its timeout outlasts the test's: only cancel() can end this
    opts = ConnectOptions(use_agent=False, look_for_keys=False, banner_timeout=3600)
    aborter = Aborter()

    def connect(_h):
        target = Target("mute", "127.0.0.1", port, "root")
        return SSHConnector(target, KnownHosts(kh), opts, aborter=aborter)

    fan = FanOut(
        connect,
        lambda c, h: TaskOutput(Status.OK),
        name_of=str,
        options=FanoutOptions(connect_retries=0),
        on_cancel=aborter.abort,
    )
    threading.Timer(1.0, fan.cancel).start()
    try:
        recap = fan.run(["m1", "m2"])
    finally:
        srv.close()
    # Cut short by the aborter, not by some other failure (e.g. a TypeError in connect).
    messages = [o.message for o in recap.outcomes if o.status is not Status.SKIPPED]
    assert all(m == "aborted" for m in messages), messages


# --- F14: --max-fail-percent on the last (or only) batch turns exit 4 into exit 3 -------------


def test_max_fail_percent_on_last_batch_does_not_turn_unreachable_into_failed():
    """After the last batch nothing is left to stop, yet recap.aborted is set, the CLI prints
    'stopped: ... remaining hosts skipped' and the exit code becomes 3 although every bad host
    was merely unreachable (README: 4)."""

    def connect(h):
        raise UnreachableError("down", host=h)

    fan = FanOut(
        connect,
        lambda c, h: TaskOutput(Status.OK),
        name_of=str,
        options=FanoutOptions(max_fail_percent=10, connect_retries=0),
    )
    recap = fan.run(["a", "b"])
    assert int(recap.exit_code) == 4
    assert not recap.aborted


# --- F16: facts silently lose families to the *storage* output cap ---------------------------


def test_facts_are_parsed_before_the_storage_cap(cli, tmp_path, monkeypatch):
    """gather_facts parses conn.run_shell().stdout, which the connector already cut to
    output_cap_bytes (64 KiB default, head+tail). The facts script prints ~200 B per CPU thread
    (cpuinfo + topology): a 384-thread GPU server alone exceeds 64 KiB and memory/disks/nics in
    the middle come back as 'no output (script cut off)'. Shown here with a smaller cap."""
    monkeypatch.setenv("AGENTCTL_OUTPUT_CAP_BYTES", "2048")
    inv = tmp_path / "inv.yml"
    inv.write_text(yaml.safe_dump({"all": {"hosts": {"me": {"ansible_connection": "local"}}}}))
    res = cli("-i", str(inv), "--json", "facts")
    host = res.json["data"]["hosts"][0]
    assert "cut off" not in (host.get("message") or ""), host.get("message")


# --- F17: the local connector's deadline is not a deadline ------------------------------------


def test_local_deadline_holds_with_an_escaped_child(tmp_path):
    """After TimeoutExpired, killpg() misses a child that left the process group (setsid,
    daemons) but still holds the pipes, and the second proc.communicate() has no timeout:
    run() blocks until that child exits (forever for a daemon)."""
    conn = LocalConnector()
    pid_file = tmp_path / "escaped.pid"
    # the escaped child outlives the test's timeout: run() returning at all is the behaviour
    escape = f"setsid sh -c 'echo $$ > \"$1\"; exec sleep 600' sh {pid_file} & wait"
    try:
        with pytest.raises(CommandTimeout):
            conn.run(["sh", "-c", escape], timeout=1)
    finally:  # it left the group on purpose: stop it here
        if pid_file.exists() and pid_file.read_text().strip():
            escaped = proctable.read(int(pid_file.read_text()))
            if escaped is not None:
                proctable.stop([escaped], grace_s=1, spare_groups={os.getpgrp()})
