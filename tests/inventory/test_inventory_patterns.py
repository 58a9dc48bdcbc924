"""Ansible host patterns, plus a property check of `&` / `!` against plain set algebra."""

from __future__ import annotations

import random
from typing import Any

import pytest
import yaml

from agentctl.ctl.errors import UsageError
from agentctl.ctl.inventory import Inventory, load_inventory, split_pattern

INVENTORY = """
all:
  hosts:
    lone:
  children:
    workers:
      hosts:
        node[1:4]:
    routers:
      hosts:
        router1:
        node4:
    gpu:
      children:
        h100:
          hosts:
            node1:
            node2:
        a100:
          hosts:
            node3:
"""


@pytest.fixture(scope="module")
def inv(tmp_path_factory) -> Inventory:
    path = tmp_path_factory.mktemp("inv") / "inventory.yml"
    path.write_text(INVENTORY)
    return load_inventory(path)


def names(inv: Inventory, pattern: str | None) -> list[str]:
    return [h.name for h in inv.select(pattern)]


ALL = ["lone", "node1", "node2", "node3", "node4", "router1"]


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        (None, ALL),
        ("all", ALL),
        ("*", ALL),
        ("node3", ["node3"]),
        ("workers", ["node1", "node2", "node3", "node4"]),
        ("gpu", ["node1", "node2", "node3"]),  # through child groups
        ("node*", ["node1", "node2", "node3", "node4"]),
        ("node[12]", ["node1", "node2"]),
        ("h1*", ["node1", "node2"]),  # a glob matching a group name
        ("~node[34]", ["node3", "node4"]),
        ("~(router1|lone)", ["lone", "router1"]),
        ("~(router|lone)", ["lone", "node4", "router1"]),  # also the group routers
        ("~ode", []),  # Ansible anchors regexes at the start
        ("~h100|a100", ["node1", "node2", "node3"]),
        ("routers,lone", ["lone", "node4", "router1"]),  # inventory order, not pattern order
        ("routers:lone", ["lone", "node4", "router1"]),
        ("workers:routers", ["node1", "node2", "node3", "node4", "router1"]),  # de-duplicated
        ("workers:!node3", ["node1", "node2", "node4"]),
        ("workers:&gpu", ["node1", "node2", "node3"]),
        ("workers:&gpu:!h100", ["node3"]),
        ("!h100:workers:&gpu", ["node3"]),  # order of operators does not matter
        ("!gpu", ["lone", "node4", "router1"]),  # only exclusions: start from all
        ("&routers", ["node4", "router1"]),
        ("workers,routers,&gpu,!a100", ["node1", "node2"]),
        (" workers , !node1 ", ["node2", "node3", "node4"]),
        ("~node(?:1|2):!node1", ["node2"]),  # ':' inside a regex group is not a separator
        ("nosuchhost", []),
        ("gpu:&routers", []),
        ("workers:!workers", []),
    ],
)
def test_patterns(inv, pattern, expected):
    assert names(inv, pattern) == expected


@pytest.mark.parametrize(
    "pattern",
    ["", "   ", "a,,b", "a:", ",a", "!", "&", "~[", "~(unclosed", "!!a", "&!a", "workers:! "],
)
def test_malformed_patterns_are_usage_errors(inv, pattern):
    with pytest.raises(UsageError):
        inv.select(pattern)


def test_bad_regex_error_names_the_element():
    with pytest.raises(UsageError, match=r"bad regex '~\['"):
        split_pattern("web,~[")


def test_split_pattern_elements():
    parts = [(e.op, e.text) for e in split_pattern("a:&b,!~c{1,2}:d[0:3]")]
    assert parts == [("", "a"), ("&", "b"), ("!", "~c{1,2}"), ("", "d[0:3]")]


def _random_inventory(rng: random.Random, tmp_path) -> tuple[Inventory, dict[str, set[str]]]:
    """Random hosts in random (possibly nested) groups, written as YAML and loaded back."""
    hosts = [f"h{i}" for i in range(rng.randint(1, 12))]
    groups = [f"g{i}" for i in range(rng.randint(1, 5))]
    doc: dict[str, Any] = {"all": {"hosts": {}, "children": {}}}
    members: dict[str, set[str]] = {g: set() for g in groups}
    for group in groups:
        chosen = [h for h in hosts if rng.random() < 0.4]
        doc["all"]["children"][group] = {"hosts": {h: None for h in chosen}}
        members[group].update(chosen)
    if len(groups) > 1 and rng.random() < 0.5:  # nest g1 below g0: g0 gains g1's hosts
        doc["all"]["children"]["g0"]["children"] = {"g1": None}
        members["g0"] |= members["g1"]
    for host in hosts:
        doc["all"]["hosts"][host] = None
    path = tmp_path / f"inv{rng.random()}.yml"
    path.write_text(yaml.safe_dump(doc))
    members["all"] = set(hosts)
    return load_inventory(path), members


def _reference(inv: Inventory, members: dict[str, set[str]], text: str) -> set[str]:
    return members.get(text, {text} if text in inv.hosts else set())


def test_property_exclusion_and_intersection_are_set_algebra(tmp_path):
    rng = random.Random(20240601)
    for _ in range(300):
        inv, members = _random_inventory(rng, tmp_path)
        universe = sorted(members) + list(inv.hosts)
        elements = []
        for _ in range(rng.randint(1, 5)):
            elements.append(rng.choice(["", "", "&", "!"]) + rng.choice(universe))
        pattern = rng.choice([",", ":"]).join(elements)

        plain = [e for e in elements if e[0] not in "&!"] or ["all"]
        expected = set().union(*(_reference(inv, members, e) for e in plain))
        for element in elements:
            if element[0] == "&":
                expected &= _reference(inv, members, element[1:])
            elif element[0] == "!":
                expected -= _reference(inv, members, element[1:])
        got = names(inv, pattern)
        assert got == [h for h in inv.hosts if h in expected], pattern
        assert len(got) == len(set(got))


def test_property_identities(tmp_path):
    rng = random.Random(7)
    for _ in range(100):
        inv, members = _random_inventory(rng, tmp_path)
        for group in members:
            every = names(inv, "all")
            inside = names(inv, group)
            outside = names(inv, f"!{group}")
            assert sorted(inside + outside) == sorted(every)
            assert names(inv, f"{group}:!{group}") == []
            assert names(inv, f"all:&{group}") == inside
            assert names(inv, f"{group}:{group}") == inside
