"""Which interpreter and platform a bundle's wheels are for, from flags or this machine."""

from __future__ import annotations

import sys
import sysconfig

from agentctl.ctl.bundle.manifest import Target
from agentctl.ctl.errors import UsageError


def running_python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def running_implementation() -> str:
    """pip's implementation tag of this interpreter (cp for CPython, pp for PyPy)."""
    name = sys.implementation.name
    return {"cpython": "cp", "pypy": "pp"}.get(name, name)


def native_platform() -> str:
    """This machine's platform tag as pip writes it (linux-x86_64 -> linux_x86_64)."""
    return sysconfig.get_platform().replace("-", "_").replace(".", "_")


def make_target(
    python: str | None = None,
    platforms: list[str] | tuple[str, ...] | None = None,
    implementation: str = "cp",
    abi: str | None = None,
) -> Target:
    """The target for `--python/--platform/--implementation/--abi`; defaults: this machine."""
    version = python or running_python()
    parts = version.split(".")
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        raise UsageError(f"--python {version!r}: give MAJOR.MINOR, for example 3.11")
    chosen = tuple(platforms or ())
    return Target(
        python=version,
        implementation=implementation,
        abi=abi,
        platforms=chosen,
        platform=chosen[0] if chosen else native_platform(),
    )
