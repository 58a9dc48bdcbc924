"""Playbook files: YAML data, read with line numbers, checked before anything runs.

A playbook is a mapping::

    name: provision
    description: packages, users, directories, the Python runtime, the serving package
    hosts: all                 # default host pattern (the command line's --limit narrows it)
    vars: {agentctl_python: python3}   # defaults; inventory variables override them
    tasks:
      - name: state directory
        directory: {path: "{{ agentctl_install_root }}/state", mode: "0750"}
        when: "'worker' in agentctl_roles"
        become: true
        loop: "{{ range(agentctl_workers) | list }}"   # one task per item, as `item`
        no_log: false          # true: no diff or command text of this task is shown or stored
        tags: [python]

Each task names exactly one operation (see `ops.OPERATIONS`); its arguments are Jinja2 strings
rendered per host at run time, so they are checked here only for shape. Errors name the file,
line and field, like the inventory's.
"""

from __future__ import annotations

from collections.abc import Container, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from agentctl.ctl.errors import InventoryError, PlaybookError
from agentctl.ctl.inventory.yamlsource import YamlSource, line_of

#: keys a task may carry besides its one operation
TASK_KEYS = frozenset({"name", "when", "become", "loop", "no_log", "tags"})
PLAYBOOK_KEYS = frozenset({"name", "description", "hosts", "vars", "tasks"})


@dataclass(frozen=True)
class TaskSpec:
    """One task as written (arguments not yet rendered)."""

    name: str
    op: str
    args: Any
    when: str | None = None
    become: bool | None = None
    loop: Any = None
    no_log: bool = False
    tags: tuple[str, ...] = ()
    line: int | None = None


@dataclass(frozen=True)
class Playbook:
    name: str
    path: str
    tasks: tuple[TaskSpec, ...]
    description: str = ""
    hosts: str = "all"
    vars: Mapping[str, Any] = field(default_factory=dict)
    #: directories searched for `template` sources, first match wins
    template_dirs: tuple[Path, ...] = ()

    def select(self, tags: Container[str] | None, skip_tags: Container[str] | None) -> Playbook:
        """The tasks a `--tags` / `--skip-tags` selection keeps (untagged tasks run unless
        tags are given)."""
        kept = tuple(
            t
            for t in self.tasks
            if (tags is None or any(tag in tags for tag in t.tags))
            and not (skip_tags is not None and any(tag in skip_tags for tag in t.tags))
        )
        return Playbook(
            self.name, self.path, kept, self.description, self.hosts, self.vars, self.template_dirs
        )


def load_playbook(
    path: str | Path, operations: Container[str], template_dirs: tuple[Path, ...] = ()
) -> Playbook:
    """Read and check one playbook file. `operations` are the known operation names."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise PlaybookError(f"cannot read playbook: {exc.strerror or exc}", path=str(p)) from None
    except UnicodeDecodeError:
        raise PlaybookError("playbook is not UTF-8 text", path=str(p)) from None
    try:
        src = YamlSource(text, str(p))
    except InventoryError as exc:  # the YAML reader speaks inventory; re-say it for playbooks
        raise PlaybookError(exc.detail, path=str(p), line=exc.line, field=exc.field) from None
    try:
        return _Reader(src, operations).playbook(
            default_name=p.stem, template_dirs=(p.parent / "templates", *template_dirs)
        )
    finally:
        src.close()


class _Reader:
    def __init__(self, src: YamlSource, operations: Container[str]) -> None:
        self.src = src
        self.ops = operations

    def fail(self, message: str, node: Node | None, fld: str | None = None) -> PlaybookError:
        return PlaybookError(
            message, path=self.src.path, line=None if node is None else line_of(node), field=fld
        )

    def value(self, node: Node, fld: str) -> Any:
        try:
            return self.src.construct(node, fld)
        except InventoryError as exc:
            raise self.fail(exc.detail, node, fld) from None

    def text(self, node: Node, fld: str) -> str:
        v = self.value(node, fld)
        if not isinstance(v, str) or not v.strip():
            raise self.fail("must be a non-empty string", node, fld)
        return v

    def playbook(self, *, default_name: str, template_dirs: tuple[Path, ...]) -> Playbook:
        root = self.src.root
        if not isinstance(root, MappingNode):
            raise self.fail("a playbook must be a mapping with a 'tasks' list", root)
        name, description, hosts = default_name, "", "all"
        pvars: dict[str, Any] = {}
        tasks: tuple[TaskSpec, ...] | None = None
        for key, val in self.src.pairs(root):
            k = key.value if isinstance(key, ScalarNode) else None
            if k not in PLAYBOOK_KEYS:
                known = ", ".join(sorted(PLAYBOOK_KEYS))
                raise self.fail(f"unknown key {k!r} (known: {known})", key)
            if k == "name":
                name = self.text(val, "name")
            elif k == "description":
                description = self.text(val, "description")
            elif k == "hosts":
                hosts = self.text(val, "hosts")
            elif k == "vars":
                v = self.value(val, "vars")
                if v is None:
                    v = {}
                if not isinstance(v, dict) or not all(isinstance(x, str) for x in v):
                    raise self.fail("must be a mapping of names to values", val, "vars")
                pvars = v
            elif k == "tasks":
                tasks = self.tasks(val)
        if tasks is None:
            raise self.fail("missing 'tasks'", root)
        return Playbook(name, self.src.path, tasks, description, hosts, pvars, template_dirs)

    def tasks(self, node: Node) -> tuple[TaskSpec, ...]:
        if not isinstance(node, SequenceNode):
            raise self.fail("must be a list of tasks", node, "tasks")
        return tuple(self.task(item, i) for i, item in enumerate(node.value))

    def task(self, node: Node, index: int) -> TaskSpec:
        where = f"tasks[{index}]"
        if not isinstance(node, MappingNode):
            raise self.fail("a task must be a mapping", node, where)
        fields: dict[str, Any] = {"tags": (), "no_log": False}
        op: tuple[str, Any] | None = None
        for key, val in self.src.pairs(node):
            k = key.value if isinstance(key, ScalarNode) else None
            fld = f"{where}.{k}"
            if k == "name":
                fields["name"] = self.text(val, fld)
            elif k == "when":
                fields["when"] = self.condition(val, fld)
            elif k in ("become", "no_log"):
                v = self.value(val, fld)
                if not isinstance(v, bool):
                    raise self.fail("must be true or false", val, fld)
                fields[k] = v
            elif k == "loop":
                v = self.value(val, fld)
                if not isinstance(v, str | list):
                    raise self.fail("must be a list or a template that gives one", val, fld)
                fields["loop"] = v
            elif k == "tags":
                v = self.value(val, fld)
                if isinstance(v, str):
                    v = [v]
                if not isinstance(v, list) or not all(isinstance(t, str) for t in v):
                    raise self.fail("must be a list of names", val, fld)
                fields["tags"] = tuple(v)
            elif isinstance(k, str) and k in self.ops:
                if op is not None:
                    raise self.fail(
                        f"a task runs one operation; it names {op[0]!r} and {k!r}", key, where
                    )
                args = self.value(val, fld)
                if args is None:
                    args = {}
                if not isinstance(args, dict):
                    raise self.fail("operation arguments must be a mapping", val, fld)
                op = (k, args)
            else:
                raise self.fail(f"unknown operation or key {k!r}", key, where)
        if op is None:
            raise self.fail("the task names no operation", node, where)
        fields.setdefault("name", f"{op[0]} #{index + 1}")
        return TaskSpec(op=op[0], args=op[1], line=line_of(node), **fields)

    def condition(self, node: Node, fld: str) -> str:
        v = self.value(node, fld)
        if isinstance(v, bool):
            return "true" if v else "false"
        if not isinstance(v, str) or not v.strip():
            raise self.fail("must be a condition (a Jinja2 expression)", node, fld)
        if "{{" in v:
            raise self.fail("write the condition without '{{ }}', as Ansible does", node, fld)
        return v
