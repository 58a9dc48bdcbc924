"""`agentctl demo` end to end, as a newcomer runs it, but non-interactive and with --json."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import children
import jsonschema
import pytest

from agentctl.ctl.demo import stop_leftovers
from agentctl.ctl.envelope import ENVELOPE_SCHEMA

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def demo_env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A private state dir for the demo; afterwards, whatever happened to the test, nothing
    the demo started is left running (services, then sshd nodes)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTCTL_")}
    env.update(XDG_STATE_HOME=str(tmp_path / "state"), XDG_DATA_HOME=str(tmp_path / "data"))
    yield env
    stop_leftovers(tmp_path / "state" / "agentctl" / "demo")


def run_demo(
    args: list[str], env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    """The demo as a newcomer runs it, in its own process group; past `timeout` the group gets
    SIGTERM (which the demo turns into a clean stop), and only then SIGKILL."""
    try:
        return children.run([sys.executable, "-m", "agentctl.ctl", *args], env=env,
                            stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            timeout=timeout)  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"demo {args} ran past {timeout}s: {str(exc.stderr)[-3000:]}")


def test_demo_starts_trusts_gathers_stores_and_stops(tmp_path, demo_env):
    env = demo_env
    proc = run_demo(["--json", "demo", "--nodes", "3"], env, timeout=400)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    serving = doc["data"]["serving"]
    assert serving["ok"] is True
    assert serving["provision"]["recap"]["failed"] == 0
    traffic = serving["traffic"]
    assert len(traffic) == 12 and all(t["status"] == 200 for t in traffic)
    # every turn after a session's first finds its history in the prefix cache
    assert all(t["cached_tokens"] > 0 for t in traffic if t["turn"] > 0)
    replay = serving["replay"]  # real Claude Code conversations, live, kv against round-robin
    assert replay["ok"] is True and set(replay["policies"]) == {"kv", "round-robin"}
    assert all(p["requests"] > 0 and 0 < p["hit_rate"] <= 1 for p in replay["policies"].values())
    collected = serving["collect"]
    assert collected["ok"] and sum(collected["samples"].values()) > 0
    assert any(rate and rate > 0 for rate in collected["kv_hit_rate"].values())
    router = serving["router"].removeprefix("http://").split(":")
    with pytest.raises(OSError), socket.create_connection((router[0], int(router[1])), timeout=1):
        pass  # the demo stopped what it deployed
    jsonschema.validate(doc, ENVELOPE_SCHEMA)
    data = doc["data"]
    assert data["run"]["recap"]["ok"] == len(data["nodes"])
    if data["mode"] == "sshd":
        assert [n["name"] for n in data["nodes"]] == ["node01", "node02", "node03"]
        assert data["nodes"][0]["roles"] == ["router"]
        # Keys were recorded after an out-of-band check, three of them.
        known = (tmp_path / "state" / "agentctl" / "demo" / "known_hosts").read_text()
        assert len(known.splitlines()) == 3
        # Ctrl-C-free exit still stops every sshd it started.
        for node in data["nodes"]:
            with (
                pytest.raises(OSError),
                socket.create_connection((node["address"], node["port"]), timeout=1),
            ):
                pass
    assert all(n["kernel"] for n in data["nodes"])
    # diagnostics: L1 judged every node (GPU checks skip here), a reboot-cause report
    diag = data["diagnostics"]
    assert set(diag["l1"]) == {n["name"] for n in data["nodes"]}
    assert set(diag["l1"].values()) <= {"pass", "warn", "fail"}
    assert diag["reboot_cause"]["reason_code"] and "missing_sources" in diag["reboot_cause"]
    # an ECS export that verifies
    for kind in ("events", "inventory"):
        exported = data["export"][kind]
        assert exported["verified"] is True
    assert data["export"]["inventory"]["count"] == len(data["nodes"])
    # the dashboard was served for the demo's store, its one-time login worked, and it stopped
    board = data["dashboard"]
    assert board["checked"] is True and board["user"] == "demo"
    assert "password" not in json.dumps(board)
    host, port = board["url"].removeprefix("http://").split(":")
    with pytest.raises(OSError), socket.create_connection((host, int(port)), timeout=1):
        pass
    # The human run prints the fleet table.
    human = run_demo(["demo", "--nodes", "2", "--no-serve"], env, timeout=170)
    assert human.returncode == 0, human.stderr
    assert "Fleet" in human.stdout and "node02" in human.stdout
    # every demo ends with the lines that point the normal commands at its store, unwrapped
    export = f"export AGENTCTL_DATABASE_URL=sqlite:///{tmp_path}/state/agentctl/demo/agentctl.db"
    assert any(line.strip() == export for line in human.stderr.splitlines())


def test_ctrl_c_stops_everything_the_demo_started(tmp_path, demo_env):
    """`demo --keep` holds the fleet, the serving stack and the dashboard until Ctrl-C; then
    every port it opened is closed and it exits 130."""
    import re
    import time

    env = {**demo_env, "NO_COLOR": "1"}
    # SIGINT at its default in the child, however pytest was started (children.start)
    proc = children.start(
        [sys.executable, "-m", "agentctl.ctl", "demo", "--nodes", "2", "--keep", "--no-replay"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        seen = []
        deadline = time.monotonic() + 300
        assert proc.stdout is not None
        for line in proc.stdout:
            seen.append(line)
            if "Ctrl-C stops it" in line or time.monotonic() > deadline:
                break
        text = "".join(seen)
        assert "Ctrl-C stops it" in text, text[-3000:]
        # the dashboard's and the router's URLs, each alone on its line (copyable)
        urls = re.findall(r"^  (http://[\d.]+:\d+)/?$", text, re.M)
        assert len(urls) == 2, text[-3000:]
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        children.stop(proc, grace_s=60)
    assert proc.returncode == 130, rest[-2000:]
    for url in urls:
        host, port = url.removeprefix("http://").split(":")
        with pytest.raises(OSError), socket.create_connection((host, int(port)), timeout=1):
            pass


def test_two_demo_directories_never_share_an_address_or_a_port(tmp_path):
    """Two demos at once (or a demo beside the test suite): each directory gets its own
    loopback block (never 127.0.0.x, the suite's) and ports probed free on it."""
    import yaml

    from agentctl.ctl.demo import start_demo_fleet

    fleets = []
    try:
        for name in ("a", "b"):
            fleets.append(start_demo_fleet(tmp_path / name, 2))
        listeners: set[tuple[str, int]] = set()
        for demo in fleets:
            doc = yaml.safe_load(demo.inventory_path.read_text())
            for hv in doc["all"]["hosts"].values():
                address = hv["ansible_host"]
                assert not address.startswith("127.0.0.") or demo.mode == "local"
                ports = [hv["agentctl_router_port"]]
                ports += [hv["agentctl_worker_base_port"] + i for i in range(2)]
                ports += [hv["agentctl_events_base_port"] + i for i in range(4)]
                if demo.mode == "sshd":
                    ports.append(hv["ansible_port"])
                for port in ports:
                    assert (address, port) not in listeners
                    listeners.add((address, port))
        if all(d.mode == "sshd" for d in fleets):
            first = {n.address for n in fleets[0].fleet.nodes}  # type: ignore[union-attr]
            assert first.isdisjoint(n.address for n in fleets[1].fleet.nodes)  # type: ignore[union-attr]
    finally:
        for demo in fleets:
            demo.stop()


def test_a_demo_stops_what_a_killed_demo_left_in_its_directory(tmp_path):
    """A demo killed with SIGKILL cannot clean up; the next one in the same directory stops
    the sshd nodes the first left behind (and their services, when it had deployed any)."""
    from agentctl.ctl.demo import start_demo_fleet
    from agentctl.ctl.fleet import find_sshd

    if find_sshd() is None:
        pytest.skip("sshd not installed")
    first = start_demo_fleet(tmp_path / "d", 1)
    assert first.fleet is not None
    node = first.fleet.nodes[0]
    orphans = [n.process for n in first.fleet.nodes]
    for n in first.fleet.nodes:  # forget them, as a killed process would
        n.process = None
    second = start_demo_fleet(tmp_path / "d", 1)
    try:
        for proc in orphans:  # stopped by the second demo (reaped here: they are our children)
            assert proc is not None and proc.wait(timeout=10) is not None
        assert any("sshd node01" in note for note in second.notes), second.notes
        with pytest.raises(OSError), socket.create_connection((node.address, node.port), timeout=1):
            pass
    finally:
        second.stop()
