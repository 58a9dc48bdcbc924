"""The model: secrets never printed, read-only vars, JSON-ready public dicts."""

from __future__ import annotations

import dataclasses
import json
import operator
from pathlib import Path

import pytest

from agentctl.ctl.errors import InventoryError
from agentctl.ctl.inventory import Group, Host, Inventory, load_inventory

GOOD = Path(__file__).resolve().parents[1] / "fixtures" / "inventory" / "good"
SECRETS = ("hunter2-secret", "other-secret", "tok-123", "nested-secret")


@pytest.fixture(scope="module")
def inv() -> Inventory:
    return load_inventory(GOOD / "connection.yml")


def test_become_password_is_loaded(inv):
    assert inv.hosts["r1"].become_password == "hunter2-secret"


@pytest.mark.parametrize("render", [repr, str])
def test_repr_never_shows_a_secret(inv, render):
    text = render(inv) + "".join(render(h) for h in inv.hosts.values())
    text += "".join(render(g) for g in inv.groups.values()) + render(inv.hosts["w2"].vars)
    for secret in SECRETS:
        assert secret not in text
    assert "become_password=" not in repr(inv.hosts["r1"])
    assert "'ansible_become_password': '***'" in repr(inv.hosts["r1"])


def test_public_dict_never_shows_a_secret(inv):
    text = json.dumps(inv.to_public_dict())
    for secret in SECRETS:
        assert secret not in text
    r1 = inv.hosts["r1"].to_public_dict()
    assert "become_password" not in r1
    assert r1["become_password_set"] is True
    assert r1["vars"]["ansible_become_password"] == "***"
    r2 = inv.hosts["r2"].to_public_dict()
    assert r2["vars"]["ansible_become_pass"] == "***"  # Ansible's short spelling
    w2 = inv.hosts["w2"].to_public_dict()
    assert w2["vars"]["api_token"] == "***"
    assert w2["vars"]["db"] == {"password": "***", "host": "db1"}  # masked at any depth


def test_public_dict_shape(inv):
    data = inv.to_public_dict()
    assert data["path"] == str(GOOD / "connection.yml")
    assert [h["name"] for h in data["hosts"]] == ["r1", "r2", "w1", "w2"]
    r1 = data["hosts"][0]
    assert r1 == {
        "name": "r1",
        "address": "10.0.0.1",
        "port": 2200,
        "user": "ops",
        "key_file": "~/.ssh/fleet",
        "become": True,
        "become_user": "svc",
        "become_password_set": True,
        "proxy_jump": None,
        "groups": ["all", "routers"],
        "roles": ["router"],
        "expected_gpus": None,
        "install_root": "/srv/agentctl",
        "vars": r1["vars"],
        "source": str(GOOD / "connection.yml"),
        "line": 13,
    }
    assert r1["vars"]["agentctl_roles"] == ["router"]
    routers = next(g for g in data["groups"] if g["name"] == "routers")
    assert routers == {
        "name": "routers",
        "parents": ["all"],
        "children": [],
        "hosts": ["r1", "r2"],
        "vars": {"agentctl_roles": ["router"]},
        "priority": 1,
        "depth": 1,
        "line": 9,
    }


def test_public_dict_is_json_for_any_yaml_value(tmp_path):
    path = tmp_path / "inv.yml"
    path.write_text(
        "all:\n  hosts:\n    n1:\n      when: 2024-01-02\n      blob: !!binary aGk=\n"
        "      inf: .inf\n      s: !!set {a, b}\n      m: {1: one}\n"
    )
    data = load_inventory(path).hosts["n1"].to_public_dict()["vars"]
    assert json.loads(json.dumps(data, allow_nan=False)) == {
        "when": "2024-01-02",
        "blob": "aGk=",
        "inf": "inf",
        "s": ["a", "b"],
        "m": {"1": "one"},
    }


def test_vars_are_read_only_all_the_way_down(inv):
    host = inv.hosts["w2"]
    with pytest.raises(TypeError):
        operator.setitem(host.vars, "x", 1)
    with pytest.raises(TypeError):
        host.vars["db"]["host"] = "evil"
    with pytest.raises(dataclasses.FrozenInstanceError):
        host.__setattr__("address", "evil")
    assert isinstance(inv.hosts["r1"].vars["agentctl_roles"], tuple)


def test_group_vars_shared_by_hosts_cannot_leak_between_them(tmp_path):
    path = tmp_path / "inv.yml"
    path.write_text("g:\n  vars: {shared: {k: [1]}}\n  hosts: {a: , b: }\n")
    inv = load_inventory(path)
    assert inv.hosts["a"].vars["shared"] == {"k": (1,)}
    with pytest.raises(AttributeError):
        inv.hosts["a"].vars["shared"]["k"].append(2)


def test_hand_built_host_freezes_and_masks():
    host = Host(
        name="n1",
        address="10.0.0.1",
        become_password="pw-secret",
        vars={"ansible_become_password": "pw-secret", "agentctl_roles": ["worker"]},
    )
    assert "pw-secret" not in repr(host)
    assert host.roles == ("worker",)
    assert host == Host(
        name="n1",
        address="10.0.0.1",
        become_password="pw-secret",
        vars={"ansible_become_password": "pw-secret", "agentctl_roles": ("worker",)},
    )
    assert hash(host) == hash(dataclasses.replace(host))


def test_hand_built_host_with_bad_values_raises_inventory_error():
    host = Host(name="n1", address="n1", vars={"agentctl_expected_gpus": "eight"}, line=4)
    with pytest.raises(InventoryError, match="agentctl_expected_gpus: must be a non-negative"):
        _ = host.expected_gpus


def test_group_defaults():
    group = Group(name="g", vars={"x": [1]})
    assert group.vars == {"x": (1,)}
    assert group.to_public_dict()["vars"] == {"x": [1]}


def test_select_is_exposed_on_the_inventory(inv):
    assert [h.name for h in inv.select("workers:!w1")] == ["w2"]
