"""Quality gates run as part of the test command: ruff, mypy --strict, import-linter contracts."""

from __future__ import annotations

import os
import re
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


# A Python warning as setuptools prints it: `path:line: SomeWarning: text`. pip's own
# `WARNING: ...` lines (index locations) and distutils' `warning: byte-compiling is disabled`
# are not about this project's packaging and do not match.
_PY_WARNING = re.compile(r"^\s*\S+:\d+: \w*Warning: .*$", re.MULTILINE)


def _source_files() -> list[str]:
    """Every file the package folders hold, as `agentctl/...` wheel paths."""
    tracked = None
    if (ROOT / ".git").exists() and shutil.which("git"):
        res = _run(["git", "ls-files", "-z", "--", *PACKAGES])
        if res.returncode == 0:
            tracked = [name for name in res.stdout.split("\0") if name]
    if tracked is None:  # an unpacked sdist: no git
        tracked = [
            str(path.relative_to(ROOT))
            for pkg in PACKAGES
            for path in (ROOT / pkg).rglob("*")
            if path.is_file() and "__pycache__" not in path.parts
        ]
    return sorted(f"agentctl/{name}" for name in tracked)


@pytest.fixture(scope="module")
def wheel_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], str]:
    """Build the wheel once from a clean copy (no stale build/ to hide a missing file); its
    file names and pip's verbose log."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for pkg in PACKAGES:
        shutil.copytree(ROOT / pkg, src / pkg, ignore=ignore)
    for name in ("setup.py", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    res = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(tmp / "dist"), str(src)]
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    import zipfile

    (wheel,) = (tmp / "dist").glob("agentctl-*.whl")
    return zipfile.ZipFile(wheel).namelist(), res.stdout + res.stderr


def test_installing_puts_no_bare_top_level_module(wheel_build: tuple[list[str], str]) -> None:
    """A wheel holds `agentctl/...` only: never a bare `serving` or `dashboard`."""
    names, _ = wheel_build
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"agentctl"}
    assert "agentctl/serving/__init__.py" in names
    assert "agentctl/collectors/store/migrations/env.py" in names


def test_the_wheel_holds_every_package_file(wheel_build: tuple[list[str], str]) -> None:
    """Templates, stylesheets, static files, the sample trace, playbooks: a data file that no
    `package_data` glob matches would be missing only on an installed node."""
    names, _ = wheel_build
    missing = sorted(set(_source_files()) - set(names))
    assert not missing, "not in the wheel:\n" + "\n".join(missing)
    assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)


def test_building_the_wheel_prints_no_setuptools_warning(
    wheel_build: tuple[list[str], str],
) -> None:
    """Deprecations (a license table) and ambiguous data folders become errors in a later
    setuptools; fix them when they first appear."""
    _, log = wheel_build
    assert _PY_WARNING.findall(log) == []
