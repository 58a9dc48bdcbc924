"""Building a bundle: everything goes into OUT.partial, SHA256SUMS and the signature last, and
only a complete directory is renamed to OUT. A failure (pip, a bad .deb, a full disk, Ctrl-C)
removes OUT.partial, so nothing half-built is ever left where a bundle is expected.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agentctl.ctl import __version__
from agentctl.ctl.bundle.archive import write_tar
from agentctl.ctl.bundle.debs import write_apt_repo
from agentctl.ctl.bundle.hashing import file_entry, scan_tree
from agentctl.ctl.bundle.layout import (
    APT_DIR,
    MANIFEST,
    PIP_INSTALL,
    PLAYBOOKS_DIR,
    SEED_DIR,
    SIGNATURE,
    SUMS,
    WHEELS_DIR,
)
from agentctl.ctl.bundle.manifest import (
    Manifest,
    Target,
    build_manifest,
    manifest_to_json,
    render_sums,
)
from agentctl.ctl.bundle.seed import SeedHost, render_seed
from agentctl.ctl.bundle.signing import fingerprint, sign
from agentctl.ctl.bundle.target import running_implementation, running_python
from agentctl.ctl.bundle.wheelhouse import fill_wheels
from agentctl.ctl.bundle.wheels import is_native
from agentctl.ctl.envelope import utc_now_iso
from agentctl.ctl.errors import UsageError

#: written first into OUT.partial: a leftover .partial with it is ours to delete
PARTIAL_MARKER = ".agentctl-bundle-partial"
PLAYBOOK_SUFFIXES = (".yaml", ".yml", ".j2")


class Progress(Protocol):
    def step(self, message: str) -> None:
        """A build phase starts (plain text)."""

    def line(self, text: str) -> None:
        """One line of a subprocess's output (pip), for a live status display."""


class _Quiet:
    def step(self, message: str) -> None:
        pass

    def line(self, text: str) -> None:
        pass


@dataclass(frozen=True)
class BuildOptions:
    out: Path
    target: Target
    wheelhouse: Path | None = None
    agentctl_wheel: Path | None = None
    requirements: Path | None = None
    debs: Path | None = None
    seeds: Sequence[SeedHost] = ()
    sign_key: Ed25519PrivateKey | None = None
    force: bool = False
    tar: bool = False


@dataclass(frozen=True)
class BuildResult:
    path: Path
    manifest: Manifest
    signed: bool
    key_fingerprint: str | None
    archive: Path | None
    warnings: tuple[str, ...] = field(default=())

    def summary(self) -> dict[str, Any]:
        files = self.manifest.files
        return {
            "path": str(self.path),
            "archive": str(self.archive) if self.archive else None,
            "schema_version": self.manifest.schema_version,
            "agentctl_version": self.manifest.agentctl_version,
            "created_at": self.manifest.created_at,
            "target": dict(self.manifest.target),
            "contents": dict(self.manifest.contents),
            "file_count": len(files),
            "total_size": sum(f.size for f in files),
            "signed": self.signed,
            "key_fingerprint": self.key_fingerprint,
            "warnings": list(self.warnings),
        }


def build_bundle(options: BuildOptions, progress: Progress | None = None) -> BuildResult:
    """Build the bundle described by `options` at `options.out`; see the module docstring."""
    report = progress or _Quiet()
    out = options.out
    _check_out(out, options.force)
    archive_path = out.with_name(out.name + ".tar")
    if options.tar and archive_path.exists() and not options.force:
        raise UsageError(f"{archive_path} exists", hint="pass --force to replace it")
    _check_inputs(options)
    staging = _fresh_staging(out)
    now = datetime.now(UTC)
    try:
        contents, warnings = _populate(staging, options, report, now)
        report.step("hashing and writing manifest.json, SHA256SUMS")
        (staging / PARTIAL_MARKER).unlink()
        manifest = _write_index(staging, options, contents, now)
        _replace(out, staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    archive = None
    if options.tar:
        report.step("writing the .tar archive")
        archive = write_tar(out, archive_path, mtime=int(now.timestamp()))
    key = options.sign_key
    return BuildResult(
        path=out,
        manifest=manifest,
        signed=key is not None,
        key_fingerprint=fingerprint(key.public_key()) if key else None,
        archive=archive,
        warnings=tuple(warnings),
    )


def _check_out(out: Path, force: bool) -> None:
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise UsageError(f"--out {out} exists and is not a directory")
    if not out.exists() or not any(out.iterdir()):
        return
    if not force:
        raise UsageError(f"--out {out} is not empty", hint="pass --force to replace that bundle")
    if not (out / MANIFEST).is_file():
        # --force replaces a bundle, never an arbitrary directory someone mistyped
        raise UsageError(f"--out {out} is not empty and holds no {MANIFEST}; refusing to replace")


def _check_inputs(options: BuildOptions) -> None:
    for name, path in (
        ("--wheelhouse", options.wheelhouse),
        ("--debs", options.debs),
    ):
        if path is not None and not path.is_dir():
            raise UsageError(f"{name} {path} is not a directory")
    for name, path in (
        ("--agentctl-wheel", options.agentctl_wheel),
        ("--requirements", options.requirements),
    ):
        if path is not None and not path.is_file():
            raise UsageError(f"{name} {path} is not a file")
    if options.debs is not None and not sorted(options.debs.glob("*.deb")):
        raise UsageError(f"--debs {options.debs} holds no .deb files")


def _fresh_staging(out: Path) -> Path:
    staging = out.with_name(out.name + ".partial")
    if staging.exists() or staging.is_symlink():
        if staging.is_symlink() or not (staging / PARTIAL_MARKER).is_file():
            raise UsageError(f"{staging} exists and was not left by agentctl; remove it")
        shutil.rmtree(staging)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging.mkdir()
    (staging / PARTIAL_MARKER).write_text("an interrupted agentctl bundle build; safe to delete\n")
    return staging


def _replace(out: Path, staging: Path) -> None:
    """Swap `staging` in at `out`: the old bundle is moved aside first, deleted last."""
    if not out.exists():
        os.rename(staging, out)
        return
    aside = Path(tempfile.mkdtemp(prefix=f"{out.name}.old-", dir=out.parent))
    os.rename(out, aside / "bundle")
    os.rename(staging, out)
    shutil.rmtree(aside, ignore_errors=True)


def _populate(
    staging: Path, options: BuildOptions, report: Progress, now: datetime
) -> tuple[dict[str, Any], list[str]]:
    warnings: list[str] = []
    target = options.target
    house = fill_wheels(
        staging / WHEELS_DIR,
        target=target,
        native=is_native(target, running_python(), running_implementation()),
        agentctl_wheel=options.agentctl_wheel,
        wheelhouse=options.wheelhouse,
        extra_requirements=options.requirements,
        on_line=report.line,
        on_step=report.step,
    )
    if house.missing:
        warnings.append(
            "the wheelhouse has no wheel for: " + ", ".join(house.missing) + " (nodes need them)"
        )
    report.step("copying playbooks")
    playbooks = _copy_playbooks(files("agentctl.playbooks"), staging / PLAYBOOKS_DIR)
    contents: dict[str, Any] = {
        "install": PIP_INSTALL,
        "agentctl_wheel": house.agentctl_wheel,
        "wheels": sorted(house.wheels),
        "requirements": list(house.requirements),
        "playbooks": playbooks,
        "debs": [],
        "seeds": [],
    }
    if options.debs is not None:
        report.step(f"writing the apt repository from {options.debs}")
        debs = write_apt_repo(
            sorted(options.debs.glob("*.deb")), staging / APT_DIR, date=format_datetime(now)
        )
        contents["debs"] = [
            {"file": d.filename, "package": d.package, "version": d.version} for d in debs
        ]
    if options.seeds:
        report.step(f"rendering cloud-init seeds for {len(options.seeds)} hosts")
        pem = _public_pem(options.sign_key)
        for seed in options.seeds:
            host_dir = staging / SEED_DIR / seed.name
            host_dir.mkdir(parents=True)
            for name, text in render_seed(
                seed, apt=options.debs is not None, pubkey_pem=pem
            ).items():
                (host_dir / name).write_text(text, encoding="utf-8")
        contents["seeds"] = [seed.name for seed in options.seeds]
    return contents, warnings


def _public_pem(key: Ed25519PrivateKey | None) -> str | None:
    if key is None:
        return None
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem.decode("ascii")


def _copy_playbooks(source: Traversable, dest: Path, prefix: str = "") -> list[str]:
    """YAML and templates of agentctl.playbooks (never Python, caches or markers)."""
    copied: list[str] = []
    for entry in sorted(source.iterdir(), key=lambda e: e.name):
        if entry.name.startswith(".") or entry.name == "__pycache__":
            continue
        rel = f"{prefix}{entry.name}"
        if entry.is_dir():
            copied += _copy_playbooks(entry, dest, rel + "/")
        elif entry.name.endswith(PLAYBOOK_SUFFIXES):
            target = dest / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(entry.read_bytes())
            copied.append(f"{PLAYBOOKS_DIR}/{rel}")
    return copied


def _write_index(
    staging: Path, options: BuildOptions, contents: dict[str, Any], now: datetime
) -> Manifest:
    tree = scan_tree(staging)
    if tree.oddities:
        raise UsageError(f"unexpected non-file in the bundle: {', '.join(tree.oddities)}")
    entries = [file_entry(staging, rel) for rel in tree.files]
    manifest = build_manifest(
        entries,
        target=options.target,
        agentctl_version=__version__,
        created_at=utc_now_iso(now),
        contents=contents,
    )
    manifest_text = manifest_to_json(manifest)
    (staging / MANIFEST).write_text(manifest_text, encoding="utf-8")
    digests = {entry.path: entry.sha256 for entry in entries}
    digests[MANIFEST] = file_entry(staging, MANIFEST).sha256
    sums = render_sums(digests).encode("ascii")
    (staging / SUMS).write_bytes(sums)
    if options.sign_key is not None:
        (staging / SIGNATURE).write_bytes(sign(sums, options.sign_key))
    return manifest
