"""A command group that imports a command's module only when that command is looked up.

`agentctl --help` lists every command from the one-line help kept beside its registration
(`LazyCommand.help`), so it imports none of them; `agentctl diag l1 ...` imports `diag_cmd`
alone. tests/cli/test_startup.py checks that each static line equals the first sentence of the
command's real help, so the two cannot drift.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any, ClassVar

import typer
import typer.main
from typer import _click  # the click that typer vendors: its Command, Context, HelpFormatter
from typer.core import TyperCommand, TyperGroup


@dataclass(frozen=True, slots=True)
class LazyCommand:
    """Where a command lives and its line in the parent's help listing.

    `attr` names a `typer.Typer` (registered like `add_typer`) or a function (like
    `command`, with `context_settings`)."""

    module: str
    attr: str
    help: str
    context_settings: dict[str, Any] | None = None

    def load(self, name: str, *, rich_markup_mode: Any) -> _click.Command:
        """Import the module and build the click command as the eager registration did."""
        target = getattr(importlib.import_module(self.module), self.attr)
        holder = typer.Typer(rich_markup_mode=rich_markup_mode)
        if isinstance(target, typer.Typer):
            holder.add_typer(target, name=name)
        else:
            holder.command(name, context_settings=self.context_settings)(target)
        return typer.main.get_group(holder).commands[name]


class _Commands(MutableMapping[str, _click.Command]):
    """The group's `commands`: every name known up front, each command built on first access
    (typer's `get_command` and its did-you-mean suggestions read this mapping)."""

    def __init__(
        self,
        loaded: MutableMapping[str, _click.Command],
        lazy: Mapping[str, LazyCommand],
        rich_markup_mode: Any,
    ) -> None:
        self._loaded = loaded
        self._lazy = lazy
        self._mode = rich_markup_mode

    def __getitem__(self, name: str) -> _click.Command:
        if name not in self._loaded:
            entry = self._lazy[name]  # KeyError for an unknown name, as a dict would
            self._loaded[name] = entry.load(name, rich_markup_mode=self._mode)
        return self._loaded[name]

    def __setitem__(self, name: str, cmd: _click.Command) -> None:
        self._loaded[name] = cmd

    def __delitem__(self, name: str) -> None:
        raise TypeError("lazy commands cannot be removed")

    def __iter__(self) -> Iterator[str]:
        yield from self._lazy
        yield from (n for n in self._loaded if n not in self._lazy)

    def __len__(self) -> int:
        return len(self._lazy) + sum(1 for n in self._loaded if n not in self._lazy)

    def is_loaded(self, name: str) -> bool:
        return name in self._loaded


class LazyGroup(TyperGroup):
    """A `TyperGroup` over `LAZY` (set by a subclass): `typer.Typer(cls=Subclass)`."""

    LAZY: ClassVar[Mapping[str, LazyCommand]] = {}

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**attrs)
        self.commands = _Commands(self.commands, self.LAZY, self.rich_markup_mode)

    def list_commands(self, ctx: _click.Context) -> list[str]:
        return list(self.commands)  # names only: listing imports nothing

    def format_commands(self, ctx: _click.Context, formatter: _click.HelpFormatter) -> None:
        """TyperGroup's listing, with the static help line of every command not yet loaded."""
        rows: list[tuple[str, _click.Command]] = []
        for name in self.list_commands(ctx):
            cmd = self._listed(name)
            if not cmd.hidden:
                rows.append((name, cmd))
        if rows:
            limit = formatter.width - 6 - max(len(name) for name, _ in rows)
            with formatter.section("Commands"):
                formatter.write_dl([(name, cmd.get_short_help_str(limit)) for name, cmd in rows])

    def _listed(self, name: str) -> _click.Command:
        commands = self.commands
        if isinstance(commands, _Commands) and not commands.is_loaded(name):
            # a stand-in that shortens the static line exactly as click shortens a real help
            return TyperCommand(name=name, help=self.LAZY[name].help)
        return commands[name]
