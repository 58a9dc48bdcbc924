"""The bundle as one .tar file, and extracting one without trusting its member names.

Members are the bundle's files relative to its root (no leading directory), so
`tar -xf bundle.tar -C DIR` works too. Extraction accepts regular files with plain relative
paths only: no links, devices, absolute paths or `..`, whatever the tar claims.
"""

from __future__ import annotations

import os
import shutil
import tarfile
from pathlib import Path

from agentctl.ctl.bundle.hashing import scan_tree
from agentctl.ctl.bundle.layout import check_relpath
from agentctl.ctl.errors import UsageError, VerificationError


def write_tar(bundle: Path, dest: Path, *, mtime: int) -> Path:
    """`dest` from the files of `bundle`, sorted, owner root, one mtime; written atomically."""
    partial = dest.with_name(dest.name + ".partial")
    try:
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            for rel in scan_tree(bundle).files:
                info = tar.gettarinfo(str(bundle / rel), arcname=rel)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = mtime
                info.mode = 0o644
                with (bundle / rel).open("rb") as fh:
                    tar.addfile(info, fh)
        os.replace(partial, dest)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return dest


def extract_bundle(archive: Path, dest: Path) -> Path:
    """Unpack `archive` into `dest` (absent or empty); VerificationError for any member that
    is not a plain file with a safe relative path. Verify the result with verify_bundle."""
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise UsageError(f"{dest} exists and is not an empty directory")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                if member.isdir():
                    continue
                problem = check_relpath(member.name.removeprefix("./"))
                if not member.isfile():
                    problem = "not a regular file"
                if problem:
                    raise VerificationError(f"{archive}: member {member.name!r}: {problem}")
                target = dest / member.name.removeprefix("./")
                target.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                if source is None:
                    raise VerificationError(f"{archive}: member {member.name!r} has no data")
                with source, target.open("xb") as fh:
                    shutil.copyfileobj(source, fh)
    except (tarfile.TarError, OSError) as exc:
        raise VerificationError(f"{archive}: cannot unpack: {exc}") from None
    return dest
