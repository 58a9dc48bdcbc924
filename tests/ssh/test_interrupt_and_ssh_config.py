"""Ctrl-C during a fan-out, and ~/.ssh/config resolution, against real sshd nodes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import children
import jsonschema
import pytest
import yaml

from agentctl.ctl.envelope import ENVELOPE_SCHEMA

pytestmark = pytest.mark.timeout(120)


def _env(tmp_path: Path, known_hosts: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENTCTL_")}
    env.update(
        XDG_DATA_HOME=str(tmp_path / "data"),
        XDG_STATE_HOME=str(tmp_path / "state"),
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        AGENTCTL_KNOWN_HOSTS=str(known_hosts),
        AGENTCTL_USE_SSH_CONFIG="false",
        AGENTCTL_LOOK_FOR_KEYS="false",
        AGENTCTL_USE_AGENT="false",
    )
    return env


def _wait_for_sleeps(naptime: str, n: int, limit: float = 60.0) -> None:
    """Until `n` remote `sleep NAPTIME` commands run: a loaded machine may take seconds to start the
    CLI, and a Ctrl-C before the fan-out is a different test."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        running = 0
        for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
            try:
                running += cmdline.read_bytes() == f"sleep\x00{naptime}\x00".encode()
            except OSError:  # the process ended meanwhile
                continue
        if running >= n:
            time.sleep(0.3)  # let the rest of the first batch settle into the same state
            return
        time.sleep(0.1)
    raise AssertionError(f"{n} remote sleeps never started")


def test_ctrl_c_stops_the_fan_out_cleanly_with_exit_130(fleet, tmp_path):
    inv = fleet.write_inventory(tmp_path / "inv.yml")
    env = _env(tmp_path, fleet.write_known_hosts(tmp_path / "kh"))
    argv = [sys.executable, "-m", "agentctl.ctl", "-i", str(inv), "--limit", "node1*", "--json"]
    naptime = f"60.{os.getpid()}{int(time.time() * 1000) % 100000}"  # this run's sleeps only
    # children.start: SIGINT at its default in the CLI even if pytest was started with it
    # ignored (nohup, a background job), and the CLI's group stopped if the test fails
    with children.running(
        [*argv, "run", "--forks", "4", "--", "sleep", naptime],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        _wait_for_sleeps(naptime, 4)  # start-up, connections, the first four sleeps running
        proc.send_signal(signal.SIGINT)
        # the sleeps last a minute: returning at all means Ctrl-C cut them short
        out, err = proc.communicate(timeout=50)
    assert proc.returncode == 130, err
    doc = json.loads(out)
    jsonschema.validate(doc, ENVELOPE_SCHEMA)
    assert doc["ok"] is False
    assert doc["data"]["interrupted"] is True
    statuses = [h["status"] for h in doc["data"]["hosts"]]
    assert len(statuses) == 10  # every selected host is accounted for
    assert statuses.count("failed") == 4  # hung up on while running
    assert statuses.count("skipped") == 6  # never started
    # The run is stored as interrupted, with the per-host results that were known.
    shown = subprocess.run(
        [*argv, "runs", "show", str(doc["data"]["run_id"])],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    run = json.loads(shown.stdout)["data"]
    assert run["status"] == "interrupted"
    assert len(run["results"]) == 10


def test_ssh_config_alias_hostname_port_user_identityfile(cli, fleet, tmp_path, monkeypatch):
    node = fleet.node("node11")
    config = tmp_path / "ssh_config"
    config.write_text(
        "Include ~/.ssh/config.d/*\n"
        "Host gpu-alias\n"
        f"    HostName {node.address}\n"
        f"    Port {node.port}\n"
        f"    User {fleet.user}\n"
        f"    IdentityFile {fleet.client_key}\n"
    )
    inv = tmp_path / "inv.yml"
    inv.write_text(yaml.safe_dump({"all": {"hosts": {"gpu-alias": None}}}))
    monkeypatch.setenv("AGENTCTL_USE_SSH_CONFIG", "true")
    monkeypatch.setenv("AGENTCTL_SSH_CONFIG", str(config))
    monkeypatch.setenv("AGENTCTL_KNOWN_HOSTS", str(fleet.write_known_hosts(tmp_path / "kh")))
    res = cli("-i", str(inv), "run", "--", "echo", "via-config")
    assert res.code == 0, res.stdout + res.stderr
    assert "via-config" in res.stdout
    assert "'Include' is not followed" in res.stderr


def test_ssh_config_proxyjump_is_followed(cli, small_fleet, tmp_path, monkeypatch):
    jump, target = small_fleet.nodes[0], small_fleet.nodes[1]
    config = tmp_path / "ssh_config"
    config.write_text(
        "Host bastion\n"
        f"    HostName {jump.address}\n    Port {jump.port}\n"
        f"    IdentityFile {small_fleet.client_key}\n"
        "Host inner\n"
        f"    HostName {target.address}\n    Port {target.port}\n"
        f"    IdentityFile {small_fleet.client_key}\n    ProxyJump bastion\n"
    )
    inv = tmp_path / "inv.yml"
    inv.write_text(yaml.safe_dump({"all": {"hosts": {"inner": None}}}))
    monkeypatch.setenv("AGENTCTL_USE_SSH_CONFIG", "true")
    monkeypatch.setenv("AGENTCTL_SSH_CONFIG", str(config))
    monkeypatch.setenv("AGENTCTL_KNOWN_HOSTS", str(tmp_path / "kh"))
    # Trust goes hop by hop: the bastion first, then the host behind it.
    res = cli("-i", str(inv), "--json", "hosts", "trust", "--yes")
    assert res.code == 0, res.stdout + res.stderr
    lines = sorted((tmp_path / "kh").read_text().splitlines())
    assert lines == sorted([jump.host_key_line(), target.host_key_line()])
    res = cli("-i", str(inv), "--json", "run", "--", "true")
    assert res.code == 0
    assert f"target {target.address} port {target.port}" in jump.log_file.read_text()
