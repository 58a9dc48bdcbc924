"""Review findings in the SSH layer, demonstrated against real sshd on loopback.

Regression tests for findings of a code review (F-numbers); each failed before its fix.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import children
import proctable
import pytest

from agentctl.ctl.errors import AgentctlError
from agentctl.ctl.fanout import FanOut, Status, TaskOutput
from agentctl.ctl.ssh import ConnectOptions, KnownHosts, SSHConnector, Target

pytestmark = pytest.mark.timeout(120)

OPTS = ConnectOptions(use_agent=False, look_for_keys=False, connect_timeout=3)


def _connect(fleet, node, known_hosts: Path, **kw) -> SSHConnector:
    target = Target(node.name, node.address, node.port, fleet.user, (str(fleet.client_key),))
    return SSHConnector(target, KnownHosts(known_hosts), OPTS, **kw)


@pytest.fixture
def conn(small_fleet, tmp_path):
    kh = small_fleet.write_known_hosts(tmp_path / "kh")
    c = _connect(small_fleet, small_fleet.nodes[1], kh)
    yield c
    c.close()


# --- F2: read loop busy-spins once the remote closed stdout+stderr --------------------------


def test_read_loop_does_not_spin_when_command_closed_its_output(conn):
    """EOF makes the channel's event pipe permanently readable: select() returns at once and the
    loop burns a full core until exit-status arrives (measured: 5 s CPU for `sleep 5`)."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    res = conn.run(["sh", "-c", "exec >&- 2>&-; sleep 3; exit 3"], timeout=30)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert res.exit_status == 3
    assert cpu < 1.0, f"{cpu:.1f}s of CPU spent waiting 3s for a silent command"


# --- F3: output is buffered without bound; the cap is applied only afterwards ------------


def test_output_buffer_is_bounded_while_reading(small_fleet, tmp_path):
    """`out += chan.recv()` grows without limit; cap_output runs after the command ends.
    A chatty command (`yes`, a log cat) makes the control node OOM at fan-out width."""
    kh = small_fleet.write_known_hosts(tmp_path / "kh")
    node = small_fleet.nodes[1]
    script = textwrap.dedent(
        f"""
        import resource
        from pathlib import Path
        from agentctl.ctl.ssh import ConnectOptions, KnownHosts, SSHConnector, Target
        t = Target("n", {node.address!r}, {node.port}, {small_fleet.user!r},
                   ({str(small_fleet.client_key)!r},))
        c = SSHConnector(t, KnownHosts(Path({str(kh)!r})),
                         ConnectOptions(use_agent=False, look_for_keys=False))
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        r = c.run(["head", "-c", "300000000", "/dev/zero"], timeout=100)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((after - before) // 1024, len(r.stdout))
        """
    )
    out = children.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=110, check=True
    ).stdout.split()
    grown_mib, kept = int(out[0]), int(out[1])
    assert kept < 100_000  # only ~64 KiB is kept...
    assert grown_mib < 64, f"...but the client's RSS grew by {grown_mib} MiB to get there"


# --- F4: select() on channel fileno breaks past fd 1023 --------------------------------------


def test_run_works_when_fds_exceed_1024(conn):
    """select.select() raises ValueError for fd >= FD_SETSIZE. default_forks allows
    (RLIMIT_NOFILE-10)/3 hosts, so any fleet of a few hundred hosts on a box with a raised
    nofile limit gets 'internal error' for every host past fd 1023. Use poll/selectors or
    paramiko's own timeouts instead."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 1300:
        pytest.skip("needs RLIMIT_NOFILE >= 1300")
    held = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    try:
        res = conn.run(["echo", "hi"], timeout=10)
    finally:
        for fd in held:
            os.close(fd)
    assert res.stdout == "hi\n"


# --- F5: a lost session mid-command is reported as a command failure (exit 3), not unreachable


def test_session_lost_mid_command_is_unreachable(small_fleet, tmp_path):
    """When the transport dies the channel is closed, the loop breaks on `chan.closed` before
    checking `transport.is_active()`, and recv_exit_status() returns -1: the host is 'failed'
    with exit -1 (run exit 3) instead of 'unreachable' (exit 4)."""
    kh = small_fleet.write_known_hosts(tmp_path / "kh")
    node = small_fleet.nodes[2]

    def kill_session() -> None:
        time.sleep(1.5)
        kids = subprocess.run(
            ["pgrep", "-P", str(node.process.pid)], capture_output=True, text=True
        ).stdout.split()
        for k in kids:
            os.kill(int(k), signal.SIGKILL)

    threading.Thread(target=kill_session, daemon=True).start()

    def task(c, _h):
        r = c.run(["sleep", "10"], timeout=30)
        return TaskOutput(Status.OK if r.ok else Status.FAILED, r)

    recap = FanOut(lambda _h: _connect(small_fleet, node, kh), task, name_of=str).run(["x"])
    o = recap.outcomes[0]
    assert o.status is Status.UNREACHABLE, (o.status, o.result and o.result.exit_status)
    assert int(recap.exit_code) == 4


# --- F6: deadline leaves the remote command running ------------------------------------------


def test_deadline_stops_the_remote_command(conn, small_fleet):
    """After CommandTimeout the channel is closed, but without a pty the remote process is not
    signalled: `sleep` keeps running (as root with --sudo). Wrap the command in
    `timeout -k`, or request a pty / send the 'signal' channel request."""
    marker = f"4242.{os.getpid()}"  # this run's sleep only: another suite may run this test
    with pytest.raises(AgentctlError):
        conn.run(["sleep", marker], timeout=1)

    def remote_sleeps() -> list[proctable.Proc]:
        return [p for p in proctable.snapshot().values() if f"sleep {marker}" in p.cmdline]

    # the remote side ends it asynchronously: wait for that (the sleep itself is 70 minutes)
    left = proctable.wait_gone(remote_sleeps(), timeout_s=30)
    proctable.stop(left, grace_s=1, spare_groups={os.getpgrp()})  # ours, by the marker
    assert not left, "the remote command outlived its deadline"
