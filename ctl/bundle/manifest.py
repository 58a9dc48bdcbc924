"""manifest.json and SHA256SUMS as text: building and parsing, no file system access.

The manifest says what the bundle is for (target interpreter and platform) and lists every
payload file with its digest and size; SHA256SUMS repeats the digests in the format
`sha256sum -c` checks by hand on a node without agentctl, and also covers manifest.json, so one
signature over SHA256SUMS vouches for everything.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agentctl.ctl.bundle.layout import MANIFEST, SCHEMA_VERSION, check_relpath

_HEX64 = re.compile(r"[0-9a-f]{64}")


class ManifestError(ValueError):
    """manifest.json or SHA256SUMS is malformed; the message says where."""


@dataclass(frozen=True)
class Target:
    """The interpreter and platform the wheelhouse is for.

    `platforms` empty means "the interpreter running agentctl": pip resolves for it directly.
    """

    python: str
    implementation: str = "cp"
    abi: str | None = None
    platforms: tuple[str, ...] = ()
    #: the platform tag recorded in the manifest (the first of `platforms`, or this machine's)
    platform: str = ""

    @property
    def effective_abi(self) -> str:
        return self.abi or f"{self.implementation}{self.python.replace('.', '')}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "python": self.python,
            "implementation": self.implementation,
            "abi": self.effective_abi,
            "platform": self.platform,
            "platforms": list(self.platforms) or [self.platform],
        }


@dataclass(frozen=True)
class FileEntry:
    path: str
    sha256: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "size": self.size}


@dataclass(frozen=True)
class Manifest:
    schema_version: str
    agentctl_version: str
    created_at: str
    target: Mapping[str, Any]
    files: tuple[FileEntry, ...]
    contents: Mapping[str, Any] = field(default_factory=dict)

    def by_path(self) -> dict[str, FileEntry]:
        return {f.path: f for f in self.files}


def build_manifest(
    files: Iterable[FileEntry],
    *,
    target: Target,
    agentctl_version: str,
    created_at: str,
    contents: Mapping[str, Any] | None = None,
) -> Manifest:
    """A manifest over `files` (sorted by path; duplicates and unsafe paths refused)."""
    ordered = tuple(sorted(files, key=lambda f: f.path))
    seen: set[str] = set()
    for entry in ordered:
        problem = check_relpath(entry.path)
        if problem:
            raise ManifestError(f"{entry.path!r}: {problem}")
        if entry.path in seen:
            raise ManifestError(f"{entry.path}: listed twice")
        seen.add(entry.path)
    return Manifest(
        schema_version=SCHEMA_VERSION,
        agentctl_version=agentctl_version,
        created_at=created_at,
        target=target.to_dict(),
        files=ordered,
        contents=dict(contents or {}),
    )


def manifest_to_json(manifest: Manifest) -> str:
    doc = {
        "schema_version": manifest.schema_version,
        "agentctl_version": manifest.agentctl_version,
        "created_at": manifest.created_at,
        "target": dict(manifest.target),
        "contents": dict(manifest.contents),
        "files": [f.to_dict() for f in manifest.files],
    }
    return json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=True) + "\n"


def parse_manifest(text: str) -> Manifest:
    """The manifest in `text`; ManifestError on any structural problem or unknown schema."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ManifestError(f"{MANIFEST} is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ManifestError(f"{MANIFEST} is not a JSON object")
    schema = doc.get("schema_version")
    if schema != SCHEMA_VERSION:
        raise ManifestError(f"{MANIFEST}: schema_version {schema!r}, expected {SCHEMA_VERSION!r}")
    for key in ("agentctl_version", "created_at"):
        if not isinstance(doc.get(key), str):
            raise ManifestError(f"{MANIFEST}: {key} missing or not a string")
    target = doc.get("target")
    if not isinstance(target, dict):
        raise ManifestError(f"{MANIFEST}: target missing or not an object")
    contents = doc.get("contents", {})
    if not isinstance(contents, dict):
        raise ManifestError(f"{MANIFEST}: contents is not an object")
    raw_files = doc.get("files")
    if not isinstance(raw_files, list):
        raise ManifestError(f"{MANIFEST}: files missing or not a list")
    files = [_file_entry(i, item) for i, item in enumerate(raw_files)]
    if len({f.path for f in files}) != len(files):
        raise ManifestError(f"{MANIFEST}: a path is listed twice")
    return Manifest(
        schema_version=schema,
        agentctl_version=doc["agentctl_version"],
        created_at=doc["created_at"],
        target=target,
        files=tuple(files),
        contents=contents,
    )


def _file_entry(index: int, item: Any) -> FileEntry:
    where = f"{MANIFEST}: files[{index}]"
    if not isinstance(item, dict):
        raise ManifestError(f"{where} is not an object")
    path, digest, size = item.get("path"), item.get("sha256"), item.get("size")
    if not isinstance(path, str) or check_relpath(path):
        raise ManifestError(f"{where}: bad path {path!r}")
    if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
        raise ManifestError(f"{where} ({path}): sha256 is not 64 lowercase hex digits")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ManifestError(f"{where} ({path}): size is not a non-negative integer")
    return FileEntry(path, digest, size)


def render_sums(digests: Mapping[str, str]) -> str:
    """SHA256SUMS text, `<hex>  <path>` sorted by path, as `sha256sum` writes it."""
    lines = []
    for path in sorted(digests):
        problem = check_relpath(path)
        if problem:
            raise ManifestError(f"{path!r}: {problem}")
        lines.append(f"{digests[path]}  {path}\n")
    return "".join(lines)


def parse_sums(text: str) -> dict[str, str]:
    """path -> hex digest from SHA256SUMS text; ManifestError naming the bad line."""
    out: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        digest, sep, path = line.partition("  ")
        if not sep:  # `sha256sum -b` writes `<hex> *<path>`
            digest, sep, path = line.partition(" *")
        if not sep or not _HEX64.fullmatch(digest):
            raise ManifestError(f"SHA256SUMS line {number}: not '<sha256>  <path>'")
        problem = check_relpath(path)
        if problem:
            raise ManifestError(f"SHA256SUMS line {number}: {path!r}: {problem}")
        if path in out:
            raise ManifestError(f"SHA256SUMS line {number}: {path} listed twice")
        out[path] = digest
    return out
