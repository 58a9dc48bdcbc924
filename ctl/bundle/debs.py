"""Reading .deb files and writing the bundle's apt/ directory from them.

Control data comes from `dpkg-deb --field` where dpkg is installed (it reads every compression
dpkg supports), else from a small reader of the ar archive and its control.tar(.gz|.xz), which
covers what Debian builds (zstd-compressed Ubuntu packages need dpkg-deb).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import shutil
import subprocess
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from agentctl.ctl.bundle.apt import (
    Control,
    ControlError,
    DebChecksums,
    deb_filename,
    package_stanza,
    parse_control,
    render_packages,
    render_release,
)
from agentctl.ctl.errors import UsageError

_AR_MAGIC = b"!<arch>\n"
_AR_HEADER = 60
_MAX_CONTROL = 16 << 20


def checksums(path: Path) -> DebChecksums:
    # MD5 and SHA1 only because Packages files carry them; SHA256 is what apt checks
    md5 = hashlib.md5(usedforsecurity=False)
    sha1 = hashlib.sha1(usedforsecurity=False)
    sha256 = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            size += len(chunk)
            for digest in (md5, sha1, sha256):
                digest.update(chunk)
    return DebChecksums(size, md5.hexdigest(), sha1.hexdigest(), sha256.hexdigest())


def read_control(deb: Path, *, use_dpkg: bool = True) -> Control:
    """The control stanza of `deb`; UsageError naming the file if it is not a readable .deb."""
    dpkg = shutil.which("dpkg-deb") if use_dpkg else None
    try:
        if dpkg:
            res = subprocess.run(
                [dpkg, "--field", str(deb)], capture_output=True, text=True, timeout=60
            )
            if res.returncode != 0:
                raise ControlError(res.stderr.strip() or f"dpkg-deb exit {res.returncode}")
            text = res.stdout
        else:
            with deb.open("rb") as fh:
                text = control_text(fh)
        return parse_control(text)
    except (ControlError, OSError, tarfile.TarError, lzma.LZMAError, EOFError) as exc:
        raise UsageError(f"{deb}: not a readable .deb: {exc}") from None


def control_text(fh: BinaryIO) -> str:
    """./control from a .deb stream: walk the ar members to control.tar.*, then read it."""
    if fh.read(len(_AR_MAGIC)) != _AR_MAGIC:
        raise ControlError("not an ar archive")
    while header := fh.read(_AR_HEADER):
        if len(header) < _AR_HEADER or header[58:60] != b"`\n":
            raise ControlError("truncated ar member header")
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip() or 0)
        if name.startswith("control.tar"):
            if size > _MAX_CONTROL:
                raise ControlError(f"{name} is {size} bytes; too large for control data")
            return _control_from_tar(name, fh.read(size))
        fh.seek(size + (size & 1), io.SEEK_CUR)
    raise ControlError("no control.tar member")


def _control_from_tar(name: str, data: bytes) -> str:
    if name.endswith(".gz"):
        data = gzip.decompress(data)
    elif name.endswith(".xz"):
        data = lzma.decompress(data)
    elif name != "control.tar":
        raise ControlError(f"{name}: compression not supported without dpkg-deb")
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.removeprefix("./") == "control":
                extracted = tar.extractfile(member)
                if extracted is not None:
                    return extracted.read().decode("utf-8")
    raise ControlError("control.tar has no control file")


@dataclass(frozen=True)
class DebInfo:
    filename: str
    package: str
    version: str
    architecture: str
    sha256: str


def write_apt_repo(debs: Sequence[Path], apt_dir: Path, *, date: str) -> list[DebInfo]:
    """Copy `debs` into `apt_dir` under their Debian names; write Packages(.gz) and Release."""
    if not debs:
        raise UsageError("--debs: no .deb files found")
    apt_dir.mkdir(parents=True, exist_ok=True)
    stanzas: list[str] = []
    infos: list[DebInfo] = []
    archs: list[str] = []
    for deb in sorted(debs):
        control = read_control(deb)
        name = deb_filename(control)
        target = apt_dir / name
        if target.exists():
            raise UsageError(f"{deb}: a second package file named {name}")
        shutil.copyfile(deb, target)
        sums = checksums(target)
        stanzas.append(package_stanza(control, name, sums))
        archs.append(control.require("Architecture"))
        infos.append(
            DebInfo(
                name,
                control.require("Package"),
                control.require("Version"),
                control.require("Architecture"),
                sums.sha256,
            )
        )
    packages = render_packages(stanzas).encode()
    (apt_dir / "Packages").write_bytes(packages)
    # mtime=0: identical input gives a byte-identical Packages.gz
    (apt_dir / "Packages.gz").write_bytes(gzip.compress(packages, mtime=0))
    indexes = {name: checksums(apt_dir / name) for name in ("Packages", "Packages.gz")}
    (apt_dir / "Release").write_text(render_release(indexes, date=date, architectures=archs))
    return infos
