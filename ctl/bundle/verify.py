"""Verifying a bundle before anything installs from it: signature, SHA256SUMS, manifest.

Order matters: with a public key, the signature over SHA256SUMS is checked first and a bad or
missing one stops everything (nothing else in the bundle is trusted yet). Then every file is
hashed against SHA256SUMS, files missing from the bundle and files the bundle has but does not
list are both refused, and manifest.json (covered by SHA256SUMS) must list exactly the same
payload with the same digests and sizes. Every problem is collected, so one run names them all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agentctl.ctl.bundle.hashing import scan_tree, sha256_file
from agentctl.ctl.bundle.layout import (
    APT_DIR,
    LOCK,
    MANIFEST,
    SEED_DIR,
    SIGNATURE,
    SUMS,
    UNLISTED,
    WHEELS_DIR,
)
from agentctl.ctl.bundle.manifest import Manifest, ManifestError, parse_manifest, parse_sums
from agentctl.ctl.bundle.signing import check_signature, fingerprint, load_public_key
from agentctl.ctl.errors import VerificationError


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"path": self.path, "message": self.message}

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class BundleVerificationError(VerificationError):
    """The bundle did not verify; `problems` names every file at fault."""

    def __init__(
        self,
        problems: Sequence[Problem],
        *,
        bundle: Path,
        signature: str = "not checked",
        checked: Sequence[str] = (),
    ) -> None:
        first = str(problems[0])
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        super().__init__(f"bundle {bundle} does not verify: {first}{more}")
        self.problems = tuple(problems)
        self.bundle = bundle
        self.signature = signature
        self.checked = tuple(checked)

    def report(self) -> dict[str, Any]:
        return {
            "path": str(self.bundle),
            "ok": False,
            "signature": self.signature,
            "checked": list(self.checked),
            "problems": [p.to_dict() for p in self.problems],
        }


@dataclass(frozen=True)
class VerifiedBundle:
    """A bundle that verified. Use its paths, not paths of your own making, to install."""

    path: Path
    manifest: Manifest
    #: "verified" (against the given key), "unchecked" (signed, no key given), "absent"
    signature: str
    key_fingerprint: str | None
    checked: tuple[str, ...] = field(default=())

    def file(self, relpath: str) -> Path:
        """The path of a file the bundle lists; VerificationError for any other name."""
        if relpath not in self.manifest.by_path():
            raise VerificationError(f"{relpath}: not a file of bundle {self.path}")
        return self.path / relpath

    @property
    def wheels_dir(self) -> Path:
        return self.path / WHEELS_DIR

    @property
    def lock(self) -> Path:
        return self.file(LOCK)

    @property
    def apt_dir(self) -> Path | None:
        return self.path / APT_DIR if f"{APT_DIR}/Packages" in self.manifest.by_path() else None

    def seed_dir(self, host: str) -> Path | None:
        seeded = f"{SEED_DIR}/{host}/user-data" in self.manifest.by_path()
        return self.path / SEED_DIR / host if seeded else None

    def report(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "ok": True,
            "signature": self.signature,
            "key_fingerprint": self.key_fingerprint,
            "agentctl_version": self.manifest.agentctl_version,
            "created_at": self.manifest.created_at,
            "target": dict(self.manifest.target),
            "checked": list(self.checked),
            "problems": [],
        }


def verify_bundle(
    path: Path | str, pubkey: Ed25519PublicKey | Path | str | None = None
) -> VerifiedBundle:
    """Check the bundle at `path`; BundleVerificationError (exit 6) naming every bad file.

    `pubkey` (a key or a PEM/OpenSSH public key file): the signature must be present and valid.
    Without one, a signature is reported "unchecked" and integrity rests on SHA256SUMS alone.
    """
    root = Path(path)
    key = load_public_key(Path(pubkey)) if isinstance(pubkey, str | Path) else pubkey
    if not root.is_dir():
        raise BundleVerificationError([Problem(str(root), "not a directory")], bundle=root)
    tree = scan_tree(root)
    present = set(tree.files)

    signature = "absent"
    if key is not None:
        if SUMS not in present or SIGNATURE not in present:
            missing = SUMS if SUMS not in present else SIGNATURE
            why = "missing, but a public key was given: the bundle must be signed"
            raise BundleVerificationError([Problem(missing, why)], bundle=root, signature="missing")
        sig_state = f"invalid ({fingerprint(key)})"
        try:
            check_signature((root / SUMS).read_bytes(), (root / SIGNATURE).read_bytes(), key)
        except VerificationError as exc:
            raise BundleVerificationError(
                [Problem(SIGNATURE, exc.message.removeprefix(f"{SIGNATURE}: "))],
                bundle=root,
                signature=sig_state,
            ) from None
        signature = "verified"
    elif SIGNATURE in present:
        signature = "unchecked"

    problems = [
        Problem(rel, f"{kind} not allowed in a bundle") for rel, kind in tree.oddities.items()
    ]
    if SUMS not in present:
        problems.append(Problem(SUMS, "missing"))
        raise BundleVerificationError(problems, bundle=root, signature=signature)
    try:
        sums = parse_sums((root / SUMS).read_text(encoding="utf-8"))
    except (ManifestError, UnicodeDecodeError) as exc:
        problems.append(Problem(SUMS, str(exc)))
        raise BundleVerificationError(problems, bundle=root, signature=signature) from None

    digests: dict[str, str] = {}
    for rel, expected in sums.items():
        if rel in UNLISTED:
            problems.append(Problem(rel, "must not be listed in SHA256SUMS"))
        elif rel not in present:
            problems.append(Problem(rel, "missing (listed in SHA256SUMS)"))
        else:
            digests[rel] = sha256_file(root / rel)
            if digests[rel] != expected:
                problems.append(Problem(rel, f"sha256 {digests[rel]}, SHA256SUMS says {expected}"))
    for rel in sorted(present - set(sums) - UNLISTED):
        problems.append(Problem(rel, "not listed in SHA256SUMS (extra file)"))

    manifest = _check_manifest(root, sums, digests, problems)
    checked = tuple(sorted(digests))
    if problems or manifest is None:
        raise BundleVerificationError(problems, bundle=root, signature=signature, checked=checked)
    return VerifiedBundle(
        path=root,
        manifest=manifest,
        signature=signature,
        key_fingerprint=fingerprint(key) if key is not None else None,
        checked=checked,
    )


def _check_manifest(
    root: Path, sums: dict[str, str], digests: dict[str, str], problems: list[Problem]
) -> Manifest | None:
    if MANIFEST not in digests:
        # listed but absent, or present but unlisted, was reported above; absent and unlisted not
        if MANIFEST not in sums and not (root / MANIFEST).exists():
            problems.append(Problem(MANIFEST, "missing"))
        return None
    try:
        manifest = parse_manifest((root / MANIFEST).read_text(encoding="utf-8"))
    except (ManifestError, UnicodeDecodeError) as exc:
        problems.append(Problem(MANIFEST, str(exc)))
        return None
    listed = manifest.by_path()
    payload = set(sums) - {MANIFEST} - UNLISTED
    for rel in sorted(payload - set(listed)):
        problems.append(Problem(rel, "in SHA256SUMS but not in manifest.json"))
    for rel, entry in sorted(listed.items()):
        if rel not in payload:
            problems.append(Problem(rel, "in manifest.json but not in SHA256SUMS"))
            continue
        if entry.sha256 != sums[rel]:
            problems.append(Problem(rel, "manifest.json and SHA256SUMS disagree on its sha256"))
        if rel in digests and (root / rel).stat().st_size != entry.size:
            size = (root / rel).stat().st_size
            problems.append(Problem(rel, f"size {size}, manifest.json says {entry.size}"))
    return manifest
