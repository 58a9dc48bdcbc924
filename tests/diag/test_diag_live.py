"""`agentctl diag` against real sshd nodes on loopback: L1 stored and judged (no GPUs here, so
GPU checks skip), an L2 bundle that holds none of the planted secrets and verifies offline, a
full filesystem that leaves nothing behind, reboot-cause live and from the bundle."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentctl.collectors.store import Store
from agentctl.ctl.diag.reboot import CLASSES
from agentctl.ctl.fleet import LocalFleet, find_sshd

pytestmark = pytest.mark.timeout(240)

HF = "hf_Qw8rT5yU2iO9pA3sD6fG1hJ4kL7zX0cV"
ADMIN = "9c1f4e7a2b8d5c3e6f0a1b2c3d4e5f60"
DB_PASS = "s3cr3t-Db-Pass!"
PEM_BODY = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW"
PLANTED = (HF, ADMIN, DB_PASS, PEM_BODY)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFleet]:
    if find_sshd() is None:
        pytest.skip("sshd not installed")
    fl = LocalFleet(tmp_path_factory.mktemp("diag") / "fleet", 2, prefix="dg", first_address=170)
    try:  # start() may fail half-way, with some nodes up
        fl.start()
        yield fl
    finally:
        fl.stop()


def _plant(root: Path) -> None:
    etc = root / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "router.yaml").write_text(f"listen: 127.0.0.1:8000\nadmin_token: {ADMIN}\n")
    (etc / "worker.env").write_text(
        f"HF_TOKEN={HF}\nDATABASE_URL=postgresql+psycopg://agent:{DB_PASS}@db.internal/x\n"
    )
    (etc / "id_ed25519").write_text(
        "-----BEGIN OPENSSH PRIVATE KEY-----\n"
        f"{PEM_BODY}\n"
        "QyNTUxOQAAACDf3n0AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n"
        "-----END OPENSSH PRIVATE KEY-----\n"
    )


def _env(fl: LocalFleet, tmp: Path, mp: pytest.MonkeyPatch, **host_vars: Any) -> str:
    mp.setenv("AGENTCTL_KNOWN_HOSTS", str(fl.write_known_hosts(tmp / "kh")))
    mp.setenv("AGENTCTL_DATABASE_URL", f"sqlite:///{tmp / 'diag.db'}")
    doc: dict[str, Any] = fl.inventory()
    for hv in doc["all"]["hosts"].values():
        hv.update(host_vars)
    path = tmp / "inv.yml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_l1_judges_every_host_skips_gpu_checks_and_stores_results(
    cli: Any, fleet: LocalFleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inv = _env(fleet, tmp_path, monkeypatch)
    res = cli("-i", inv, "--json", "diag", "l1")
    assert res.code in (0, 3), res.stdout + res.stderr  # 3 only if this machine fails a check
    hosts = res.json["data"]["hosts"]
    assert sorted(h["host"] for h in hosts) == ["dg01", "dg02"]
    for h in hosts:
        d = h["data"]
        assert d["schema"] == "agentctl.diag.l1/1"
        by_name = {c["name"]: c for c in d["checks"]}
        for gpu_check in ("gpu_count", "gpu_temperature", "gpu_xid", "nvidia_driver"):
            assert by_name[gpu_check]["verdict"] == "skip", by_name[gpu_check]
        assert by_name["disk_space"]["verdict"] in ("pass", "warn", "fail")
        assert by_name["memory"]["verdict"] != "skip"
        # every probe's status is in the output, missing tools named as such
        assert d["probes"]["nvidia_smi"] in ("missing_tool", "failed", "not_supported")
        assert set(d["probes"].values()) <= {
            "ok", "timeout", "not_supported", "permission_denied", "missing_tool", "failed",
        }  # fmt: skip
        assert (d["verdict"] == "fail") == (h["status"] == "failed")
    with Store.open(f"sqlite:///{tmp_path / 'diag.db'}") as store:
        latest = store.latest_diag("l1")
        assert set(latest) == {"dg01", "dg02"}
        assert latest["dg01"].run_id == res.json["data"]["run_id"]
        failed = {(h["host"], c["name"]) for h in hosts for c in h["data"]["checks"]
                  if c["verdict"] in ("fail", "warn")}  # fmt: skip
        events = {(e.node, e.subject) for e in store.list_events(kinds=["check"])}
        assert events == failed

    human = cli("-i", inv, "diag", "l1", "dg01")
    assert "L1 health" in human.stdout and "gpu_xid" in human.stdout  # one host: its checks too


def test_l1_reports_an_unreachable_host(
    cli: Any, fleet: LocalFleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inv = _env(fleet, tmp_path, monkeypatch)
    doc = yaml.safe_load(Path(inv).read_text())
    doc["all"]["hosts"]["dg02"]["ansible_port"] = 1
    Path(inv).write_text(yaml.safe_dump(doc))
    res = cli("-i", inv, "--json", "diag", "l1")
    assert res.code == 4
    status = {h["host"]: h["status"] for h in res.json["data"]["hosts"]}
    assert status["dg02"] == "unreachable" and status["dg01"] in ("ok", "failed")


def _members(bundle: Path) -> dict[str, bytes]:
    with tarfile.open(bundle) as tar:
        out = {}
        for m in tar.getmembers():
            fh = tar.extractfile(m)
            if fh is not None:
                out[m.name.split("/", 1)[1]] = fh.read()
    return out


def test_l2_bundle_is_complete_verifiable_and_free_of_planted_secrets(
    cli: Any, fleet: LocalFleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "install"
    _plant(root)
    inv = _env(fleet, tmp_path, monkeypatch, agentctl_install_root=str(root))
    out = tmp_path / "bundles"
    res = cli("-i", inv, "--json", "diag", "l2", "dg01", "--out", str(out))
    assert res.code == 0, res.stdout + res.stderr
    info = res.json["data"]["hosts"][0]["data"]["bundle"]
    bundle = Path(info["path"])
    assert bundle.parent == out and sorted(p.name for p in out.iterdir()) == [bundle.name]
    assert hashlib.sha256(bundle.read_bytes()).hexdigest() == info["sha256"]

    files = _members(bundle)
    manifest = json.loads(files["MANIFEST.json"])
    assert manifest["schema"] == "agentctl.l2/1" and manifest["host"] == "dg01"
    for item in manifest["items"]:
        assert hashlib.sha256(files[item["file"]]).hexdigest() == item["sha256"]
        assert {"command", "status", "exit_status", "duration_s", "bytes", "truncated",
                "timed_out"} <= set(item)  # fmt: skip
    names = {i["name"] for i in manifest["items"]}
    assert {"l2_nvidia_smi_q", "l2_lspci_nvidia", "l2_last", "l2_sysctl", "df"} <= names
    assert "l2_agentctl_config" in names
    config = files[f"probes/{'l2_agentctl_config'}.txt"].decode()
    assert "admin_token" in config and "[REDACTED" in config  # the file came, its secret did not
    blob = b"".join(files.values())
    for secret in PLANTED:
        assert secret.encode() not in blob, secret
    assert sum(manifest["redaction"]["counts"].values()) >= len(PLANTED)
    assert json.loads(files["l1.json"])["schema"] == "agentctl.diag.l1/1"

    # offline: reboot-cause from the bundle equals the one inside it
    again = cli("--json", "diag", "reboot-cause", "--bundle", str(bundle))
    assert again.code == 0, again.stderr
    inside = json.loads(files["reboot-cause.json"])
    assert again.json["data"]["reason_code"] == inside["reason_code"]
    assert again.json["data"]["reason_code"] in CLASSES


def test_reboot_cause_live_names_what_it_could_not_read(
    cli: Any, fleet: LocalFleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    inv = _env(fleet, tmp_path, monkeypatch)
    res = cli("-i", inv, "--json", "diag", "reboot-cause", "dg01")
    assert res.code == 0, res.stdout + res.stderr
    rep = res.json["data"]
    assert rep["reason_code"] in CLASSES and rep["confidence"] in ("low", "medium", "high")
    for key in ("summary", "window", "evidence", "contributing", "contradicting_evidence",
                "missing_sources"):  # fmt: skip
        assert key in rep
    with Store.open(f"sqlite:///{tmp_path / 'diag.db'}") as store:
        assert store.latest_diag("reboot_cause")["dg01"].verdict == rep["reason_code"]


def test_a_full_filesystem_fails_the_bundle_cleanly(
    cli: Any, fleet: LocalFleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(small)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount tmpfs here: {mounted.stderr.strip()}")
    try:
        inv = _env(fleet, tmp_path, monkeypatch)
        res = cli("-i", inv, "--json", "diag", "l2", "dg01", "--out", str(small))
        assert res.code == 3, res.stdout + res.stderr
        err = json.dumps(res.json["errors"])
        assert "No space left on device" in err and "nothing was left behind" in err
        assert list(small.iterdir()) == []
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_a_connection_lost_mid_bundle_leaves_nothing(
    cli: Any, fleet: LocalFleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node's python starts answering, then its SSH session dies (killed on the node)."""
    dying = tmp_path / "python-that-loses-the-connection"
    dying.write_text(
        "#!/bin/sh\n"
        'printf \'{"results": [{"name": "df", "status": "ok", "output": "\'\n'
        "p=$PPID\n"
        'while [ "$p" -gt 1 ]; do\n'
        '  case "$(cat /proc/$p/comm)" in sshd*) kill -9 "$p"; exit 0;; esac\n'
        "  p=$(awk '{print $4}' /proc/$p/stat)\n"
        "done\n"
        "exit 1\n"
    )
    dying.chmod(0o755)
    inv = _env(fleet, tmp_path, monkeypatch, agentctl_diag_python=str(dying))
    out = tmp_path / "b"
    res = cli("-i", inv, "--json", "diag", "l2", "dg02", "--out", str(out))
    assert res.code in (3, 4), res.stdout + res.stderr
    assert res.json["errors"], res.json
    assert not out.exists() or list(out.iterdir()) == []


def test_pseudonymized_bundle_keeps_the_mapping_outside(
    cli: Any, fleet: LocalFleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    inv = _env(fleet, tmp_path, monkeypatch)
    out = tmp_path / "p"
    res = cli("-i", inv, "--json", "diag", "l2", "dg01", "--out", str(out), "--pseudonymize")
    assert res.code == 0, res.stdout + res.stderr
    info = res.json["data"]["hosts"][0]["data"]["bundle"]
    mapping = json.loads(Path(info["mapping"]).read_text())
    assert oct(Path(info["mapping"]).stat().st_mode & 0o777) == "0o600"
    files = _members(Path(info["path"]))
    blob = b"".join(files.values())
    assert json.loads(files["MANIFEST.json"])["host"] == mapping["dg01"]
    assert b"dg01" not in blob
    me = socket.gethostname()
    if len(me) >= 4:  # the redactor leaves very short names alone (they would wipe words)
        assert me.encode() not in blob
    assert "127" not in mapping  # an address given as the host is not split into names
    assert all(not n.startswith(("agentctl-l2-dg01", ".")) for n in map(str, files))
