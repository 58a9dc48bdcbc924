"""Digests of files, and the file listing of a bundle directory (the only tree walk we trust).

The walk never follows a symlink and reports anything that is not a regular file, so a bundle
cannot smuggle a link to /etc/shadow or a FIFO past verification.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from agentctl.ctl.bundle.manifest import FileEntry

_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def file_entry(root: Path, relpath: str) -> FileEntry:
    path = root / relpath
    return FileEntry(relpath, sha256_file(path), path.stat().st_size)


@dataclass(frozen=True)
class Tree:
    """Regular files under a root (relative POSIX paths) and everything else found there."""

    files: tuple[str, ...]
    #: relative path -> what it is ("symlink", "special file") for anything not a regular file
    oddities: dict[str, str]


def scan_tree(root: Path) -> Tree:
    files: list[str] = []
    odd: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        for name in list(dirnames):
            full = base / name
            if full.is_symlink():
                odd[full.relative_to(root).as_posix()] = "symlink"
                dirnames.remove(name)
        for name in filenames:
            full = base / name
            rel = full.relative_to(root).as_posix()
            if full.is_symlink():
                odd[rel] = "symlink"
            elif not full.is_file():
                odd[rel] = "special file"
            else:
                files.append(rel)
    return Tree(tuple(sorted(files)), odd)
