"""Names inside a bundle, and the one rule for what a file path in a bundle may look like.

Paths are POSIX, relative and plain (no `..`, no backslash, no control characters), so that the
same string is a safe key in manifest.json, a line of SHA256SUMS that `sha256sum -c` reads
without escaping, and a path that cannot leave the bundle directory when joined to it.
"""

from __future__ import annotations

import re

SCHEMA_VERSION = "agentctl.bundle/1"
MANIFEST = "manifest.json"
SUMS = "SHA256SUMS"
SIGNATURE = "SHA256SUMS.sig"
WHEELS_DIR = "wheels"
LOCK = f"{WHEELS_DIR}/requirements.lock"
APT_DIR = "apt"
PLAYBOOKS_DIR = "playbooks"
SEED_DIR = "seed"
#: not listed anywhere: SHA256SUMS covers the manifest, the signature covers SHA256SUMS
UNLISTED = frozenset({SUMS, SIGNATURE})
#: what a node runs after `verify_bundle`, from the bundle's root
PIP_INSTALL = (
    "pip install --no-index --find-links wheels --require-hashes --no-deps "
    "-r wheels/requirements.lock"
)

_SAFE_PART = re.compile(r"[A-Za-z0-9._+~@=,-]+")


def check_relpath(path: str) -> str | None:
    """Why `path` is not an acceptable bundle path, or None when it is."""
    if not path:
        return "empty path"
    if path.startswith("/"):
        return "absolute path"
    for part in path.split("/"):
        if part in ("", ".", ".."):
            return f"path component {part!r} not allowed"
        if not _SAFE_PART.fullmatch(part):
            return "path has characters outside [A-Za-z0-9._+~@=,-]"
    return None
