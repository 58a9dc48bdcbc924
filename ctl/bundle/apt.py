"""A flat apt repository as text: control-file parsing, Packages stanzas and a Release file.

Written here rather than by dpkg-scanpackages or apt-ftparchive so a bundle builds on any
machine (a Mac, a CI runner without dpkg-dev). The stanzas carry what dpkg-scanpackages
writes: the package's control fields, then Filename, Size, MD5sum, SHA1 and SHA256, with
Description last. apt reads such a repository as `deb [trusted=yes] file:/path/apt ./`; its
integrity comes from the bundle's SHA256SUMS (and signature), checked before apt is pointed at it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

_FIELD = re.compile(r"^([A-Za-z0-9][A-Za-z0-9-]*):[ \t]*(.*)$")
_SAFE_NAME = re.compile(r"[a-z0-9][a-z0-9.+-]*")
_SAFE_VERSION = re.compile(r"[A-Za-z0-9.+~:-]+")
_CHECKSUM_FIELDS = ("Filename", "Size", "MD5sum", "SHA1", "SHA256")


class ControlError(ValueError):
    """A .deb's control data is malformed or lacks a required field."""


@dataclass(frozen=True)
class Control:
    """A control stanza as (field, value) pairs in file order; values keep continuation lines."""

    fields: tuple[tuple[str, str], ...]

    def get(self, name: str) -> str | None:
        for key, value in self.fields:
            if key.lower() == name.lower():
                return value
        return None

    def require(self, name: str) -> str:
        value = self.get(name)
        if not value:
            raise ControlError(f"control field {name} missing")
        return value


def parse_control(text: str) -> Control:
    """The first stanza of a Debian control file (RFC 822 style, continuation lines kept)."""
    fields: list[tuple[str, str]] = []
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        if line[0] in " \t":
            if not fields:
                raise ControlError("continuation line before any field")
            key, value = fields[-1]
            fields[-1] = (key, value + "\n" + line)
            continue
        match = _FIELD.match(line)
        if not match:
            raise ControlError(f"not a control field: {line[:60]!r}")
        fields.append((match.group(1), match.group(2).rstrip()))
    if not fields:
        raise ControlError("empty control file")
    control = Control(tuple(fields))
    for name in ("Package", "Version", "Architecture"):
        control.require(name)
    if not _SAFE_NAME.fullmatch(control.require("Package")):
        raise ControlError(f"bad package name {control.require('Package')!r}")
    if not _SAFE_VERSION.fullmatch(control.require("Version")):
        raise ControlError(f"bad version {control.require('Version')!r}")
    if not _SAFE_NAME.fullmatch(control.require("Architecture")):
        raise ControlError(f"bad architecture {control.require('Architecture')!r}")
    return control


def deb_filename(control: Control) -> str:
    """`name_version_arch.deb` as Debian names it (the epoch is not part of file names)."""
    version = control.require("Version")
    _, _, version = version.rpartition(":")
    return f"{control.require('Package')}_{version}_{control.require('Architecture')}.deb"


@dataclass(frozen=True)
class DebChecksums:
    size: int
    md5: str
    sha1: str
    sha256: str


def package_stanza(control: Control, filename: str, sums: DebChecksums) -> str:
    """One Packages entry: control fields, checksums, Description last; ends with newline."""
    lines: list[str] = []
    description: str | None = None
    for key, value in control.fields:
        if key.lower() == "description":
            description = value
        elif key not in _CHECKSUM_FIELDS:
            lines.append(f"{key}: {value}")
    lines += [
        f"Filename: ./{filename}",
        f"Size: {sums.size}",
        f"MD5sum: {sums.md5}",
        f"SHA1: {sums.sha1}",
        f"SHA256: {sums.sha256}",
    ]
    if description is not None:
        lines.append(f"Description: {description}")
    return "\n".join(lines) + "\n"


def render_packages(stanzas: Iterable[str]) -> str:
    return "\n".join(stanzas)


def parse_packages(text: str) -> list[dict[str, str]]:
    """Packages text back into one dict per stanza (for checks and the provision step)."""
    blocks = re.split(r"\n[ \t]*\n", text.strip())
    return [dict(parse_control(block).fields) for block in blocks if block.strip()]


def render_release(
    indexes: Mapping[str, DebChecksums], *, date: str, architectures: Sequence[str]
) -> str:
    """A flat repository's Release file listing Packages and Packages.gz by MD5 and SHA256.

    `date` is RFC 2822 (`Sat, 23 Nov 2024 14:00:00 UTC`), as apt expects.
    """
    lines = [
        "Origin: agentctl",
        "Label: agentctl bundle",
        f"Date: {date}",
        f"Architectures: {' '.join(sorted(set(architectures)))}",
        "Description: packages shipped in an agentctl air-gapped bundle",
        "MD5Sum:",
    ]
    lines += [f" {s.md5} {s.size} {name}" for name, s in sorted(indexes.items())]
    lines.append("SHA256:")
    lines += [f" {s.sha256} {s.size} {name}" for name, s in sorted(indexes.items())]
    return "\n".join(lines) + "\n"
