"""Shared fixtures: real sshd fleets on loopback, an isolated agentctl environment, a CLI runner."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

# The run fails, and stops them, if tests leave processes of their own running (leakcheck.py).
from leakcheck import (  # noqa: F401 - pytest finds hooks by name in a conftest
    pytest_sessionfinish,
    pytest_sessionstart,
    pytest_terminal_summary,
)

from agentctl.ctl.cli import main
from agentctl.ctl.fleet import LocalFleet, find_sshd

# CI runs the property tests on a fixed seed, so a red build is reproducible and never a dice
# roll; elsewhere each run explores new inputs (or set HYPOTHESIS_PROFILE).
settings.register_profile("ci", derandomize=True, database=None)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "default")
)

needs_sshd = pytest.mark.skipif(find_sshd() is None, reason="sshd not installed")


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


@pytest.fixture
def agentctl_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every agentctl path into tmp_path, so tests never touch the real user's files."""
    home = tmp_path / "agentctl-home"
    for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
        monkeypatch.setenv(var, str(home / var.lower()))
    for var in list(os.environ):
        if var.startswith("AGENTCTL_"):
            monkeypatch.delenv(var)
    monkeypatch.setenv("AGENTCTL_USE_SSH_CONFIG", "false")
    monkeypatch.setenv("AGENTCTL_LOOK_FOR_KEYS", "false")
    monkeypatch.setenv("AGENTCTL_USE_AGENT", "false")
    monkeypatch.setenv("AGENTCTL_CONNECT_TIMEOUT", "3")
    monkeypatch.setenv("AGENTCTL_RETRY_BACKOFF", "0.05")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")
    return home


@pytest.fixture
def cli(agentctl_env: Path, capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """Run the real CLI entry point in-process; returns exit code and captured streams."""

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
        return CliResult(code, out, err)

    return run


@pytest.fixture(scope="session")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFleet]:
    """24 real sshd nodes on loopback (the issue asks for fan-out to at least 20)."""
    if find_sshd() is None:
        pytest.skip("sshd not installed")
    root = tmp_path_factory.mktemp("fleet")
    fl = LocalFleet(root, 24)
    try:  # start() may fail half-way, with some nodes up
        fl.start()
        yield fl
    finally:
        fl.stop()


@pytest.fixture
def small_fleet(tmp_path: Path) -> Iterator[LocalFleet]:
    """Three nodes a test may restart, re-key or stop; node01 logs at DEBUG1 (jump evidence)."""
    if find_sshd() is None:
        pytest.skip("sshd not installed")
    fl = LocalFleet(tmp_path / "small", 3, prefix="edge", first_address=100)
    fl.nodes[0].log_level = "DEBUG1"
    try:
        fl.start()
        yield fl
    finally:
        fl.stop()
