"""Small pieces: host ranges and names, ssh argument parsing, connection converters."""

from __future__ import annotations

import pytest

from agentctl.ctl.inventory.names import check_name, expand_hosts
from agentctl.ctl.inventory.sshargs import find_proxy_jump, parse_jump
from agentctl.ctl.inventory.variables import to_bool, to_port


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("plain", ["plain"]),
        ("n[1:3]", ["n1", "n2", "n3"]),
        ("n[08:10]", ["n08", "n09", "n10"]),
        ("n[8:10]", ["n8", "n9", "n10"]),
        ("n[0:6:3]", ["n0", "n3", "n6"]),
        ("[a:c]x", ["ax", "bx", "cx"]),
        ("[y:B]", ["y", "z", "A", "B"]),  # Ansible's a-zA-Z order
        ("r[1:2]-[a:b]", ["r1-a", "r1-b", "r2-a", "r2-b"]),
    ],
)
def test_expand_hosts(pattern, expected):
    assert expand_hosts(pattern) == expected


@pytest.mark.parametrize(
    ("pattern", "fragment"),
    [
        ("n[1]", "[begin:end]"),
        ("n[1:2:3:4]", "[begin:end]"),
        ("n[1:]", "needs an end value"),
        ("n[1:3:0]", "positive integer step"),
        ("n[a:3]", "numbers ([01:20]) or single letters"),
        ("n[aa:bb]", "single letters"),
        ("n[c:a]", "begin > end"),
        ("n[1:3", "unbalanced"),
        ("n]1:3[", "unbalanced"),
        ("n[1:2]]", "unbalanced"),
    ],
)
def test_expand_hosts_errors(pattern, fragment):
    with pytest.raises(ValueError) as caught:
        expand_hosts(pattern)
    assert fragment in str(caught.value)


@pytest.mark.parametrize("name", ["", "a b", "a\tb", "a\nb", "a:b", "a,b", "a!b", "a&b", "~a"])
def test_bad_names(name):
    with pytest.raises(ValueError):
        check_name(name, "host")


@pytest.mark.parametrize("name", ["node-1.example.com", "10.0.0.1", "gpu_h100", "$(x)", "a;b"])
def test_good_names(name):
    check_name(name, "host")


@pytest.mark.parametrize(
    ("args", "jump"),
    [
        ("-o ProxyJump=j", "j"),
        ("-o 'ProxyJump j'", "j"),
        ("-o 'proxyjump = j'", "j"),
        ("-oProxyJump=j", "j"),
        ("-J j", "j"),
        ("-Jj", "j"),
        ("-CJ j", "j"),  # bundled flags, as getopt allows
        ("-o ProxyJump=first -J second", "first"),  # ssh keeps the first value
        ("-o StrictHostKeyChecking=no -o ProxyCommand='nc %h %p'", None),
        ("-i -J", None),  # the key file is named -J
        ("-p 22 -l -J", None),
        ("-- -J j", None),
        ("", None),
    ],
)
def test_find_proxy_jump(args, jump):
    assert find_proxy_jump(args) == jump


@pytest.mark.parametrize("args", ["-o 'ProxyJump=x", "-J", "-o"])
def test_find_proxy_jump_errors(args):
    with pytest.raises(ValueError):
        find_proxy_jump(args)


@pytest.mark.parametrize(
    "value", ["j", "u@j", "u@j:22", "a@j1,b@j2:2022", "[2001:db8::1]:22", "u@[::1]", "j-1.example"]
)
def test_parse_jump_accepts(value):
    assert parse_jump(value) == value


@pytest.mark.parametrize("value", ["none", "NONE"])
def test_parse_jump_none(value):
    assert parse_jump(value) is None


@pytest.mark.parametrize(
    "value", ["", "a b", "-oProxyCommand=x", "u@", "@j", "j:0", "j:70000", "a,,b", "j;reboot"]
)
def test_parse_jump_rejects(value):
    with pytest.raises(ValueError):
        parse_jump(value)


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), ("yes", True), ("No", False), ("true", True), ("off", False), (1, True)],
)
def test_to_bool(value, expected):
    assert to_bool(value) is expected


@pytest.mark.parametrize("value", ["maybe", 2, [], 1.5])
def test_to_bool_rejects(value):
    with pytest.raises(ValueError):
        to_bool(value)


@pytest.mark.parametrize("value", [0, 65536, "22", True, 22.0])
def test_to_port_rejects(value):
    with pytest.raises(ValueError):
        to_port(value)
