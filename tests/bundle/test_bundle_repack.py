"""An agentctl installed from a wheel (no source tree) can still put its own wheel in a bundle."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import children
import pytest

pytestmark = pytest.mark.timeout(300)

SCRIPT = """
import sys
from pathlib import Path
import agentctl.ctl
from agentctl.ctl.bundle.wheelhouse import find_source_tree, repack_installed
assert find_source_tree() is None, agentctl.ctl.__file__
print(repack_installed(Path(sys.argv[1])))
"""


def test_repack_of_an_installed_wheel_has_the_same_files(
    agentctl_wheel: Path, tmp_path: Path
) -> None:
    target = tmp_path / "site"
    children.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet",
         "--target", str(target), str(agentctl_wheel)],
        check=True, timeout=240,
    )  # fmt: skip
    out = tmp_path / "out"
    out.mkdir()
    res = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert res.returncode == 0, res.stderr
    repacked = Path(res.stdout.strip())
    original = set(zipfile.ZipFile(agentctl_wheel).namelist())
    again = zipfile.ZipFile(repacked)
    assert set(again.namelist()) == original
    for name in original:
        if not name.endswith("/RECORD"):
            assert again.read(name) == zipfile.ZipFile(agentctl_wheel).read(name), name
    assert again.testzip() is None
