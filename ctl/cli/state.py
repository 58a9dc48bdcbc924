"""Per-invocation state shared by commands: global options, and lazily loaded settings,
inventory and store (a command that needs none of them never touches the disk, nor imports
pydantic-settings or SQLAlchemy)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from agentctl.ctl.cli.output import Output
from agentctl.ctl.errors import UsageError

if TYPE_CHECKING:  # imported where first used: `agentctl --help` loads no settings or store
    from agentctl.collectors.store import Store
    from agentctl.ctl.inventory import Host, Inventory
    from agentctl.ctl.settings import Settings


@dataclass
class State:
    inventory_path: str | None = None
    limit: str | None = None
    json: bool = False
    verbose: int = 0
    config_file: Path | None = None
    output: Output = field(default_factory=Output)
    _settings: Settings | None = None
    _inventory: Inventory | None = None
    _store: Store | None = None

    def settings(self) -> Settings:
        if self._settings is None:
            from agentctl.ctl.settings import load_settings

            self._settings = load_settings(self.config_file)
        return self._settings

    def inventory(self) -> Inventory:
        if self._inventory is None:
            from agentctl.ctl.inventory import inventory_from_list, load_inventory

            source = self.inventory_path or (
                str(self.settings().inventory) if self.settings().inventory else None
            )
            if not source:
                raise UsageError(
                    "no inventory: pass --inventory FILE (or a 'host1,host2,' list), "
                    "or set AGENTCTL_INVENTORY"
                )
            path = Path(source).expanduser()
            if "," in source and not path.exists():
                self._inventory = inventory_from_list(source)
            else:
                self._inventory = load_inventory(path)
        return self._inventory

    def select(self, names: list[str] | None = None) -> list[Host]:
        """Hosts named on the command line (patterns allowed), narrowed by --limit."""
        inv = self.inventory()
        hosts = inv.select(",".join(names)) if names else inv.select(None)
        if self.limit:
            allowed = {h.name for h in inv.select(self.limit)}
            hosts = [h for h in hosts if h.name in allowed]
        if not hosts:
            what = ", ".join(names) if names else "the inventory"
            suffix = f" with --limit {self.limit!r}" if self.limit else ""
            raise UsageError(f"no hosts selected from {what}{suffix}")
        return hosts

    def store(self) -> Store:
        if self._store is None:
            from agentctl.collectors.store import Store

            s = self.settings()
            self._store = Store.open(s.effective_database_url(), output_cap=s.output_cap_bytes)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None
