"""Converters for the variables agentctl understands, shared by the loader and the model.

The loader runs them on every definition (so an error points at the line that wrote the bad
value); the model runs them again on merged values. Each raises ValueError with a message that
shows the offending value, except for secrets, whose messages name only the type.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from .sshargs import find_proxy_jump, parse_jump

ROLES = ("router", "worker")
DEFAULT_INSTALL_ROOT = "/opt/agentctl"
PRIORITY_VAR = "ansible_group_priority"
# Ansible's boolean() vocabulary; YAML 1.1 already turns unquoted yes/no into bools.
_TRUE = frozenset({"yes", "on", "1", "true", "t", "y"})
_FALSE = frozenset({"no", "off", "0", "false", "f", "n"})
_INT = re.compile(r"-?[0-9]+")


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _kind(value: Any) -> str:
    if isinstance(value, list | tuple):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def to_str(value: Any) -> str | None:
    """An optional string; YAML ints (a numeric user name) are accepted as their text."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise ValueError(f"must be a string, got {_kind(value)}")


def to_address(value: Any) -> str | None:
    """A host address: verbatim data, but it must be something ssh can resolve."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"must be a host name or IP address, got {_kind(value)}")
    if not value:
        raise ValueError("must not be empty")
    if any(ch.isspace() for ch in value):
        hint = " (Jinja templates are not evaluated)" if "{{" in value else ""
        raise ValueError(f"{_show(value)} contains whitespace, so it is not a host name{hint}")
    if value.startswith("-"):
        raise ValueError(f"{_show(value)} starts with '-', so it is not a host name")
    return value


def to_port(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ValueError(f"must be an integer 1..65535, got {_show(value)}")
    return value


def to_bool(value: Any) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"must be a boolean (true/false/yes/no), got {_show(value)}")


def to_int(value: Any) -> int:
    """ansible_group_priority: Ansible applies int(), so digit strings count too."""
    if isinstance(value, str) and _INT.fullmatch(value.strip()):
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"must be an integer, got {_show(value)}")
    return value


def to_roles(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        raise ValueError(f"must be a list of roles, got {_show(value)} (use agentctl_role for one)")
    if not isinstance(value, list | tuple):
        raise ValueError(f"must be a list of roles ({', '.join(ROLES)}), got {_kind(value)}")
    roles: list[str] = []
    for item in value:
        role = to_role(item)
        if not role:
            raise ValueError("must not contain an empty role")
        roles.extend(r for r in role if r not in roles)
    return tuple(roles)


def to_role(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, str) or value not in ROLES:
        raise ValueError(f"unknown role {_show(value)}; known roles: {', '.join(ROLES)}")
    return (value,)


def to_gpu_count(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"must be a non-negative integer, got {_show(value)}")
    return value


def to_install_root(value: Any) -> str:
    if value is None:
        return DEFAULT_INSTALL_ROOT
    if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
        raise ValueError(f"must be an absolute path, got {_show(value)}")
    return value


def to_ssh_args(value: Any) -> str | None:
    """ansible_ssh_common/extra_args: validated now so a bad ProxyJump names this line."""
    text = to_str(value)
    if text is not None:
        jump = find_proxy_jump(text)
        if jump is not None:
            parse_jump(jump)
    return text


def to_proxy_jump(value: Any) -> str | None:
    text = to_str(value)
    return None if text is None else parse_jump(text)


#: every variable whose type agentctl checks; other names (agentctl_* included) are free-form
KNOWN: Mapping[str, Callable[[Any], Any]] = {
    "ansible_host": to_address,
    "ansible_ssh_host": to_address,
    "ansible_port": to_port,
    "ansible_ssh_port": to_port,
    "ansible_user": to_str,
    "ansible_ssh_user": to_str,
    "ansible_ssh_private_key_file": to_str,
    "ansible_private_key_file": to_str,
    "ansible_become": to_bool,
    "ansible_become_user": to_str,
    "ansible_become_password": to_str,
    "ansible_become_pass": to_str,
    "ansible_ssh_common_args": to_ssh_args,
    "ansible_ssh_extra_args": to_ssh_args,
    PRIORITY_VAR: to_int,
    "agentctl_roles": to_roles,
    "agentctl_role": to_role,
    "agentctl_expected_gpus": to_gpu_count,
    "agentctl_install_root": to_install_root,
    "agentctl_proxy_jump": to_proxy_jump,
}


def check_var(name: str, value: Any) -> None:
    """Raise ValueError if `name` is a known variable and `value` has the wrong shape."""
    convert = KNOWN.get(name)
    if convert is not None:
        convert(value)
