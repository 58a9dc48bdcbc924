"""Pure parts of the playbook engine: loading with line numbers, rendering, parsers of remote
output (recorded from real commands), the systemd unit text. No host needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentctl.ctl.errors import PlaybookError
from agentctl.ctl.playbook import OPERATIONS, load_playbook
from agentctl.ctl.playbook.ops.base import octal_mode
from agentctl.ctl.playbook.ops.commands import CommandArgs
from agentctl.ctl.playbook.ops.files import check_path, parse_listing, parse_path_state
from agentctl.ctl.playbook.ops.python import PipArgs
from agentctl.ctl.playbook.ops.router import worker_ids
from agentctl.ctl.playbook.ops.service import render_unit, systemd_escape_arg
from agentctl.ctl.playbook.ops.system import parse_dpkg_query, parse_getent
from agentctl.ctl.playbook.render import RenderError, evaluate, make_environment, render_value

PLAYBOOKS = Path(__file__).resolve().parents[2] / "playbooks"


@pytest.mark.parametrize("name", sorted(p.stem for p in PLAYBOOKS.glob("*.yml")))
def test_every_shipped_playbook_loads(name: str) -> None:
    pb = load_playbook(PLAYBOOKS / f"{name}.yml", OPERATIONS)
    assert pb.tasks and all(t.op in OPERATIONS for t in pb.tasks)


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("tasks:\n  - name: x\n    nope: {}\n", 3, "unknown operation or key 'nope'"),
        ("tasks:\n  - file: {}\n    command: {}\n", 3, "one operation"),
        ("tasks:\n  - name: x\n", 2, "names no operation"),
        ("tasks:\n  - directory: {path: /a}\n    when: '{{ x }}'\n", 3, "without '{{ }}'"),
        ("tasks:\n  - directory: {path: /a}\n    become: maybe\n", 3, "true or false"),
        ("name: a\nname: b\ntasks: []\n", 2, "duplicate key"),
        ("tasks: [\n", 2, "invalid YAML"),
        ("hosts: all\n", 1, "missing 'tasks'"),
    ],
)
def test_malformed_playbooks_name_the_line(
    tmp_path: Path, text: str, line: int | None, needle: str
) -> None:
    p = tmp_path / "bad.yml"
    p.write_text(text)
    with pytest.raises(PlaybookError) as err:
        load_playbook(p, OPERATIONS)
    assert needle in err.value.message
    assert err.value.line == line
    assert str(p) in err.value.message


def test_render_keeps_native_types_and_refuses_undefined() -> None:
    env = make_environment()
    ctx = {"n": 3, "xs": [1, 2], "host": "a;b"}
    assert render_value(env, "{{ n }}", ctx) == 3
    assert render_value(env, "{{ xs }}", ctx) == [1, 2]
    assert render_value(env, "w{{ n }}", ctx) == "w3"
    assert render_value(env, {"a": ["{{ host }}"]}, ctx) == {"a": ["a;b"]}
    assert evaluate(env, "n > 2 and 'b' in host", ctx) is True
    with pytest.raises(RenderError, match="undefined"):
        render_value(env, "{{ missing }}", ctx)
    with pytest.raises(RenderError):  # the sandbox: no attribute walking into Python internals
        render_value(env, "{{ ''.__class__.__mro__ }}", ctx)


def test_path_state_parser_on_recorded_output() -> None:
    st = parse_path_state(
        "file|640|root|adm|13\n3f786850e387550fdab836ed7e6dc881de23001b63b1a7b4f0a0a3c3f4d5e6f7\n"
    )
    assert (st.kind, st.mode, st.owner, st.group, st.size) == ("file", "640", "root", "adm", 13)
    assert st.sha256 is not None and len(st.sha256) == 64
    assert parse_path_state("absent\n").kind == "absent"
    assert parse_path_state("directory|755|root|root|4096\n").sha256 is None
    with pytest.raises(ValueError):
        parse_path_state("weird\n")


def test_listing_parser() -> None:
    text = "aa" * 32 + "  ./a.whl\n" + "bb" * 32 + "  ./b c.whl\n"
    assert parse_listing(text) == {"a.whl": "aa" * 32, "b c.whl": "bb" * 32}
    assert parse_listing("absent\n") is None
    assert parse_listing("") == {}


def test_dpkg_and_getent_parsers_on_recorded_output() -> None:
    st = parse_dpkg_query("ii |1:9.2p1-2+deb12u3", "openssh-server\n")
    assert (st.installed, st.version, st.held) == (True, "1:9.2p1-2+deb12u3", True)
    removed = parse_dpkg_query("rc |535.104.05-1", "")
    assert (removed.installed, removed.version, removed.held) == (False, None, False)
    assert parse_dpkg_query("", "").installed is False
    user = parse_getent("agentctl:x:999:999::/opt/agentctl:/usr/sbin/nologin\n")
    assert (user.exists, user.uid, user.home, user.shell) == (
        True, 999, "/opt/agentctl", "/usr/sbin/nologin",
    )  # fmt: skip
    assert parse_getent("").exists is False


def test_argument_checks() -> None:
    assert octal_mode("0644") == "644" and octal_mode(0o750) == "750" and octal_mode(None) is None
    for bad in ("rw-", "99", "012345"):
        with pytest.raises(ValueError):
            octal_mode(bad)
    assert check_path("/opt/agentctl") == "/opt/agentctl"
    for bad in ("relative/x", "/a/../etc", "/a//b"):
        with pytest.raises(ValueError):
            check_path(bad)
    with pytest.raises(ValueError):
        CommandArgs.model_validate({"argv": ["a"], "shell": "b"})
    assert CommandArgs.model_validate({"argv": ["sleep", 3]}).full_argv() == ["sleep", "3"]
    with pytest.raises(ValueError):
        PipArgs.model_validate({"venv": "/v", "packages": ["--index-url=http://evil"]})
    with pytest.raises(ValueError):
        PipArgs.model_validate({"venv": "/v", "packages": ["x"], "no_index": True})


def test_worker_ids_belong_to_their_node_only() -> None:
    workers = [{"id": i} for i in ("n1-w0", "n1-w1", "n10-w0", "n1-extra", "w0")]
    assert worker_ids(workers, ["n1"]) == ["n1-w0", "n1-w1"]
    assert worker_ids(workers, ["n10"]) == ["n10-w0"]


def test_systemd_unit_quotes_every_word() -> None:
    assert systemd_escape_arg('a "b" $HOME 50%') == '"a \\"b\\" $$HOME 50%%"'
    unit = render_unit(
        "worker-0",
        ["/opt/agentctl/venv/bin/python", "-m", "agentctl.serving", "worker", "--config", "/x y"],
        {"PYTHONUNBUFFERED": "1"},
        "agentctl",
        "/",
        "agentctl worker-0",
    )
    assert 'ExecStart="/opt/agentctl/venv/bin/python" "-m"' in unit
    assert '"/x y"' in unit
    assert 'Environment="PYTHONUNBUFFERED=1"' in unit
    assert "User=agentctl" in unit and "Restart=always" in unit
    assert unit.endswith("WantedBy=multi-user.target\n")
