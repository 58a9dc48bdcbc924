"""The playbook engine and its operations against real sshd nodes on loopback (no mocks).

Each node gets its own install root (an inventory variable), so two "nodes" share this machine
without colliding.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from agentctl.ctl.connect import Connections
from agentctl.ctl.fleet import LocalFleet, find_sshd
from agentctl.ctl.inventory import Host, Inventory, load_inventory
from agentctl.ctl.playbook import (
    OPERATIONS,
    HostRun,
    PlaybookRunner,
    inventory_context,
    load_playbook,
)
from agentctl.ctl.settings import load_settings

pytestmark = pytest.mark.timeout(120)


@dataclass
class Nodes:
    fleet: LocalFleet
    inventory: Inventory
    conns: Connections
    roots: dict[str, Path]
    tmp: Path

    def run(self, text: str, *, check: bool = False, host: str = "pb01") -> HostRun:
        path = self.tmp / "pb.yml"
        path.write_text(text)
        pb = load_playbook(path, OPERATIONS)
        hostvars, groups = inventory_context(self.inventory)
        runner = PlaybookRunner(
            pb,
            check=check,
            hostvars=hostvars,
            groups=groups,
            become_for=lambda h: None,
            timeout=30,
            scratch=self.tmp,
        )
        h: Host = self.inventory.hosts[host]
        conn = self.conns.connect(h)
        try:
            return runner.run_host(conn, h)
        finally:
            conn.close()


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    if find_sshd() is None:
        pytest.skip("sshd not installed")
    tmp = tmp_path_factory.mktemp("pb")
    fleet = LocalFleet(tmp / "fleet", 2, prefix="pb", first_address=140)
    try:  # start() may fail half-way, with some nodes up
        fleet.start()
        doc = fleet.inventory()
        roots = {}
        for name, hv in doc["all"]["hosts"].items():  # type: ignore[index]
            roots[name] = tmp / "roots" / name
            hv["agentctl_install_root"] = str(roots[name])
            hv["greeting"] = "hello; $(touch /tmp/pwned) `id` 'q'"
        inv_path = tmp / "inventory.yml"
        inv_path.write_text(yaml.safe_dump(doc))
        kh = fleet.write_known_hosts(tmp / "known_hosts")
        settings = load_settings(
            env={
                "AGENTCTL_KNOWN_HOSTS": str(kh),
                "AGENTCTL_USE_SSH_CONFIG": "false",
                "AGENTCTL_LOOK_FOR_KEYS": "false",
                "AGENTCTL_USE_AGENT": "false",
            }
        )
        inventory = load_inventory(inv_path)
        yield Nodes(fleet, inventory, Connections(settings, inventory), roots, tmp)
    finally:
        fleet.stop()


FILES = """
name: files
vars:
  base: "{{ agentctl_install_root }}/files"
tasks:
  - name: base dir
    directory: {path: "{{ base }}", mode: "0750"}
  - name: config
    file:
      path: "{{ base }}/app.conf"
      content: "greeting = {{ greeting | to_json }}\\n"
      mode: "0640"
  - name: rendered
    template: {src: hello.j2, dest: "{{ base }}/hello.txt"}
  - name: marker
    command: {argv: [touch, "{{ base }}/made"], creates: "{{ base }}/made"}
"""


def test_first_run_changes_second_run_changes_nothing(nodes: Nodes) -> None:
    (nodes.tmp / "templates").mkdir(exist_ok=True)
    (nodes.tmp / "templates" / "hello.j2").write_text(
        "host={{ inventory_hostname }} roles={{ agentctl_roles | to_json }}\n"
    )
    root = nodes.roots["pb01"]
    first = nodes.run(FILES)
    assert [r.status for r in first.results] == ["changed"] * 4, first.results[0].message
    conf = root / "files" / "app.conf"
    # a hostile inventory value arrives as data, in the file, and nowhere else
    assert conf.read_text() == "greeting = \"hello; $(touch /tmp/pwned) `id` 'q'\"\n"
    assert not Path("/tmp/pwned").exists()
    assert stat.S_IMODE(conf.stat().st_mode) == 0o640
    assert stat.S_IMODE((root / "files").stat().st_mode) == 0o750
    assert (root / "files" / "hello.txt").read_text() == "host=pb01 roles=[]\n"
    again = nodes.run(FILES)
    assert [r.status for r in again.results] == ["ok"] * 4, again.to_dict()


def test_check_mode_shows_a_diff_and_touches_nothing(nodes: Nodes) -> None:
    nodes.run(FILES)
    conf = nodes.roots["pb01"] / "files" / "app.conf"
    conf.write_text("greeting = drifted\n")
    os.chmod(conf, 0o600)
    plan = nodes.run(FILES, check=True)
    by = {r.task: r for r in plan.results}
    assert by["config"].status == "changed"
    assert "mode 600 -> 640" in by["config"].changes
    assert by["config"].diff is not None and "-greeting = drifted" in by["config"].diff
    assert conf.read_text() == "greeting = drifted\n"  # check mode changed nothing
    fixed = nodes.run(FILES)
    assert {r.task: r.status for r in fixed.results}["config"] == "changed"
    assert stat.S_IMODE(conf.stat().st_mode) == 0o640


def test_check_mode_on_a_fresh_host_reports_unknown_for_dependent_steps(nodes: Nodes) -> None:
    text = """
tasks:
  - name: dir
    directory: {path: "{{ agentctl_install_root }}/fresh/a"}
  - name: venv pip
    pip: {venv: "{{ agentctl_install_root }}/fresh/a/venv", packages: [x], find_links: "/nope"}
"""
    run = nodes.run(text, check=True, host="pb02")
    assert [r.status for r in run.results] == ["changed", "changed"]
    assert not (nodes.roots["pb02"] / "fresh").exists()


def test_a_failing_task_stops_the_host_and_rerun_continues(nodes: Nodes) -> None:
    root = nodes.roots["pb02"]
    text = f"""
tasks:
  - name: one
    directory: {{path: "{root}/resume"}}
  - name: fails until the flag exists
    command: {{argv: [test, -e, "{root}/resume/flag"]}}
  - name: three
    file: {{path: "{root}/resume/done", content: "ok"}}
"""
    first = nodes.run(text, host="pb02")
    assert [r.status for r in first.results] == ["changed", "failed"]
    assert first.failed is not None and "exit 1" in (first.failed.message or "")
    assert not (root / "resume" / "done").exists()
    (root / "resume" / "flag").touch()
    second = nodes.run(text, host="pb02")
    assert [r.status for r in second.results] == ["ok", "changed", "changed"]


def test_loop_when_and_no_log(nodes: Nodes) -> None:
    root = nodes.roots["pb01"]
    text = f"""
vars: {{workers: 3}}
tasks:
  - name: worker dirs
    directory: {{path: "{root}/loop/w{{{{ item }}}}"}}
    loop: "{{{{ range(workers) | list }}}}"
  - name: only routers
    directory: {{path: "{root}/loop/router"}}
    when: "'router' in agentctl_roles"
  - name: secret
    file: {{path: "{root}/loop/token", content: "s3cr3t-value", mode: "0600"}}
    no_log: true
"""
    run = nodes.run(text)
    assert [r.task for r in run.results[:3]] == [f"worker dirs (item={i})" for i in range(3)]
    assert run.results[3].status == "skipped"
    secret = run.results[4]
    assert secret.status == "changed" and secret.diff is None
    assert "s3cr3t" not in str(run.to_dict())
    assert sorted(p.name for p in (root / "loop").iterdir()) == ["token", "w0", "w1", "w2"]


def test_undefined_variable_fails_the_task_by_name(nodes: Nodes) -> None:
    run = nodes.run('tasks:\n  - name: bad\n    directory: {path: "/x/{{ nope }}"}\n')
    assert run.results[0].status == "failed"
    assert "undefined" in (run.results[0].message or "") and "nope" in (
        run.results[0].message or ""
    )


def test_sync_uploads_only_what_differs(nodes: Nodes) -> None:
    src = nodes.tmp / "wheelhouse"
    src.mkdir(exist_ok=True)
    for i in range(3):
        (src / f"pkg{i}.whl").write_bytes(os.urandom(2048))
    dest = nodes.roots["pb01"] / "wheels"
    text = f"tasks:\n  - sync: {{src: {src}, dest: {dest}, delete: true}}\n"
    assert nodes.run(text).results[0].changes == [f"upload pkg{i}.whl" for i in range(3)]
    assert nodes.run(text).results[0].status == "ok"
    (src / "pkg1.whl").write_bytes(b"new build")
    (dest / "stale.whl").write_bytes(b"x")
    changes = nodes.run(text).results[0].changes
    assert changes == ["upload pkg1.whl", "remove stale.whl"]
    assert (dest / "pkg1.whl").read_bytes() == b"new build"
    assert not (dest / "stale.whl").exists()


def test_package_state_is_read_from_dpkg(nodes: Nodes) -> None:
    if not Path("/usr/bin/dpkg-query").exists():
        pytest.skip("not a Debian host")
    text = (
        "tasks:\n  - package: {name: openssh-server}\n"
        "  - package: {name: agentctl-nope-pkg, state: absent}\n"
    )
    run = nodes.run(text, check=True)
    assert [r.status for r in run.results] == ["ok", "ok"], run.to_dict()


def test_absent_directory_needs_its_marker(nodes: Nodes) -> None:
    root = nodes.roots["pb02"] / "notours"
    root.mkdir(parents=True)
    (root / "precious.txt").write_text("keep me")
    text = f"tasks:\n  - directory: {{path: {root}, state: absent, require: venv/.agentctl-pip}}\n"
    run = nodes.run(text, host="pb02")
    assert run.results[0].status == "failed"
    assert "does not look like agentctl's" in (run.results[0].message or "")
    assert (root / "precious.txt").read_text() == "keep me"
    (root / "venv").mkdir()
    (root / "venv" / ".agentctl-pip").write_text("x")
    assert nodes.run(text, host="pb02").results[0].status == "changed"
    assert not root.exists()
    assert nodes.run(text, host="pb02").results[0].status == "ok"
