"""Read Ansible's YAML inventory format (and its `host1,host2,` ad-hoc list) into an Inventory.

The structure is walked node by node rather than loaded into dicts, so every complaint can name
the file, the line and the dotted field (`all.children.gpu.hosts.node1.ansible_port`).
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..errors import InventoryError
from .build import build
from .model import Inventory
from .names import check_name, expand_hosts
from .raw import Origin, RawGroup, RawInventory, VarDef
from .variables import check_var, to_address, to_port, to_str
from .yamlsource import YamlSource, is_null, line_of

GROUP_KEYS = ("hosts", "children", "vars")
_LIST_ITEM = re.compile(r"(?:(?P<user>[^@]*)@)?(?P<host>[^@:]*)(?::(?P<port>[^:]*))?")


def load_inventory(path: Path | str) -> Inventory:
    """Load and validate a YAML inventory file; every problem is an InventoryError."""
    where = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InventoryError(f"not UTF-8 text (byte {exc.start})", path=where) from None
    except OSError as exc:
        raise InventoryError(f"cannot read inventory: {exc.strerror or exc}", path=where) from None
    ini_line = _ini_section_line(text)
    if ini_line is not None:
        raise InventoryError(
            "this looks like an INI inventory; only the YAML format is supported (convert it "
            "with `ansible-inventory -i FILE -y --list`)",
            path=where,
            line=ini_line,
        )
    try:
        source = YamlSource(text, where)
        try:
            raw = _Reader(source).read()
        finally:
            source.close()
        return build(raw)
    except RecursionError:
        raise InventoryError("inventory is nested too deeply", path=where) from None


def inventory_from_list(spec: str) -> Inventory:
    """Ansible's ad-hoc `-i 'host1,user@host2:2222,'` form; every host lands in `ungrouped`."""
    raw = RawInventory(path=None)
    seen: dict[str, tuple[str | None, str | None]] = {}
    for index, item in enumerate(spec.split(","), start=1):
        item = item.strip()
        if not item:
            continue
        field = f"item {index}"
        match = _LIST_ITEM.fullmatch(item)
        if match is None:
            raise InventoryError(
                f"{item!r} is not [user@]host[:port] (write IPv6 hosts in an inventory file)",
                field=field,
            )
        host, user, port = match.group("host"), match.group("user"), match.group("port")
        try:
            check_name(host, "host")
            to_address(host)
            to_port(
                None if port is None else int(port) if port.isascii() and port.isdigit() else port
            )
            to_str(user)
        except ValueError as exc:
            raise InventoryError(f"{item!r}: {exc}", field=field) from None
        if host in seen:
            if seen[host] != (user, port):
                raise InventoryError(
                    f"host {host!r} is listed twice with different settings", field=field
                )
            continue
        seen[host] = (user, port)
        origin = Origin(None, field)
        entry = raw.host(host, origin)
        if user is not None:
            entry.vars["ansible_user"] = VarDef(user, origin)
        if port is not None:
            entry.vars["ansible_port"] = VarDef(int(port), origin)
        raw.place("ungrouped", host)
    if not raw.hosts:
        raise InventoryError("host list names no hosts", field="hosts")
    return build(raw)


def _ini_section_line(text: str) -> int | None:
    """Line of a leading `[section]`: valid YAML (a list), but never a YAML inventory."""
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith(("#", ";")):
            return number if re.fullmatch(r"\[[^\[\]]+\]", stripped) else None
    return None


def _kind(node: Node) -> str:
    if isinstance(node, SequenceNode):
        return "a list"
    if isinstance(node, MappingNode):
        return "a mapping"
    return f"{node.value!r}"


class _Reader:
    """Walks the YAML inventory structure into a RawInventory."""

    def __init__(self, source: YamlSource) -> None:
        self.src = source
        self.raw = RawInventory(path=source.path)

    def read(self) -> RawInventory:
        root = self.src.root
        if root is None:
            raise self.src.error(
                "inventory is empty; expected a mapping such as 'all:'", None, None
            )
        if not isinstance(root, MappingNode):
            raise self.src.error(
                f"top level must be a mapping of group names, got {_kind(root)}", root, None
            )
        for key, value in self.src.pairs(root):
            name = self._name(key, "group", None)
            if name == "plugin":
                raise self.src.error(
                    "this is an inventory plugin configuration; only the YAML inventory format "
                    "is supported",
                    key,
                    name,
                )
            self._group(name, key, value, None, name)
        return self.raw

    def _name(self, key: Node, what: str, parent: str | None) -> str:
        if not isinstance(key, ScalarNode) or is_null(key):
            raise self.src.error(f"expected a {what} name", key, parent)
        try:
            check_name(key.value, what)
        except ValueError as exc:
            field = f"{parent}.{key.value}" if parent else key.value
            raise self.src.error(str(exc), key, field) from None
        return str(key.value)

    def _mapping(self, node: Node, field: str, what: str) -> MappingNode | None:
        """The node if it is a mapping, None if it is null; anything else is an error."""
        if is_null(node):
            return None
        if isinstance(node, MappingNode):
            return node
        raise self.src.error(f"{what} must be a mapping, got {_kind(node)}", node, field)

    def _group(self, name: str, key: Node, node: Node, parent: str | None, field: str) -> None:
        origin = Origin(line_of(key), field)
        group = self.raw.group(name, origin)
        if parent is not None:
            self.raw.link(parent, name, origin)
        body = self._mapping(node, field, f"group {name!r}")
        for sub_key, value in self.src.pairs(body) if body is not None else []:
            word = sub_key.value if isinstance(sub_key, ScalarNode) else None
            sub = f"{field}.{word}"
            if word == "hosts":
                self._hosts(group, value, sub)
            elif word == "children":
                self._children(group, value, sub)
            elif word == "vars":
                self._vars(group.vars, value, sub)
            else:
                close = difflib.get_close_matches(str(word), GROUP_KEYS, n=1)
                hint = f"did you mean {close[0]!r}?" if close else "hosts go under 'hosts:'"
                raise self.src.error(
                    f"unknown key {word!r} in group {name!r}; a group has only hosts, children "
                    f"and vars ({hint})",
                    sub_key,
                    sub,
                )

    def _hosts(self, group: RawGroup, node: Node, field: str) -> None:
        body = self._mapping(node, field, "'hosts'")
        for key, value in self.src.pairs(body) if body is not None else []:
            if not isinstance(key, ScalarNode) or is_null(key):
                raise self.src.error("expected a host name", key, field)
            sub = f"{field}.{key.value}"
            try:
                names = expand_hosts(str(key.value))
                for name in names:
                    check_name(name, "host")
            except ValueError as exc:
                raise self.src.error(str(exc), key, sub) from None
            host_vars: dict[str, VarDef] = {}
            if not is_null(value) and not isinstance(value, MappingNode):
                raise self.src.error(
                    f"host {key.value!r} must map to its variables or nothing, got {_kind(value)} "
                    "(set the address with ansible_host)",
                    value,
                    sub,
                )
            self._vars(host_vars, value, sub, host=True)
            for name in names:
                self.raw.host(name, Origin(line_of(key), sub)).vars.update(host_vars)
                self.raw.place(group.name, name)

    def _children(self, group: RawGroup, node: Node, field: str) -> None:
        body = self._mapping(node, field, "'children'")
        for key, value in self.src.pairs(body) if body is not None else []:
            name = self._name(key, "group", field)
            if name == "all":
                raise self.src.error("'all' cannot be a child group", key, f"{field}.all")
            self._group(name, key, value, group.name, f"{field}.{name}")

    def _vars(self, target: dict[str, VarDef], node: Node, field: str, host: bool = False) -> None:
        body = self._mapping(node, field, "'vars'")
        for key, value in self.src.pairs(body) if body is not None else []:
            if not isinstance(key, ScalarNode) or is_null(key) or not key.value:
                raise self.src.error("expected a variable name", key, field)
            name = str(key.value)
            sub = f"{field}.{name}"
            if host and name in GROUP_KEYS:
                raise self.src.error(
                    f"{name!r} under a host is a group keyword; host variables go directly "
                    "under the host name",
                    key,
                    sub,
                )
            data = self.src.construct(value, sub)
            try:
                check_var(name, data)
            except ValueError as exc:
                raise self.src.error(str(exc), key, sub) from None
            target[name] = VarDef(data, Origin(line_of(key), sub))
