"""The soak and fault suite runs on demand only: `pytest tests/soak` (or a file or test in it).

It starts clusters, opens thousands of connections and runs for minutes, so the normal test
command (`pytest`, testpaths = tests) collects these tests but skips them, saying how to run
them. `AGENTCTL_SOAK=1` runs them from any command line.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _asked_for(config: pytest.Config) -> bool:
    """True when a command-line path lies inside tests/soak (not just above it)."""
    if os.environ.get("AGENTCTL_SOAK") == "1":
        return True
    for arg in config.args:
        path = Path(config.invocation_params.dir, arg.split("::", 1)[0]).resolve()
        if path == HERE or HERE in path.parents:
            return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _asked_for(config):
        return
    skip = pytest.mark.skip(reason="soak suite: on demand, run `pytest tests/soak`")
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(skip)
