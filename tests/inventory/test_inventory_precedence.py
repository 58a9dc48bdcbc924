"""Variable precedence, checked against Ansible's documented merge order.

Ansible ("How variables are merged"): all < parent group < child group < host. Groups of the
same depth merge in ASCII name order, later wins; `ansible_group_priority` (default 1) moves a
group later, "the larger the number, the later it will be merged". Depth is a group's longest
distance from `all`, so sort key = (depth, priority, name).
"""

from __future__ import annotations

from pathlib import Path

from agentctl.ctl.inventory import load_inventory

GOOD = Path(__file__).resolve().parents[1] / "fixtures" / "inventory" / "good"


def _inv():
    return load_inventory(GOOD / "precedence.yml")


def test_child_group_beats_parent_beats_all():
    node1 = _inv().hosts["node1"]
    assert node1.vars["level"] == "gpu"
    assert node1.vars["only_dc"] == "from-dc"
    assert node1.vars["only_all"] == "from-all"


def test_host_var_beats_every_group():
    assert _inv().hosts["node2"].vars["level"] == "host"


def test_same_depth_merges_by_name_later_wins():
    # y_group and z_group both set `order`; z sorts last so it wins
    assert _inv().hosts["node3"].vars["order"] == "z"
    assert _inv().hosts["node3"].vars["testvar"] == "b"


def test_group_priority_overrides_name_order_documented_example():
    # the documentation's example: a_group has priority 10, so testvar == "a" not "b"
    inv = _inv()
    assert inv.hosts["node1"].vars["testvar"] == "a"
    assert inv.groups["a_group"].priority == 10
    assert "ansible_group_priority" not in inv.groups["a_group"].vars
    assert "ansible_group_priority" not in inv.hosts["node1"].vars


def test_deeper_group_wins_even_in_an_unrelated_branch():
    # deep (all > chain1 > chain2 > deep) is depth 3, shallow is depth 1
    inv = _inv()
    assert inv.groups["deep"].depth == 3
    assert inv.hosts["node4"].vars["reach"] == "deep"


def test_depth_is_the_longest_path_from_all():
    # gpu is written at the top level too, but it is below dc, so depth 2 and it beats dc
    inv = _inv()
    assert inv.groups["gpu"].depth == 2
    assert inv.hosts["node5"].vars["level"] == "gpu"
    assert inv.hosts["node5"].vars["extra"] == "top"


def test_groups_are_listed_in_merge_order():
    inv = _inv()
    assert inv.hosts["node1"].groups == ("all", "b_group", "dc", "a_group", "gpu")
    assert inv.hosts["node3"].groups == ("all", "b_group", "y_group", "z_group")
    assert inv.hosts["node4"].groups == ("all", "chain1", "shallow", "chain2", "deep")


def test_all_vars_are_the_floor():
    assert dict(_inv().hosts["standalone"].vars) == {
        "level": "all",
        "only_all": "from-all",
        "testvar": "all",
    }


def test_priority_does_not_beat_depth(tmp_path):
    path = tmp_path / "inv.yml"
    path.write_text(
        "parent:\n"
        "  vars: {x: parent, ansible_group_priority: 100}\n"
        "  children:\n"
        "    child:\n"
        "      vars: {x: child}\n"
        "      hosts: {n1: }\n"
    )
    assert load_inventory(path).hosts["n1"].vars["x"] == "child"


def test_priority_accepts_a_digit_string_like_ansible(tmp_path):
    path = tmp_path / "inv.yml"
    path.write_text(
        "a:\n  vars: {x: a, ansible_group_priority: '5'}\n  hosts: {n1: }\n"
        "b:\n  vars: {x: b}\n  hosts: {n1: }\n"
    )
    assert load_inventory(path).hosts["n1"].vars["x"] == "a"


def test_a_group_written_twice_merges_vars_later_wins(tmp_path):
    path = tmp_path / "inv.yml"
    path.write_text(
        "all:\n  children:\n    dc:\n      children:\n        gpu:\n          vars: {x: 1, y: 1}\n"
        "gpu:\n  vars: {y: 2}\n  hosts: {n1: }\n"
    )
    assert dict(load_inventory(path).hosts["n1"].vars) == {"x": 1, "y": 2}


def test_role_spelling_at_a_more_specific_level_wins(tmp_path):
    path = tmp_path / "inv.yml"
    path.write_text(
        "all:\n  vars: {agentctl_roles: [router, worker]}\n"
        "gpu:\n  vars: {agentctl_role: worker}\n  hosts: {n1: , n2: {agentctl_roles: [router]}}\n"
    )
    inv = load_inventory(path)
    assert inv.hosts["n1"].roles == ("worker",)
    assert inv.hosts["n2"].roles == ("router",)


def test_connection_aliases_follow_precedence_not_spelling(tmp_path):
    # a group's ansible_host loses to the host's legacy ansible_ssh_host
    path = tmp_path / "inv.yml"
    path.write_text(
        "gpu:\n  vars: {ansible_host: group.example}\n"
        "  hosts: {n1: {ansible_ssh_host: host.example}, n2: }\n"
    )
    inv = load_inventory(path)
    assert inv.hosts["n1"].address == "host.example"
    assert inv.hosts["n2"].address == "group.example"


def test_become_password_prefers_the_modern_name_at_the_same_level(tmp_path):
    path = tmp_path / "inv.yml"
    path.write_text(
        "all:\n  hosts:\n    n1:\n      ansible_become_pass: old\n"
        "      ansible_become_password: new\n"
    )
    assert load_inventory(path).hosts["n1"].become_password == "new"


def test_agentctl_proxy_jump_wins_even_from_a_less_specific_level(tmp_path):
    path = tmp_path / "inv.yml"
    path.write_text(
        "all:\n  vars: {agentctl_proxy_jump: bastion}\n"
        "  hosts: {n1: {ansible_ssh_common_args: '-J other'}}\n"
    )
    assert load_inventory(path).hosts["n1"].proxy_jump == "bastion"
