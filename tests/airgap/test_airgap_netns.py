"""The issue's air-gapped acceptance test, on a real offline host.

"A test host inside a network namespace whose only link is a veth to the control side (no
route anywhere else), running its own sshd, is provisioned from the bundle alone and then
serves a request through the router."

The node (see netns.py) is a network namespace with one veth to this machine and no other
route; its sshd also runs in a private mount namespace where the control side's bundles and
the local package indexes pip is configured with are covered by empty tmpfs mounts. So the
only way a wheel reaches the node is the way the issue asks for: `agentctl provision --bundle`
verifying the bundle here and uploading it over SSH. The tests prove each of those facts
(no route, public address unreachable, bundle invisible, pip finds nothing) before relying
on them. They need CAP_NET_ADMIN (`ip netns add`) and skip, saying why, without it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import children
import httpx
import pytest
import yaml
from netns import AirgapNode, NetnsUnavailable, ip, local_package_sources

pytestmark = pytest.mark.timeout(600)

HOST = "airgap01"


@pytest.fixture(scope="module")
def control_only(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the bundles live on the control side; the node sees an empty directory here."""
    return tmp_path_factory.mktemp("airgap-control")


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, control_only: Path) -> Iterator[AirgapNode]:
    hide = [control_only, *local_package_sources(sys.executable)]
    offline = AirgapNode(tmp_path_factory.mktemp("airgap-node"), hide=hide)
    try:
        offline.start()
    except NetnsUnavailable as exc:
        pytest.skip(f"cannot make an offline network namespace here: {exc}")
    try:
        yield offline
    finally:
        # the services a deploy started: stopped by their supervisor (it only signals pids),
        # then whatever is left in the namespace is killed by close()
        for root in sorted((offline.directory / "roots").glob("*")):
            py = root / "venv" / "bin" / "python"
            if py.exists():
                children.run(
                    [str(py), "-m", "agentctl.serving", "supervise", "stop", "--all",
                     "--dir", str(root / "state")],
                    capture_output=True, timeout=60, check=False,
                )  # fmt: skip
        offline.close()


@pytest.fixture(scope="module")
def bundle(control_only: Path, node: AirgapNode) -> Path:
    """`agentctl bundle build --tar`: the directory, and BUNDLE.tar beside it."""
    out = control_only / "bundle"
    res = children.run(  # pip downloads in subprocesses: a timeout stops them too
        [sys.executable, "-m", "agentctl.ctl", "bundle", "build", "--out", str(out), "--tar"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if res.returncode != 0 and "pip" in res.stderr and "download" in res.stderr.lower():
        pytest.skip(f"no package index reachable to build the bundle: {res.stderr[-300:]}")
    assert res.returncode == 0, res.stderr
    assert out.with_name("bundle.tar").is_file()
    return out


@pytest.fixture
def known_hosts(
    agentctl_env: Path, node: AirgapNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Path:
    """The node's host key, read from its key file (the trusted, out-of-band path). After
    agentctl_env, which clears every AGENTCTL_ variable."""
    path = tmp_path / "known_hosts"
    path.write_text(node.known_hosts_line())
    monkeypatch.setenv("AGENTCTL_KNOWN_HOSTS", str(path))
    return path


def write_inventory(node: AirgapNode, path: Path, root: Path) -> Path:
    doc = {
        "all": {
            "hosts": {
                HOST: {
                    "ansible_host": node.address,
                    "ansible_port": node.port,
                    "ansible_user": node.user,
                    "ansible_ssh_private_key_file": str(node.client_key),
                    "agentctl_install_root": str(root),
                    "agentctl_roles": ["router", "worker"],
                    "agentctl_time_scale": 0.01,
                    "agentctl_worker_engine": {"capacity_blocks": 2048},
                    "agentctl_health_timeout": 30,
                }
            },
            # no groups: the router's worker list comes from agentctl_roles alone
        }
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def counts(doc: dict[str, Any]) -> dict[str, int]:
    (host,) = doc["data"]["hosts"]
    assert host["host"] == HOST
    result: dict[str, int] = host["data"]["counts"]
    return result


def digests(directory: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.iterdir())
        if p.is_file()
    }


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(lines: str) -> set[str]:
    """`name==version` from a requirements.lock or `pip freeze`, names normalised."""
    out = set()
    for line in lines.splitlines():
        spec = line.split("#")[0].split()
        if spec and "==" in spec[0]:
            name, _, version = spec[0].partition("==")
            out.add(f"{canonical(name)}=={version}")
    return out


def assert_offline(node: AirgapNode, control_only: Path) -> None:
    """The node has one link (the veth), one route (its /30), no way to a public address,
    and cannot read the control side's bundles; sshd really runs in that namespace."""
    assert node.sshd is not None
    here = os.stat(f"/run/netns/{node.netns}").st_ino
    assert os.stat(f"/proc/{node.sshd.pid}/ns/net").st_ino == here, "sshd is not in the netns"
    assert os.stat(f"/proc/{os.getpid()}/ns/net").st_ino != here

    links = ip("-n", node.netns, "-o", "link", "show").stdout.splitlines()
    assert sorted(line.split(":")[1].strip().split("@")[0] for line in links) == [
        f"agac{node.index}n",
        "lo",
    ], links
    routes = ip("netns", "exec", node.netns, "ip", "-4", "route").stdout.strip().splitlines()
    assert len(routes) == 1 and routes[0].startswith(f"{node.subnet} dev agac{node.index}n"), routes
    assert "default" not in ip("netns", "exec", node.netns, "ip", "-6", "route").stdout

    probe = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
        "s.settimeout(10)\n"
        "try:\n"
        "    s.connect(('1.1.1.1', 443))\n"
        "except OSError as exc:\n"
        "    print(exc.errno, exc.strerror)\n"
        "else:\n"
        "    print('connected')\n"
    )
    res = ip("netns", "exec", node.netns, sys.executable, "-c", probe)
    assert res.stdout.strip() == "101 Network is unreachable", res.stdout + res.stderr

    # the shared filesystem is no side channel: the node sees no bundle (and no local index)
    assert any(control_only.iterdir())
    assert node.exec(["ls", "-A", str(control_only)], check=True).stdout == ""
    for hidden in node.hide:
        assert node.exec(["ls", "-A", str(hidden)], check=True).stdout == "", hidden


def test_an_offline_node_is_provisioned_from_the_bundle_alone_and_serves(
    cli: Any, node: AirgapNode, bundle: Path, control_only: Path, known_hosts: Path
) -> None:
    assert_offline(node, control_only)
    root = node.directory / "roots" / "main"
    inv = str(write_inventory(node, node.directory / "inventory.yml", root))

    first = cli("-i", inv, "--json", "provision", "--bundle", str(bundle), "--yes")
    assert first.code == 0, first.stdout + first.stderr
    assert first.json["ok"] is True
    c = counts(first.json)
    assert c["changed"] > 0 and c["failed"] == 0, c

    # the wheels went up unchanged (over SFTP: the node cannot read the control's copy) ...
    assert digests(root / "wheels") == digests(bundle / "wheels")
    # ... and the venv holds agentctl from them, and exactly the lock's pins, nothing else
    venv_py = str(root / "venv" / "bin" / "python")
    res = node.exec(
        [venv_py, "-c",
         "import agentctl.serving.router.app, agentctl.serving.worker.app\n"
         "import importlib.metadata as m, sys\n"
         "print(agentctl.serving.__file__); print(m.version('agentctl')); print(sys.prefix)"],
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    where, version, prefix = res.stdout.split()
    assert prefix == str(root / "venv") and where.startswith(prefix + "/lib/"), res.stdout
    lock = (bundle / "wheels" / "requirements.lock").read_text()
    assert f"agentctl=={version}" in pins(lock)
    frozen = node.exec([venv_py, "-m", "pip", "freeze"], check=True).stdout
    assert pins(frozen) == pins(lock), sorted(pins(frozen) ^ pins(lock))

    # pip on the node has nowhere to get a package from: not the network, not the disk
    fetch = node.exec(
        [venv_py, "-m", "pip", "download", "--no-deps", "--no-cache-dir", "--retries", "0",
         "--timeout", "5", "--dest", str(root / "fetched"), "httpx"],
        timeout=120,
    )  # fmt: skip
    assert fetch.returncode != 0, fetch.stdout
    assert "No matching distribution found for httpx" in fetch.stderr, fetch.stderr
    assert not (root / "fetched").exists() or not any((root / "fetched").iterdir())

    again = cli("-i", inv, "--json", "provision", "--bundle", str(bundle), "--yes")
    assert again.code == 0, again.stdout + again.stderr
    assert counts(again.json)["changed"] == 0, again.json

    dep = cli("-i", inv, "--json", "deploy", "--yes")
    assert dep.code == 0, dep.stdout + dep.stderr
    assert counts(dep.json)["failed"] == 0

    body = {"prompt": "an offline node answers " * 20, "max_tokens": 3}
    with httpx.Client(trust_env=False, timeout=30) as client:  # straight over the veth
        r = client.post(f"http://{node.address}:8080/v1/completions", json=body)
    assert r.status_code == 200, r.text
    assert r.headers["x-agentctl-worker"] == f"{HOST}-w0"
    assert r.json()["choices"], r.text


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_tampered_bundle_installs_nothing(
    cli: Any, node: AirgapNode, bundle: Path, tmp_path: Path, known_hosts: Path
) -> None:
    copy = tmp_path / "tampered"
    shutil.copytree(bundle, copy)
    wheel = min((copy / "wheels").glob("agentctl-*.whl"))
    flip_a_byte(wheel)
    archive = tmp_path / "tampered.tar"
    with tarfile.open(archive, "w") as tar:
        for p in sorted(copy.rglob("*")):
            if p.is_file():
                tar.add(p, arcname=str(p.relative_to(copy)))

    root = node.directory / "roots" / "tampered"
    inv = str(write_inventory(node, tmp_path / "inventory.yml", root))
    logins = node.accepted_logins()
    for given in (copy, archive):
        res = cli("-i", inv, "--json", "provision", "--bundle", str(given), "--yes")
        assert res.code == 6, res.stdout + res.stderr
        doc = res.json
        assert doc["ok"] is False
        messages = " ".join(e["message"] for e in doc["errors"])
        assert f"wheels/{wheel.name}" in messages, doc["errors"]
    # nothing reached the node: no login, no install root, no wheels, no venv
    assert node.accepted_logins() == logins
    assert not (root / "venv").exists() and not (root / "wheels").exists()
    assert not root.exists()

    # the same copy, untampered again, does install: the refusal was the flipped byte's
    flip_a_byte(wheel)
    res = cli("-i", inv, "--json", "provision", "--bundle", str(copy), "--check")
    assert res.code == 0, res.stdout + res.stderr


def test_provision_from_the_bundle_tar(
    cli: Any, node: AirgapNode, bundle: Path, known_hosts: Path, tmp_path: Path
) -> None:
    archive = bundle.with_name("bundle.tar")
    root = node.directory / "roots" / "from-tar"
    inv = str(write_inventory(node, tmp_path / "inventory.yml", root))
    res = cli("-i", inv, "--json", "provision", "--bundle", str(archive), "--yes")
    assert res.code == 0, res.stdout + res.stderr
    assert counts(res.json)["failed"] == 0 and counts(res.json)["changed"] > 0
    assert digests(root / "wheels") == digests(bundle / "wheels")
    ok = node.exec([str(root / "venv" / "bin" / "python"), "-c", "import agentctl.serving.cluster"])
    assert ok.returncode == 0, ok.stderr
