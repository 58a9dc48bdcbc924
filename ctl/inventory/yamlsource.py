"""YAML text to a node graph that keeps line numbers, with the checks PyYAML does not make.

`yaml.compose` (safe loader) keeps every node's position, which the loader needs to name the line
of a bad value. Before anything is read we reject what the plain loader would accept silently:
duplicate keys (the second one would win unseen), recursive aliases and alias bombs.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.reader import ReaderError

from ..errors import InventoryError

#: expanded size limit (nodes, aliases counted each time they are used)
MAX_NODES = 1_000_000
NULL_TAG = "tag:yaml.org,2002:null"
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    """SafeLoader plus Ansible's `!unsafe` (a plain value here) and a clear `!vault` error."""


def _unsafe(loader: _Loader, node: Node) -> Any:
    if isinstance(node, ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, SequenceNode):
        return loader.construct_sequence(node, deep=True)
    if isinstance(node, MappingNode):
        return loader.construct_mapping(node, deep=True)
    raise ConstructorError(None, None, "cannot read this !unsafe value", node.start_mark)


def _vault(loader: _Loader, node: Node) -> Any:
    raise ConstructorError(
        None,
        None,
        "ansible-vault values (!vault) are not supported; pass secrets another way",
        node.start_mark,
    )


_Loader.add_constructor("!unsafe", _unsafe)
_Loader.add_constructor("!vault", _vault)


def line_of(node: Node) -> int | None:
    mark = node.start_mark
    return None if mark is None else mark.line + 1


def is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == NULL_TAG


class YamlSource:
    """One parsed inventory file; raises InventoryError for anything that is not clean YAML."""

    def __init__(self, text: str, path: str) -> None:
        self.path = path
        try:  # the reader checks every character before it reads one (a control byte...)
            self._loader = _Loader(text)
            self.root: Node | None = self._loader.get_single_node()
        except ReaderError as exc:
            raise self.reader_error(exc, text) from None
        except yaml.MarkedYAMLError as exc:
            raise self.yaml_error(exc) from None
        except yaml.YAMLError as exc:
            raise InventoryError(f"invalid YAML: {exc}", path=path) from None
        if self.root is not None:
            self._check(self.root, "", set(), {})

    def close(self) -> None:
        self._loader.dispose()

    def reader_error(self, exc: ReaderError, text: str) -> InventoryError:
        """A character YAML does not allow (ESC, NUL, other controls): named by its code and
        found by line and column, since PyYAML reports only an offset into the text."""
        pos = max(0, min(exc.position, len(text)))
        line = text.count("\n", 0, pos) + 1
        column = pos - (text.rfind("\n", 0, pos) + 1) + 1
        char = (
            exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "?")
        )
        return InventoryError(
            f"invalid YAML: character U+{char:04X} is not allowed at column {column}",
            path=self.path,
            line=line,
        )

    def yaml_error(
        self, exc: yaml.MarkedYAMLError, field: str | None = None, what: str = "invalid YAML"
    ) -> InventoryError:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "syntax error"
        if exc.context and exc.problem:
            problem = f"{problem} ({exc.context})"
        if mark is None:
            return InventoryError(f"{what}: {problem}", path=self.path, field=field)
        return InventoryError(
            f"{what}: {problem} at column {mark.column + 1}",
            path=self.path,
            line=mark.line + 1,
            field=field,
        )

    def error(self, message: str, node: Node | None, field: str | None) -> InventoryError:
        return InventoryError(
            message, path=self.path, line=None if node is None else line_of(node), field=field
        )

    def pairs(self, node: MappingNode) -> list[tuple[Node, Node]]:
        """Key/value nodes with `<<` merge keys applied (explicit keys win, as in YAML)."""
        try:
            self._loader.flatten_mapping(node)
        except yaml.MarkedYAMLError as exc:
            raise self.yaml_error(exc) from None
        out: dict[object, tuple[Node, Node]] = {}
        for key, value in node.value:
            out[key.value if isinstance(key, ScalarNode) else id(key)] = (key, value)
        return list(out.values())

    def construct(self, node: Node, field: str) -> Any:
        """The Python value of a node (safe types only)."""
        try:
            return self._loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            raise self.yaml_error(exc, field, "cannot read value") from None

    def _check(self, node: Node, path: str, active: set[int], sizes: dict[int, int]) -> int:
        """Expanded size of `node`; raises on duplicate keys and recursive aliases."""
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in active:
            raise self.error("recursive YAML alias", node, path or None)
        active.add(id(node))
        total = 1
        if isinstance(node, MappingNode):
            seen: dict[str, int | None] = {}
            for key, value in node.value:
                sub = path
                if isinstance(key, ScalarNode) and key.tag != _MERGE_TAG:
                    if key.value in seen:
                        raise self.error(
                            f"duplicate key {key.value!r} (lines {seen[key.value]} and "
                            f"{line_of(key)})",
                            key,
                            path or None,
                        )
                    seen[key.value] = line_of(key)
                    sub = f"{path}.{key.value}" if path else key.value
                elif not isinstance(key, ScalarNode):
                    total += self._check(key, path, active, sizes)
                total += self._check(value, sub, active, sizes)
        elif isinstance(node, SequenceNode):
            for index, item in enumerate(node.value):
                total += self._check(item, f"{path}[{index}]", active, sizes)
        active.discard(id(node))
        if total > MAX_NODES:
            raise self.error(
                f"YAML aliases expand to more than {MAX_NODES} nodes", node, path or None
            )
        sizes[id(node)] = total
        return total
