"""Air-gapped bundles: wheels, playbooks, an apt repository and cloud-init seeds in one
directory that a node can check (SHA256SUMS, Ed25519 signature) before installing anything.

The provision step calls `verify_bundle()` and installs only from the `VerifiedBundle` it
returns; `agentctl bundle build|verify|keygen` are the CLI on top of the same functions.
"""

from __future__ import annotations

from agentctl.ctl.bundle.archive import extract_bundle, write_tar
from agentctl.ctl.bundle.build import BuildOptions, BuildResult, build_bundle
from agentctl.ctl.bundle.layout import PIP_INSTALL, SCHEMA_VERSION
from agentctl.ctl.bundle.manifest import FileEntry, Manifest, Target
from agentctl.ctl.bundle.seed import SeedHost, parse_authorized_keys, render_seed, seed_host
from agentctl.ctl.bundle.signing import (
    KeyPair,
    generate_keypair,
    load_private_key,
    load_public_key,
)
from agentctl.ctl.bundle.target import make_target
from agentctl.ctl.bundle.verify import (
    BundleVerificationError,
    Problem,
    VerifiedBundle,
    verify_bundle,
)

__all__ = [
    "PIP_INSTALL",
    "SCHEMA_VERSION",
    "BuildOptions",
    "BuildResult",
    "BundleVerificationError",
    "FileEntry",
    "KeyPair",
    "Manifest",
    "Problem",
    "SeedHost",
    "Target",
    "VerifiedBundle",
    "build_bundle",
    "extract_bundle",
    "generate_keypair",
    "load_private_key",
    "load_public_key",
    "make_target",
    "parse_authorized_keys",
    "render_seed",
    "seed_host",
    "verify_bundle",
    "write_tar",
]
