"""Read ~/.ssh/config as OpenSSH would, as far as paramiko allows, and say where it cannot."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import paramiko

from agentctl.ctl.errors import ConfigError

_INCLUDE_RE = re.compile(r"^\s*include\s", re.IGNORECASE)


def load_ssh_config(path: Path | None) -> tuple[Callable[[str], Mapping[str, Any]], list[str]]:
    """A lookup function for host names, plus warnings (paramiko ignores `Include`)."""
    warnings: list[str] = []
    if path is None or not path.exists():
        return (lambda _name: {}), warnings
    try:
        text = path.read_text()
        config = paramiko.SSHConfig.from_text(text)
    except (OSError, paramiko.SSHException, ValueError) as exc:
        raise ConfigError(f"cannot read ssh config {path}: {exc}") from exc
    if any(_INCLUDE_RE.match(line) for line in text.splitlines()):
        warnings.append(
            f"{path}: 'Include' is not followed (paramiko limitation); "
            "put the hosts agentctl needs in the main file or in the inventory"
        )

    def lookup(name: str) -> Mapping[str, Any]:
        found = dict(config.lookup(name))
        # paramiko echoes the asked name as hostname when none is set: keep only real values.
        if found.get("hostname") == name:
            found.pop("hostname")
        return found

    return lookup, warnings
