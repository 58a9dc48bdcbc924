"""Every broken fixture fails with an InventoryError naming file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentctl.ctl.errors import ExitCode, InventoryError
from agentctl.ctl.inventory import load_inventory

BAD = Path(__file__).resolve().parents[1] / "fixtures" / "inventory" / "bad"

CASES = [
    # (fixture, line, field, fragment of the message)
    ("syntax.yml", 5, None, "invalid YAML: expected <block end>"),
    ("duplicate_host.yml", 6, "all.hosts", "duplicate key 'node1' (lines 3 and 6)"),
    ("duplicate_var.yml", 4, "all.vars", "duplicate key 'ansible_user' (lines 3 and 4)"),
    ("top_list.yml", 1, None, "top level must be a mapping of group names, got a list"),
    ("empty.yml", None, None, "inventory is empty"),
    ("unknown_key.yml", 4, "all.children.gpu.childs", "did you mean 'children'?"),
    ("unknown_key_no_match.yml", 2, "all.node1", "hosts go under 'hosts:'"),
    ("hosts_list.yml", 5, "all.children.gpu.hosts", "'hosts' must be a mapping, got a list"),
    ("vars_list.yml", 3, "all.vars", "'vars' must be a mapping, got a list"),
    ("group_scalar.yml", 3, "all.children.gpu", "group 'gpu' must be a mapping"),
    ("host_scalar.yml", 3, "all.hosts.node1", "set the address with ansible_host"),
    ("host_vars_keyword.yml", 4, "all.hosts.node1.vars", "'vars' under a host"),
    ("host_name_space.yml", 4, "all.hosts.node 2", "host name 'node 2' contains whitespace"),
    ("host_name_comma.yml", 3, "all.hosts.a,b", "contains ','"),
    ("host_name_port.yml", 3, "all.hosts.node1:2222", "set ansible_port for a port"),
    ("group_name_bang.yml", 3, "all.children.gpu!", "group name 'gpu!' contains '!'"),
    ("group_name_empty.yml", 3, "all.children.", "group name must not be empty"),
    ("host_group_same_name.yml", 5, "all.children.gpu.hosts.gpu", "both a host and a group"),
    ("cycle.yml", 10, "b.children.a", "group cycle: a -> b -> a"),
    ("self_child.yml", 5, "all.children.loop.children.loop", "group cycle: loop -> loop"),
    ("all_child.yml", 3, "gpu.children.all", "'all' cannot be a child group"),
    ("port_string.yml", 6, "all.children.gpu.hosts.node1.ansible_port", "got '22'"),
    ("port_range.yml", 3, "all.vars.ansible_port", "integer 1..65535, got 70000"),
    ("become_bad.yml", 4, "all.hosts.node1.ansible_become", "must be a boolean"),
    ("roles_unknown.yml", 4, "all.hosts.node1.agentctl_roles", "unknown role 'trainer'"),
    ("roles_string.yml", 3, "all.vars.agentctl_roles", "use agentctl_role for one"),
    ("roles_both.yml", 5, "all.hosts.node1.agentctl_role", "not both"),
    (
        "gpus_negative.yml",
        5,
        "all.children.gpu.vars.agentctl_expected_gpus",
        "non-negative integer, got -1",
    ),
    ("gpus_bool.yml", 3, "all.vars.agentctl_expected_gpus", "got True"),
    ("install_root_relative.yml", 3, "all.vars.agentctl_install_root", "absolute path"),
    ("priority_bad.yml", 5, "all.children.gpu.vars.ansible_group_priority", "got 'high'"),
    ("address_space.yml", 4, "all.hosts.node1.ansible_host", "contains whitespace"),
    ("address_newline.yml", 4, "all.hosts.node1.ansible_host", "'10.0.0.1\\nreboot'"),
    (
        "proxy_jump_bad.yml",
        3,
        "all.vars.ansible_ssh_common_args",
        "hop '-oProxyCommand=evil' is not [user@]host[:port]",
    ),
    ("proxy_jump_var_bad.yml", 4, "all.hosts.node1.agentctl_proxy_jump", "'jump host'"),
    ("ssh_args_unbalanced.yml", 4, "all.hosts.node1.ansible_ssh_extra_args", "No closing"),
    ("range_bad.yml", 3, "all.hosts.node[5:1]", "has begin > end"),
    ("range_width.yml", 3, "all.hosts.node[01:100]", "equal length"),
    ("recursive_alias.yml", 3, "all.vars.loop[0]", "recursive YAML alias"),
    ("vault.yml", 3, "all.vars.ansible_become_password", "!vault"),
    ("plugin.yml", 1, "plugin", "inventory plugin configuration"),
    ("inventory.ini", 1, None, "looks like an INI inventory"),
    ("not_utf8.yml", None, None, "not UTF-8"),
]


@pytest.mark.parametrize(("name", "line", "field", "fragment"), CASES, ids=[c[0] for c in CASES])
def test_broken_fixture_names_file_line_and_field(name, line, field, fragment):
    path = BAD / name
    with pytest.raises(InventoryError) as caught:
        load_inventory(path)
    err = caught.value
    assert (err.path, err.line, err.field) == (str(path), line, field)
    prefix = str(path) + (f":{line}" if line is not None else "") + ": "
    prefix += f"{field}: " if field else ""
    assert str(err).startswith(prefix), str(err)
    assert fragment in str(err)
    assert err.exit_code == ExitCode.USAGE


def test_every_bad_fixture_is_covered():
    assert {p.name for p in BAD.iterdir()} == {c[0] for c in CASES}


def test_missing_file_names_path(tmp_path):
    path = tmp_path / "nope.yml"
    with pytest.raises(InventoryError, match="cannot read inventory") as caught:
        load_inventory(path)
    assert caught.value.path == str(path)
    assert str(caught.value).startswith(f"{path}: ")


def test_directory_is_unreadable(tmp_path):
    with pytest.raises(InventoryError, match="cannot read inventory"):
        load_inventory(tmp_path)


def test_alias_bomb_is_refused(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 8)]
    path = tmp_path / "bomb.yml"
    path.write_text("all:\n  vars:\n" + "".join(f"    {line}\n" for line in lines))
    with pytest.raises(InventoryError, match="expand to more than"):
        load_inventory(path)


def test_huge_range_is_refused(tmp_path):
    path = tmp_path / "huge.yml"
    path.write_text("all:\n  hosts:\n    n[0:99999999]:\n")
    with pytest.raises(InventoryError, match="more than 65536 hosts") as caught:
        load_inventory(path)
    assert caught.value.line == 3


def test_deep_nesting_is_an_inventory_error(tmp_path):
    path = tmp_path / "deep.yml"
    path.write_text("all:\n  vars:\n    x: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(InventoryError):
        load_inventory(path)


def test_error_messages_never_show_a_secret(tmp_path):
    path = tmp_path / "secret.yml"
    path.write_text("all:\n  vars:\n    ansible_become_password: [s3cr3t-value]\n")
    with pytest.raises(InventoryError, match="must be a string, got a list") as caught:
        load_inventory(path)
    assert "s3cr3t" not in str(caught.value)
