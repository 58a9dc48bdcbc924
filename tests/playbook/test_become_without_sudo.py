"""Provisioning a node that has no sudo, as a fresh Debian image has none (issue 13).

A real sshd node whose sessions see a PATH with every system tool but sudo (`SetEnv PATH`).
Connected as root, the provision playbook's `become: true` tasks run without sudo, as Ansible
skips become to the same user; where sudo is really needed (become another user) the run fails
with an error that names the host and the package to install, in the recap and in --json.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentctl.ctl.fleet import LocalFleet, find_sshd

SYSTEM_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")

pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(os.geteuid() != 0, reason="connects as root, as the demo does there"),
]


def path_without(tmp: Path, hidden: set[str]) -> Path:
    """One directory of links to every program on the system PATH except `hidden`."""
    bindir = tmp / "bin-without-sudo"
    bindir.mkdir()
    for d in SYSTEM_PATH:
        if not os.path.isdir(d) or os.path.islink(d):
            continue
        for name in os.listdir(d):
            target = os.path.join(d, name)
            if name not in hidden and not (bindir / name).exists() and os.access(target, os.X_OK):
                (bindir / name).symlink_to(target)
    return bindir


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalFleet, Path]]:
    if find_sshd() is None:
        pytest.skip("sshd not installed")
    tmp = tmp_path_factory.mktemp("nosudo")
    bindir = path_without(tmp, {"sudo"})
    fl = LocalFleet(tmp / "fleet", 1, prefix="ns", first_address=230,
                    extra_config=f"SetEnv PATH={bindir}")  # fmt: skip
    fl.start()
    try:
        yield fl, tmp
    finally:
        fl.stop()


def inventory(fl: LocalFleet, tmp: Path, name: str, **host_vars: Any) -> str:
    doc: dict[str, Any] = fl.inventory()
    hv = doc["all"]["hosts"]["ns01"]
    hv["agentctl_install_root"] = str(tmp / name)
    hv.update(host_vars)
    path = tmp / f"{name}.yml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return str(path)


#: the provision tasks that need neither a wheelhouse nor packages, all `become: true`
SKIP = ("--skip-tags", "packages", "--skip-tags", "driver", "--skip-tags", "python")


def test_the_node_really_has_no_sudo(cli, node, monkeypatch):
    fl, tmp = node
    monkeypatch.setenv("AGENTCTL_KNOWN_HOSTS", str(fl.write_known_hosts(tmp / "kh")))
    res = cli("-i", inventory(fl, tmp, "probe"), "--json", "run", "--",
              "sh", "-c", "command -v sudo || echo absent; id -un")  # fmt: skip
    assert res.code == 0, res.stdout
    assert res.json["data"]["hosts"][0]["stdout"] == "absent\nroot\n"


def test_become_as_root_runs_without_sudo(cli, node, monkeypatch):
    fl, tmp = node
    monkeypatch.setenv("AGENTCTL_KNOWN_HOSTS", str(fl.write_known_hosts(tmp / "kh")))
    res = cli("-i", inventory(fl, tmp, "root-ok"), "--json", "provision", "--yes", *SKIP)
    assert res.code == 0, res.stdout
    host = res.json["data"]["hosts"][0]
    assert host["data"]["counts"]["failed"] == 0 and host["data"]["counts"]["changed"] > 0
    assert (tmp / "root-ok" / "etc").is_dir() and (tmp / "root-ok" / "state").is_dir()


def test_missing_sudo_where_needed_names_the_host_and_the_fix(cli, node, monkeypatch):
    fl, tmp = node
    monkeypatch.setenv("AGENTCTL_KNOWN_HOSTS", str(fl.write_known_hosts(tmp / "kh")))
    inv = inventory(fl, tmp, "needs-sudo", ansible_become_user="nobody")
    res = cli("-i", inv, "--json", "provision", "--yes", *SKIP)
    assert res.code == 3, res.stdout
    failed = next(t for t in res.json["data"]["hosts"][0]["data"]["tasks"]
                  if t["status"] == "failed")  # fmt: skip
    assert "sudo is not installed" in failed["message"]
    assert "apt-get install sudo" in failed["message"]
    assert not (tmp / "needs-sudo").exists()
    # the human recap shows the cause in full, not cut at 90 characters
    human = cli("-i", inv, "provision", "--yes", *SKIP)
    assert human.code == 3
    flat = " ".join(human.stdout.split())
    assert "install the sudo package on ns01" in flat.replace("│ ", "").replace(" │", "")


def test_explicit_ansible_become_false_overrides_the_task_keyword(cli, node, monkeypatch):
    """Ansible's precedence: a connection variable beats the `become:` keyword, so an
    inventory can run a `become: true` playbook as the login user (here: where sudo would
    otherwise be needed, as `nobody`, and is absent)."""
    fl, tmp = node
    monkeypatch.setenv("AGENTCTL_KNOWN_HOSTS", str(fl.write_known_hosts(tmp / "kh")))
    inv = inventory(fl, tmp, "no-become", ansible_become=False, ansible_become_user="nobody")
    res = cli("-i", inv, "--json", "provision", "--yes", *SKIP)
    assert res.code == 0, res.stdout
    assert (tmp / "no-become" / "etc").stat().st_uid == 0  # made by the login user, root
