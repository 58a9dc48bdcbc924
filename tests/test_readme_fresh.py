"""README command 1, verbatim, from a clean clone, on a machine made to look freshly installed.

The check itself is `tests/fresh/readme_check.py` (also runnable by hand, see its docstring):
`--fresh` hides every program a debian:12 image lacks (sudo among them) behind copy-on-write
overlays of /usr, /etc and /var in a private mount namespace, so nothing on this machine
changes. It needs root and util-linux's `unshare`; elsewhere it is skipped, loudly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CHECK = Path(__file__).parent / "fresh" / "readme_check.py"

pytestmark = [
    pytest.mark.timeout(1800),
    pytest.mark.skipif(
        os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("git"),
        reason="the fresh-machine check needs root, unshare and git",
    ),
]


def _overlay_works(tmp: Path) -> bool:
    """A private mount namespace with an overlay in it (not in every container)."""
    for d in ("lower", "upper", "work", "merged"):
        (tmp / d).mkdir()
    probe = (f"mount --make-rprivate / && mount -t overlay overlay -o lowerdir={tmp}/lower,"
             f"upperdir={tmp}/upper,workdir={tmp}/work {tmp}/merged")  # fmt: skip
    res = subprocess.run(["unshare", "--mount", "--fork", "sh", "-c", probe],
                         capture_output=True, timeout=30, check=False)  # fmt: skip
    return res.returncode == 0


def test_readme_command_1_runs_on_a_fresh_machine(tmp_path):
    if not _overlay_works(tmp_path):
        pytest.skip("no overlay mounts in a private mount namespace here (a container?)")
    # the check runs with the system's python3, as a newcomer's shell would
    res = subprocess.run(
        [shutil.which("python3") or sys.executable, str(CHECK), "--fresh", "--worktree"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=1750, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:]
    assert "programs hidden" in res.stdout and "exit 0" in res.stdout
    assert "left running" not in res.stdout
    hidden = next(line for line in res.stdout.splitlines() if "programs hidden" in line)
    if os.path.exists("/usr/bin/sudo"):  # this machine has it, a fresh image has not
        assert " sudo" in hidden.split("hidden:")[-1]
