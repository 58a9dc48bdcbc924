"""Quality gates run as part of the test command: ruff, mypy --strict, import-linter contracts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("ctl", "collectors", "dashboard", "serving", "playbooks")
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    found = BIN / name
    if found.exists():
        return str(found)
    which = shutil.which(name)
    if which is None:
        pytest.skip(f"{name} not installed (pip install -e '.[dev]')")
    return which


def _run(argv: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600, **kw)  # type: ignore[call-overload, no-any-return]


@pytest.mark.timeout(600)
def test_ruff_lint_is_clean() -> None:
    res = _run([_tool("ruff"), "check", *PACKAGES, "tests", "setup.py"])
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.timeout(600)
def test_ruff_format_is_clean() -> None:
    res = _run([_tool("ruff"), "format", "--check", *PACKAGES, "tests", "setup.py"])
    assert res.returncode == 0, res.stdout + res.stderr


def _link_tree(tmp_path: Path) -> Path:
    """The folders are mapped onto `agentctl.*` by an editable-install import hook that mypy
    and import-linter cannot follow, so give them the installed layout as a tree of links."""
    tree = tmp_path / "src" / "agentctl"
    tree.mkdir(parents=True)
    for pkg in PACKAGES:
        (tree / pkg).symlink_to(ROOT / pkg, target_is_directory=True)
    return tree.parent


@pytest.mark.timeout(900)
def test_mypy_strict_is_clean(tmp_path: Path) -> None:
    env = dict(os.environ, MYPYPATH=str(_link_tree(tmp_path)))
    argv = [
        _tool("mypy"),
        "--config-file",
        str(ROOT / "pyproject.toml"),
        "--cache-dir",
        str(tmp_path / "cache"),
    ]
    for pkg in PACKAGES:
        argv += ["-p", f"agentctl.{pkg}"]
    res = _run(argv, env=env)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.timeout(600)
def test_import_contracts_hold(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(_link_tree(tmp_path)))
    res = _run([_tool("lint-imports"), "--no-cache"], env=env)
    assert res.returncode == 0, res.stdout + res.stderr


def test_installing_puts_no_bare_top_level_module(tmp_path: Path) -> None:
    """A wheel holds `agentctl/...` only: never a bare `serving` or `dashboard`."""
    res = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-w",
            str(tmp_path),
            str(ROOT),
        ]
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    import zipfile

    (wheel,) = tmp_path.glob("agentctl-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"agentctl"}
    assert "agentctl/serving/__init__.py" in names
    assert "agentctl/collectors/store/migrations/env.py" in names
