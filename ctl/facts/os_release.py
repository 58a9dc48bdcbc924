"""`os` facts: distribution from os-release, hostname and machine architecture."""

from __future__ import annotations

import shlex
from typing import Any

from agentctl.ctl.facts._common import sections
from agentctl.ctl.facts.base import FactFamily

# /usr/lib/os-release is the documented fallback when /etc/os-release is absent.
SCRIPT = """\
echo '@@os-release'
cat /etc/os-release 2>/dev/null || cat /usr/lib/os-release 2>/dev/null
echo '@@hostname'
hostname 2>/dev/null || cat /proc/sys/kernel/hostname 2>/dev/null
echo '@@arch'
uname -m"""


def _unquote(value: str) -> str:
    """os-release values use shell quoting; a malformed value is kept verbatim."""
    try:
        return " ".join(shlex.split(value, comments=False, posix=True))
    except ValueError:
        return value.strip("\"'")


def parse_os_release(lines: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, found, value = line.partition("=")
        if found and key.isidentifier():
            out[key] = _unquote(value)
    return out


def _first(lines: list[str]) -> str | None:
    for line in lines:
        if line.strip():
            return line.strip()
    return None


def parse(raw: str) -> dict[str, Any]:
    sec = sections(raw)
    rel = parse_os_release(sec.get("os-release", []))
    return {
        "id": rel.get("ID"),
        "id_like": rel.get("ID_LIKE", "").split(),
        "name": rel.get("NAME"),
        "version_id": rel.get("VERSION_ID"),
        "version_codename": rel.get("VERSION_CODENAME") or rel.get("UBUNTU_CODENAME"),
        "pretty_name": rel.get("PRETTY_NAME"),
        "hostname": _first(sec.get("hostname", [])),
        "architecture": _first(sec.get("arch", [])),
    }


FAMILY = FactFamily(
    name="os",
    script=SCRIPT,
    parse=parse,
    doc="distribution (os-release), hostname, machine architecture",
)
