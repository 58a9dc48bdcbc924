"""Good inventories: structure, ranges, connection variables, ProxyJump forms, hostile data."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentctl.ctl.errors import InventoryError
from agentctl.ctl.inventory import inventory_from_list, load_inventory

GOOD = Path(__file__).resolve().parents[1] / "fixtures" / "inventory" / "good"


def test_structure_and_membership():
    inv = load_inventory(GOOD / "precedence.yml")
    assert inv.path == str(GOOD / "precedence.yml")
    assert list(inv.hosts) == ["standalone", "node1", "node2", "node3", "node4", "node5", "loose"]
    gpu = inv.groups["gpu"]
    # listed under dc and again at the top: one group, hosts and vars merged; parent only dc,
    # because Ansible hangs a group below `all` only when nothing else claims it
    assert gpu.parents == ("dc",)
    assert gpu.hosts == ("node1", "node2", "node5")
    assert dict(gpu.vars) == {"level": "gpu", "extra": "top"}
    assert gpu.depth == 2
    assert inv.groups["gpu"].line == 16
    assert inv.groups["all"].line == 3
    assert inv.groups["dc"].children == ("gpu",)
    # ancestors are included; every host is in all
    assert set(inv.hosts["node1"].groups) == {"all", "a_group", "b_group", "dc", "gpu"}
    assert all(h.groups[0] == "all" for h in inv.hosts.values())
    assert inv.hosts["node1"].line == 20
    assert inv.hosts["node1"].source == str(GOOD / "precedence.yml")


def test_ungrouped_holds_hosts_in_no_other_group():
    inv = load_inventory(GOOD / "precedence.yml")
    assert inv.groups["ungrouped"].hosts == ("standalone", "loose")
    assert inv.hosts["standalone"].groups == ("all", "ungrouped")
    assert inv.hosts["loose"].groups == ("all", "ungrouped")
    assert "ungrouped" not in inv.hosts["node1"].groups


def test_host_in_ungrouped_and_a_real_group_leaves_ungrouped(tmp_path):
    path = tmp_path / "inv.yml"
    path.write_text("ungrouped:\n  hosts:\n    a:\n    b:\ngpu:\n  hosts:\n    a:\n")
    inv = load_inventory(path)
    assert inv.groups["ungrouped"].hosts == ("b",)
    assert inv.hosts["a"].groups == ("all", "gpu")


def test_ranges_expand_in_order_with_padding_letters_and_steps():
    inv = load_inventory(GOOD / "ranges.yml")
    assert list(inv.hosts) == [
        "node01.example",
        "node02.example",
        "node03.example",
        "rack-a-1",
        "rack-a-2",
        "rack-b-1",
        "rack-b-2",
        "rack-c-1",
        "rack-c-2",
        "odd1",
        "odd4",
        "odd7",
        "plain0",
        "plain1",
        "plain2",
    ]
    assert all(inv.hosts[f"node0{i}.example"].expected_gpus == 8 for i in (1, 2, 3))
    assert inv.hosts["node02.example"].line == 5


def test_connection_variables():
    inv = load_inventory(GOOD / "connection.yml")
    r1, r2, w1, w2 = (inv.hosts[n] for n in ("r1", "r2", "w1", "w2"))
    assert (r1.address, r1.port, r1.user) == ("10.0.0.1", 2200, "ops")
    assert r1.key_file == "~/.ssh/fleet"
    assert r1.become is True  # the string "yes" from `all`
    assert r1.become_user == "svc"
    assert r1.become_password == "hunter2-secret"
    assert r1.roles == ("router",)
    assert r1.install_root == "/srv/agentctl"
    # legacy ansible_ssh_* spellings, set on the host, beat ansible_user from `all`
    assert (r2.address, r2.port, r2.user) == ("10.0.0.2", 2201, "legacy")
    assert r2.become is False
    assert r2.become_password == "other-secret"
    # agentctl_roles on the host hides agentctl_role from the group (one setting, two spellings)
    assert w1.roles == ("router", "worker")
    assert "agentctl_role" not in w1.vars
    assert w1.expected_gpus == 8
    assert w2.roles == ("worker",)
    assert w2.expected_gpus == 0
    assert w2.address == "w2"  # no ansible_host: the name
    assert w2.port is None


def test_defaults_for_a_bare_host():
    inv = inventory_from_list("solo,")
    host = inv.hosts["solo"]
    assert (host.address, host.port, host.user, host.key_file) == ("solo", None, None, None)
    assert (host.become, host.become_user, host.become_password) == (False, None, None)
    assert (host.roles, host.expected_gpus, host.install_root) == ((), None, "/opt/agentctl")
    assert host.proxy_jump is None


@pytest.mark.parametrize(
    ("host", "jump"),
    [
        ("inherits", "bastion.example"),  # -o ProxyJump=X, from `all`
        ("quoted_form", "ops@jump1:2222"),  # -o 'ProxyJump X'
        ("dash_j", "jump2"),  # -J X
        ("attached", "a@j1,b@j2:2022"),  # -oProxyJump=X, a chain
        ("extra_args", "from-extra"),  # common args without one, extra args with one
        ("own_var_wins", "winner@jump3:22"),  # agentctl_proxy_jump beats ssh args
        ("disabled", None),  # agentctl_proxy_jump: none
        ("key_file_named_dash_j", None),  # `-i -J`: -J is the key file's name
    ],
)
def test_proxy_jump_forms(host, jump):
    inv = load_inventory(GOOD / "proxy_jump.yml")
    assert inv.hosts[host].proxy_jump == jump


def test_hostile_values_are_kept_verbatim():
    inv = load_inventory(GOOD / "hostile.yml")
    evil1, evil2 = inv.hosts["evil1"], inv.hosts["evil2"]
    assert evil1.address == "$(reboot)"
    assert evil1.user == "root; rm -rf /"
    assert evil1.vars["cmd"] == "; rm -rf /"
    assert evil1.vars["subst"] == "$(reboot)"
    assert evil1.vars["quotes"] == 'it\'s "quoted" `x`'
    assert evil1.vars["newline"] == "line1\nline2"
    assert evil2.address == "10.0.0.9;reboot"
    assert evil2.user == "o'brien\nroot"


def test_yaml_merge_keys_anchors_and_unsafe(tmp_path):
    path = tmp_path / "inv.yml"
    path.write_text(
        "all:\n"
        "  vars:\n"
        "    common: &common {ansible_user: ops, ansible_port: 2200}\n"
        "  hosts:\n"
        "    a:\n"
        "      <<: *common\n"
        "      ansible_port: 2222\n"
        "    b:\n"
        "      <<: *common\n"
        "      tpl: !unsafe '{{ not_templated }}'\n"
    )
    inv = load_inventory(path)
    assert (inv.hosts["a"].user, inv.hosts["a"].port) == ("ops", 2222)
    assert (inv.hosts["b"].user, inv.hosts["b"].port) == ("ops", 2200)
    assert inv.hosts["b"].vars["tpl"] == "{{ not_templated }}"


def test_null_sections_and_empty_groups(tmp_path):
    path = tmp_path / "inv.yml"
    path.write_text("all:\n  hosts:\n  vars:\n  children:\n    empty:\n    gpu:\n      hosts:\n")
    inv = load_inventory(path)
    assert inv.hosts == {}
    assert set(inv.groups) == {"all", "ungrouped", "empty", "gpu"}
    assert inv.select("all") == []


def test_top_level_groups_other_than_all_become_children_of_all(tmp_path):
    path = tmp_path / "inv.yml"
    path.write_text("gpu:\n  hosts:\n    n1:\nrouters:\n  hosts:\n    r1:\n")
    inv = load_inventory(path)
    assert inv.groups["all"].children == ("ungrouped", "gpu", "routers")
    assert inv.hosts["n1"].groups == ("all", "gpu")


def test_a_host_listed_twice_merges_vars_later_wins(tmp_path):
    path = tmp_path / "inv.yml"
    path.write_text(
        "a:\n  hosts:\n    n1:\n      x: 1\n      y: 1\nb:\n  hosts:\n    n1:\n      y: 2\n"
    )
    inv = load_inventory(path)
    assert dict(inv.hosts["n1"].vars) == {"x": 1, "y": 2}
    assert inv.hosts["n1"].line == 3


def test_unknown_agentctl_variables_are_allowed(tmp_path):
    path = tmp_path / "inv.yml"
    path.write_text("all:\n  hosts:\n    n1:\n      agentctl_future_knob: [1, 2]\n")
    assert load_inventory(path).hosts["n1"].vars["agentctl_future_knob"] == (1, 2)


def test_string_path_is_accepted():
    assert "r1" in load_inventory(str(GOOD / "connection.yml")).hosts


class TestHostList:
    def test_forms(self):
        inv = inventory_from_list("host1, ops@host2:2222 ,host3:22,")
        assert inv.path is None
        assert list(inv.hosts) == ["host1", "host2", "host3"]
        h2 = inv.hosts["host2"]
        assert (h2.address, h2.user, h2.port) == ("host2", "ops", 2222)
        assert inv.hosts["host3"].port == 22
        assert all(h.groups == ("all", "ungrouped") for h in inv.hosts.values())
        assert inv.groups["ungrouped"].hosts == ("host1", "host2", "host3")

    def test_single_host_without_comma(self):
        assert list(inventory_from_list("only").hosts) == ["only"]

    def test_identical_duplicates_collapse(self):
        assert list(inventory_from_list("a,a,b").hosts) == ["a", "b"]

    @pytest.mark.parametrize(
        ("spec", "fragment"),
        [
            ("", "names no hosts"),
            (" , ,", "names no hosts"),
            ("a:22,a:23", "listed twice"),
            ("a:http", "1..65535"),
            ("a:0", "1..65535"),
            ("a:", "1..65535"),
            ("::1", "not [user@]host[:port]"),
            ("u@v@w", "not [user@]host[:port]"),
            ("@:22", "must not be empty"),
            ("-oProxyCommand=x", "starts with '-'"),
            ("a!b", "pattern operator"),
        ],
    )
    def test_errors(self, spec, fragment):
        with pytest.raises(InventoryError) as caught:
            inventory_from_list(spec)
        assert fragment in str(caught.value)


def test_ipv6_and_numeric_values(tmp_path):
    path = tmp_path / "inv.yml"
    path.write_text(
        "all:\n  hosts:\n    v6:\n      ansible_host: '2001:db8::1'\n      ansible_user: 1000\n"
        "      ansible_become_password: 1234\n"
    )
    host = load_inventory(path).hosts["v6"]
    assert (host.address, host.user, host.become_password) == ("2001:db8::1", "1000", "1234")


def test_jinja_in_address_gets_a_hint(tmp_path):
    path = tmp_path / "inv.yml"
    path.write_text("all:\n  hosts:\n    n1:\n      ansible_host: '{{ inventory_hostname }}'\n")
    with pytest.raises(InventoryError, match="Jinja templates are not evaluated") as caught:
        load_inventory(path)
    assert caught.value.line == 4
