"""Ed25519 signatures over SHA256SUMS: key loading, signing, checking, and key generation.

The signature file is the raw 64-byte Ed25519 signature, so a node without agentctl can check
it with stock OpenSSL 3 (`openssl pkeyutl -verify -pubin -inkey bundle.pub -rawin
-in SHA256SUMS -sigfile SHA256SUMS.sig`). Keys are read as PEM or OpenSSH; generated keys are
PEM (PKCS#8 private, SubjectPublicKeyInfo public) because that is what OpenSSL reads.
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agentctl.ctl.errors import UsageError, VerificationError

SIGNATURE_SIZE = 64


def load_private_key(path: Path, passphrase: bytes | None = None) -> Ed25519PrivateKey:
    """An Ed25519 private key from a PEM or OpenSSH file; UsageError saying what is wrong."""
    data = _read(path, "signing key")
    try:
        if b"BEGIN OPENSSH PRIVATE KEY" in data:
            key: object = serialization.load_ssh_private_key(data, passphrase)
        else:
            key = serialization.load_pem_private_key(data, passphrase)
    except TypeError as exc:  # encrypted without a passphrase, or a passphrase for a plain key
        raise UsageError(
            f"{path}: {exc}", hint="name the passphrase variable with --sign-key-passphrase-env"
        ) from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise UsageError(f"{path}: not a readable private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"{path}: not an Ed25519 key (bundles are signed with Ed25519 only)")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM or an OpenSSH `ssh-ed25519 AAAA...` line."""
    data = _read(path, "public key").strip()
    try:
        if data.startswith(b"-----BEGIN"):
            key: object = serialization.load_pem_public_key(data)
        else:
            key = serialization.load_ssh_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise UsageError(f"{path}: not a readable public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise UsageError(f"{path}: not an Ed25519 public key")
    return key


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def sign(data: bytes, key: Ed25519PrivateKey) -> bytes:
    return key.sign(data)


def check_signature(data: bytes, signature: bytes, key: Ed25519PublicKey) -> None:
    """VerificationError unless `signature` is `key`'s signature of `data`."""
    if len(signature) != SIGNATURE_SIZE:
        raise VerificationError(
            f"SHA256SUMS.sig: {len(signature)} bytes, not a {SIGNATURE_SIZE}-byte Ed25519 signature"
        )
    try:
        key.verify(signature, data)
    except InvalidSignature:
        raise VerificationError(
            "SHA256SUMS.sig: signature does not match SHA256SUMS for the given public key "
            f"({fingerprint(key)})"
        ) from None


def fingerprint(key: Ed25519PublicKey) -> str:
    """`SHA256:<base64>` of the raw public key, in the style of ssh-keygen -l."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "SHA256:" + base64.b64encode(hashlib.sha256(raw).digest()).decode().rstrip("=")


@dataclass(frozen=True)
class KeyPair:
    private_key: Path
    public_key: Path
    fingerprint: str


def generate_keypair(prefix: Path) -> KeyPair:
    """PREFIX (private, mode 0600, never overwritten) and PREFIX.pub (public), both PEM."""
    private_path, public_path = prefix, prefix.with_name(prefix.name + ".pub")
    for path in (private_path, public_path):
        if path.exists() or path.is_symlink():
            raise UsageError(f"{path} exists; refusing to overwrite a key")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    try:
        # O_EXCL + 0600 at creation: the key is never readable by others, not even briefly
        fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(private_pem)
        fd = os.open(public_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "wb") as fh:
            fh.write(public_pem)
    except OSError as exc:
        raise UsageError(f"cannot write key pair {prefix}: {exc.strerror or exc}") from None
    return KeyPair(private_path, public_path, fingerprint(key.public_key()))
