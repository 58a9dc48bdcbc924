"""The control-plane core against real OpenSSH sshd processes on loopback: no mocked transport."""

from __future__ import annotations

import socket
from pathlib import Path

import jsonschema
import pytest
import yaml

from agentctl.ctl.envelope import ENVELOPE_SCHEMA
from agentctl.ctl.fleet import LocalFleet

pytestmark = pytest.mark.timeout(120)


def write_inventory(
    path: Path, fleet: LocalFleet, *, extra_hosts: dict | None = None, host_vars: dict | None = None
) -> Path:
    doc = fleet.inventory()
    hosts = doc["all"]["hosts"]  # type: ignore[index]
    for name, values in (host_vars or {}).items():
        hosts[name].update(values)
    hosts.update(extra_hosts or {})
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def trusted(fleet: LocalFleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Known hosts written from the nodes' key files (the out-of-band path)."""
    kh = fleet.write_known_hosts(tmp_path / "known_hosts")
    monkeypatch.setenv("AGENTCTL_KNOWN_HOSTS", str(kh))
    return kh


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unknown_host_key_is_refused_with_exit_5(cli, fleet, tmp_path, monkeypatch):
    monkeypatch.setenv("AGENTCTL_KNOWN_HOSTS", str(tmp_path / "empty_known_hosts"))
    inv = write_inventory(tmp_path / "inv.yml", fleet)
    res = cli("-i", str(inv), "--limit", "node01", "--json", "run", "--", "true")
    assert res.code == 5
    doc = res.json
    jsonschema.validate(doc, ENVELOPE_SCHEMA)
    assert doc["ok"] is False
    assert doc["data"]["hosts"][0]["error"]["kind"] == "host_key"
    assert "unknown host key" in doc["data"]["hosts"][0]["error"]["message"]
    assert not (tmp_path / "empty_known_hosts").exists()  # nothing recorded behind our back


def test_trust_flow_records_only_after_confirmation(cli, small_fleet, tmp_path, monkeypatch):
    kh = tmp_path / "kh"
    monkeypatch.setenv("AGENTCTL_KNOWN_HOSTS", str(kh))
    inv = write_inventory(tmp_path / "inv.yml", small_fleet)
    # No terminal and no --yes: show the fingerprints, record nothing, exit 2.
    res = cli("-i", str(inv), "hosts", "trust")
    assert res.code == 2
    assert "SHA256:" in res.stdout
    assert not kh.exists() or kh.read_text() == ""
    res = cli("-i", str(inv), "--json", "hosts", "trust", "--yes")
    assert res.code == 0, res.stdout + res.stderr
    states = {r["host"]: r["state"] for r in res.json["data"]["hosts"]}
    assert states == {"edge01": "recorded", "edge02": "recorded", "edge03": "recorded"}
    # What was recorded matches the keys on disk, byte for byte.
    assert sorted(kh.read_text().splitlines()) == sorted(
        n.host_key_line() for n in small_fleet.nodes
    )
    res = cli("-i", str(inv), "--json", "hosts", "trust", "--yes")
    assert {r["state"] for r in res.json["data"]["hosts"]} == {"trusted"}
    res = cli("-i", str(inv), "--json", "run", "--", "echo", "hello")
    assert res.code == 0
    assert {h["stdout"] for h in res.json["data"]["hosts"]} == {"hello\n"}


def test_changed_host_key_is_refused_loudly(cli, small_fleet, tmp_path, monkeypatch):
    kh = trusted(small_fleet, tmp_path, monkeypatch)
    before = kh.read_text()
    inv = write_inventory(tmp_path / "inv.yml", small_fleet)
    small_fleet.restart_node(small_fleet.nodes[1], new_host_key=True)
    res = cli("-i", str(inv), "run", "--", "true")
    assert res.code == 5
    assert "CHANGED" in res.stdout + res.stderr
    # Trust never replaces a changed key, even with --yes.
    res = cli("-i", str(inv), "--limit", "edge02", "hosts", "trust", "--yes")
    assert res.code == 5
    assert kh.read_text() == before


def test_proxyjump_goes_through_the_jump_host(cli, small_fleet, tmp_path, monkeypatch):
    trusted(small_fleet, tmp_path, monkeypatch)
    jump, target = small_fleet.nodes[0], small_fleet.nodes[2]
    inv = write_inventory(
        tmp_path / "inv.yml",
        small_fleet,
        host_vars={"edge03": {"ansible_ssh_common_args": "-o ProxyJump=edge01"}},
    )
    res = cli(
        "-i",
        str(inv),
        "--limit",
        "edge03",
        "--json",
        "run",
        "--",
        "sh",
        "-c",
        "echo $SSH_CONNECTION",
    )
    assert res.code == 0, res.stdout + res.stderr
    # The jump sshd (DEBUG1) logged a direct-tcpip request to the target's port.
    log = jump.log_file.read_text()
    assert f"target {target.address} port {target.port}" in log
    # With the jump host down the target is unreachable, although its own sshd is up.
    small_fleet.stop_node(jump)
    res = cli("-i", str(inv), "--limit", "edge03", "--json", "run", "--", "true")
    assert res.code == 4
    assert res.json["data"]["hosts"][0]["status"] == "unreachable"


def test_unreachable_host_exit_4_and_retried(cli, fleet, tmp_path, monkeypatch):
    trusted(fleet, tmp_path, monkeypatch)
    monkeypatch.setenv("AGENTCTL_CONNECT_RETRIES", "2")
    inv = write_inventory(
        tmp_path / "inv.yml",
        fleet,
        extra_hosts={"ghost": {"ansible_host": "127.0.0.1", "ansible_port": closed_port()}},
    )
    res = cli("-i", str(inv), "--limit", "ghost", "--json", "run", "--", "true")
    assert res.code == 4
    host = res.json["data"]["hosts"][0]
    assert host["status"] == "unreachable"
    assert host["attempts"] == 3
    assert "connection refused" in host["error"]["message"]


def test_unauthorised_key_gives_exit_5(cli, fleet, tmp_path, monkeypatch):
    trusted(fleet, tmp_path, monkeypatch)
    other = tmp_path / "other_key"
    import subprocess

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    inv = write_inventory(
        tmp_path / "inv.yml",
        fleet,
        host_vars={"node03": {"ansible_ssh_private_key_file": str(other)}},
    )
    res = cli("-i", str(inv), "--limit", "node03", "--json", "run", "--", "true")
    assert res.code == 5
    assert res.json["data"]["hosts"][0]["error"]["kind"] == "auth"


def test_command_outliving_its_deadline_fails_fast(cli, fleet, tmp_path, monkeypatch):
    """The command sleeps longer than the module's test timeout: returning at all is the
    behaviour (no stopwatch: a loaded machine is slow, never 300 s slow)."""
    trusted(fleet, tmp_path, monkeypatch)
    inv = write_inventory(tmp_path / "inv.yml", fleet)
    res = cli(
        "-i", str(inv), "--limit", "node04", "--json", "run", "--timeout", "1", "--", "sleep", "300"
    )
    assert res.code == 3
    host = res.json["data"]["hosts"][0]
    assert host["status"] == "failed"
    assert host["error"]["kind"] == "timeout"


def test_sudo_runs_as_the_become_user(cli, fleet, tmp_path, monkeypatch):
    trusted(fleet, tmp_path, monkeypatch)
    inv = write_inventory(tmp_path / "inv.yml", fleet)
    res = cli(
        "-i",
        str(inv),
        "--limit",
        "node05",
        "--json",
        "run",
        "--sudo",
        "--become-user",
        "nobody",
        "--",
        "id",
        "-un",
    )
    assert res.code == 0, res.stdout
    assert res.json["data"]["hosts"][0]["stdout"] == "nobody\n"


HOSTILE = [
    "; rm -rf /",
    "$(touch {canary})",
    "`touch {canary}`",
    "a'b\"c",
    "line1\nline2",
    "--help",
    "*",
    "&& touch {canary}",
]


def test_hostile_values_reach_the_remote_side_as_literal_data(cli, fleet, tmp_path, monkeypatch):
    trusted(fleet, tmp_path, monkeypatch)
    canary = tmp_path / "pwned"
    values = [v.format(canary=canary) for v in HOSTILE]
    inv = write_inventory(
        tmp_path / "inv.yml",
        fleet,
        host_vars={"node06": {"ansible_become_user": f"nobody; touch {canary}"}},
    )
    res = cli(
        "-i", str(inv), "--limit", "node07", "--json", "run", "--", "printf", "%s\\0", *values
    )
    assert res.code == 0, res.stdout
    assert res.json["data"]["hosts"][0]["stdout"].split("\0")[:-1] == values
    # A hostile become user is passed to sudo as one literal (unknown) user name.
    res = cli("-i", str(inv), "--limit", "node06", "--json", "run", "--sudo", "--", "true")
    assert res.code == 3
    assert "unknown user" in res.json["data"]["hosts"][0]["stderr"]
    assert not canary.exists()


def test_partial_failure_exit_3_then_rerun_failed(cli, fleet, tmp_path, monkeypatch):
    trusted(fleet, tmp_path, monkeypatch)
    inv = write_inventory(tmp_path / "inv.yml", fleet)
    bad = {fleet.node("node02").port, fleet.node("node09").port}
    script = 'case "$SSH_CONNECTION" in ' + " | ".join(f"*' {p}'" for p in bad) + ") exit 7;; esac"
    res = cli("-i", str(inv), "--limit", "node0*", "--json", "run", "--", "sh", "-c", script)
    assert res.code == 3
    doc = res.json
    failed = {h["host"] for h in doc["data"]["hosts"] if h["status"] == "failed"}
    assert failed == {"node02", "node09"}
    assert doc["data"]["recap"]["ok"] == 7
    run_id = doc["data"]["run_id"]
    res = cli("-i", str(inv), "--json", "run", "--rerun-failed", str(run_id))
    assert {h["host"] for h in res.json["data"]["hosts"]} == {"node02", "node09"}
    assert res.json["data"]["recap"]["failed"] == 2  # same command, same hosts
    res = cli("-i", str(inv), "--json", "runs", "show", str(run_id))
    assert res.code == 0
    jsonschema.validate(res.json, ENVELOPE_SCHEMA)
    assert {r["host"] for r in res.json["data"]["results"] if r["status"] == "failed"} == failed


def test_fan_out_to_24_hosts_with_batches_and_json(cli, fleet, tmp_path, monkeypatch):
    trusted(fleet, tmp_path, monkeypatch)
    inv = write_inventory(tmp_path / "inv.yml", fleet)
    res = cli(
        "-i",
        str(inv),
        "--json",
        "run",
        "--forks",
        "8",
        "--batch",
        "1,25%,100%",
        "--",
        "uname",
        "-s",
    )
    assert res.code == 0, res.stderr
    doc = res.json
    jsonschema.validate(doc, ENVELOPE_SCHEMA)
    assert doc["meta"]["schema"] == "agentctl.run/1"
    assert doc["data"]["recap"]["ok"] == 24
    assert [h["host"] for h in doc["data"]["hosts"]] == [n.name for n in fleet.nodes]
    assert {h["stdout"] for h in doc["data"]["hosts"]} == {"Linux\n"}


def test_max_fail_percent_stops_before_the_next_batch(cli, fleet, tmp_path, monkeypatch):
    trusted(fleet, tmp_path, monkeypatch)
    inv = write_inventory(tmp_path / "inv.yml", fleet)
    res = cli(
        "-i",
        str(inv),
        "--limit",
        "node1*",
        "--json",
        "run",
        "--batch",
        "2",
        "--max-fail-percent",
        "0",
        "--",
        "false",
    )
    assert res.code == 3
    recap = res.json["data"]["recap"]
    assert recap["failed"] == 2 and recap["skipped"] == 8
    assert res.json["data"]["aborted"] is True


def test_facts_over_ssh_are_stored_and_listed(cli, fleet, tmp_path, monkeypatch):
    trusted(fleet, tmp_path, monkeypatch)
    inv = write_inventory(tmp_path / "inv.yml", fleet)
    res = cli("-i", str(inv), "--limit", "node2*", "--json", "facts")
    assert res.code == 0, res.stderr
    hosts = res.json["data"]["hosts"]
    assert len(hosts) == 5 and all(h["status"] == "ok" for h in hosts)
    res = cli("-i", str(inv), "--json", "nodes")
    nodes = {n["name"]: n for n in res.json["data"]["nodes"]}
    assert set(nodes) == {"node20", "node21", "node22", "node23", "node24"}
    assert all(n["kernel"] and n["gpu_count"] == 0 for n in nodes.values())


def test_connector_sftp_roundtrip_verifies_checksums(fleet, tmp_path):
    from agentctl.ctl.ssh import KnownHosts, SSHConnector, Target

    kh = KnownHosts(fleet.write_known_hosts(tmp_path / "kh"))
    node = fleet.node("node08")
    conn = SSHConnector(
        Target(node.name, node.address, node.port, fleet.user, (str(fleet.client_key),)), kh
    )
    try:
        src = tmp_path / "blob"
        src.write_bytes(bytes(range(256)) * 4096)
        remote = str(tmp_path / "remote-blob")
        digest = conn.put(src, remote, mode=0o640)
        assert Path(remote).read_bytes() == src.read_bytes()
        assert oct(Path(remote).stat().st_mode & 0o777) == "0o640"
        back = tmp_path / "back"
        assert conn.get(remote, back) == digest
        assert back.read_bytes() == src.read_bytes()
    finally:
        conn.close()
