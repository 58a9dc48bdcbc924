"""What every playbook operation is: read the host's state, plan a change, apply it.

`plan` only reads (it runs in `--check` mode too) and returns a `Plan`: the human-readable
changes (empty: nothing to do), an optional diff, and private data for `apply`. `apply` makes
the change and may re-read to verify. Parsing remote output is done by pure functions in each
operation's module, so it is tested on recorded output without a host.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from agentctl.ctl.connector import Become, CommandResult, Connector
from agentctl.ctl.errors import OperationError

A = TypeVar("A", bound="OpArgs")


def _scalar_text(value: Any) -> Any:
    """A rendered `{{ n }}` keeps its type; in an argv or environment it is text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def _text_list(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_scalar_text(v) for v in value]
    return value


def _text_map(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _scalar_text(v) for k, v in value.items()}
    return value


#: argv-like lists and environment maps: numbers from templates become their text
TextList = Annotated[list[str], BeforeValidator(_text_list)]
TextMap = Annotated[dict[str, str], BeforeValidator(_text_map)]


class OpArgs(BaseModel):
    """Base of every operation's arguments: unknown keys are errors (a typo is not ignored)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class Plan:
    changes: list[str] = field(default_factory=list)
    diff: str | None = None
    #: operation-private facts read while planning, handed to `apply`
    data: dict[str, Any] = field(default_factory=dict)
    #: the operation cannot know without running (a command with no guard): always "changed"
    always: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.changes)


@dataclass
class HostContext:
    """One host as operations see it: its session, variables and privilege for this task."""

    conn: Connector
    name: str
    vars: Mapping[str, Any]
    become: Become | None
    timeout: float
    #: where template sources are looked up (rendering is done by the engine's environment)
    files_dirs: Sequence[Path] = ()
    #: files the run keeps on the control side (rendered templates, staged uploads)
    scratch: Path | None = None
    #: the task is `no_log`: no content diffs, no command text in results
    no_log: bool = False
    #: renders a template file of the playbook with this host's variables
    render_template: Callable[[str], str] | None = None

    def run(
        self,
        argv: Sequence[str],
        *,
        become: bool = True,
        stdin: bytes | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
    ) -> CommandResult:
        """Run `argv` (quoted by the connector), with this task's privilege unless `become`
        is False. A non-zero exit is returned, not raised."""
        return self.conn.run(
            list(argv),
            become=self.become if become else None,
            timeout=timeout or self.timeout,
            stdin=stdin,
            env=env,
        )

    def check(self, argv: Sequence[str], what: str, **kw: Any) -> CommandResult:
        """`run`, raising `OperationError` (with the output's tail) on a non-zero exit."""
        res = self.run(argv, **kw)
        if not res.ok:
            raise OperationError(f"{what} failed: {describe_failure(res)}", host=self.name)
        return res

    def write_marker(self, path: str, text: str, what: str) -> None:
        """A small state file (a digest an operation compares next run), replaced atomically."""
        self.sh('printf %s "$2" > "$1.tmp" && mv -f -- "$1.tmp" "$1"', path, text, what=what)

    def sh(self, script: str, *args: str, what: str, become: bool = True) -> CommandResult:
        """A fixed script with its values as positional parameters ($1...): the values are
        never spliced into the script text."""
        return self.check(["sh", "-c", script, "agentctl", *args], what, become=become)


def describe_failure(res: CommandResult, tail: int = 400) -> str:
    out = (res.stderr.strip() or res.stdout.strip())[-tail:]
    return f"exit {res.exit_status}" + (f": {out}" if out else "")


def show_argv(argv: Sequence[str]) -> str:
    return shlex.join(argv)


class Operation(Generic[A]):
    """Subclasses set `name` and `Args`, and implement `plan` and `apply`."""

    name: ClassVar[str]
    Args: type[A]
    #: True for operations whose plan must talk to the host even in check mode (all here);
    #: False for control-side ones
    remote: ClassVar[bool] = True

    def parse(self, raw: Mapping[str, Any]) -> A:
        try:
            return self.Args.model_validate(dict(raw))
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"{loc}: {first['msg']}" if loc else first["msg"]) from None

    def plan(self, ctx: HostContext, args: A) -> Plan:
        raise NotImplementedError

    def apply(self, ctx: HostContext, args: A, plan: Plan) -> str | None:
        raise NotImplementedError


def octal_mode(value: str | int | None) -> str | None:
    """'0644' / '644' / 0o644 -> '644' (as `stat -c %a` prints it); None stays None."""
    if value is None:
        return None
    if isinstance(value, int):
        text = format(value, "o")
    else:
        text = value.strip()
        if not text or not all(c in "01234567" for c in text) or len(text) > 5:
            raise ValueError(f"mode must be octal digits like '0644', got {value!r}")
    text = text.lstrip("0") or "0"
    if len(text) > 4:
        raise ValueError(f"mode out of range: {value!r}")
    return text
