"""Ansible's YAML inventory format, read with line-accurate errors and Ansible's precedence.

Operators keep their existing inventories: `all`/`children`/`hosts`/`vars`, host ranges, group
and host vars, connection variables and host patterns all mean what they mean to Ansible.
"""

from __future__ import annotations

from .loader import inventory_from_list, load_inventory
from .model import Group, Host, Inventory
from .patterns import select_hosts, split_pattern
from .variables import DEFAULT_INSTALL_ROOT, ROLES

__all__ = [
    "DEFAULT_INSTALL_ROOT",
    "ROLES",
    "Group",
    "Host",
    "Inventory",
    "inventory_from_list",
    "load_inventory",
    "select_hosts",
    "split_pattern",
]
