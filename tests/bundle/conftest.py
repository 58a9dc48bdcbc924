"""Fixtures for bundle tests: real wheels from pip, a real .deb from dpkg-deb, real keys.

Wheels come from whatever index pip is configured with; when pip cannot reach one, the tests
that need wheels skip, saying so (the check runs pip, it does not guess).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import children
import pytest

from agentctl.ctl.bundle import generate_keypair

ROOT = Path(__file__).resolve().parents[2]


def _pip(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return children.run(  # pip's own build subprocesses are stopped on a timeout too
        [sys.executable, "-m", "pip", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


@pytest.fixture(scope="session")
def agentctl_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """agentctl's own wheel, built once from this checkout."""
    dest = tmp_path_factory.mktemp("own-wheel")
    res = _pip("wheel", "--no-deps", "--wheel-dir", str(dest), str(ROOT))
    if res.returncode != 0:
        pytest.skip(
            "pip could not build agentctl's wheel (build backend unreachable?): "
            + res.stderr[-300:]
        )
    (wheel,) = dest.glob("agentctl-*.whl")
    return wheel


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory, agentctl_wheel: Path) -> Path:
    """agentctl's wheel plus httpx and its dependencies: small, pure Python, and enough for
    `import agentctl.serving.cluster` (which imports httpx) in a fresh venv."""
    dest = tmp_path_factory.mktemp("wheelhouse")
    res = _pip("download", "--only-binary=:all:", "--dest", str(dest), "httpx")
    if res.returncode != 0:
        pytest.skip("pip cannot reach a package index: " + res.stderr.strip()[-300:])
    shutil.copy2(agentctl_wheel, dest / agentctl_wheel.name)
    return dest


@pytest.fixture(scope="session")
def deb_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with one tiny .deb (epoch in its version, multi-line description)."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb not installed")
    root = tmp_path_factory.mktemp("deb")
    pkg = root / "pkg"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN" / "control").write_text(
        "Package: agentctl-test-tool\n"
        "Version: 2:1.4-3\n"
        "Architecture: all\n"
        "Maintainer: Ops <ops@example.com>\n"
        "Depends: coreutils\n"
        "Section: admin\n"
        "Priority: optional\n"
        "Description: tiny package for bundle tests\n"
        " second line\n"
        " .\n"
        " after a paragraph break\n"
    )
    (pkg / "usr" / "share" / "agentctl-test-tool").mkdir(parents=True)
    (pkg / "usr" / "share" / "agentctl-test-tool" / "README").write_text("hello\n")
    out = root / "debs"
    out.mkdir()
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "--build", str(pkg), str(out / "tool.deb")],
        check=True,
        capture_output=True,
    )
    return out


@pytest.fixture
def signing_key(tmp_path: Path) -> Path:
    return generate_keypair(tmp_path / "bundle-key").private_key


@pytest.fixture
def operator_pubkey(tmp_path: Path) -> Path:
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen not installed")
    key = tmp_path / "operator"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "op@laptop", "-f", str(key)],
        check=True,
    )
    return key.with_name("operator.pub")
