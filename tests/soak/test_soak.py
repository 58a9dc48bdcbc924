"""The on-demand acceptance run of issue 14: one scenario of `bench soak` per test, each
asserting its bar on a fresh loopback cluster (3 simulated workers and a `kv` router).

    .venv/bin/python -m pytest tests/soak        # about 5 minutes on 2 cores

The normal test command skips these (see conftest.py); `agentctl bench soak` runs the same
scenarios with the full ramp and prints the figures.
"""

from __future__ import annotations

from typing import Any

import pytest

from agentctl.serving.bench.soak import ScenarioResult, SoakOptions, run_scenario
from agentctl.serving.bench.soak_client import raise_nofile

pytestmark = pytest.mark.timeout(600)

OPTS = SoakOptions(
    concurrency=(64, 500, 2000),
    requests_factor=1,
    stop_s=20.0,
    slowloris_s=30.0,
    slowloris_conns=1500,
)


def _run(name: str) -> tuple[ScenarioResult, list[dict[str, Any]]]:
    raise_nofile(2 * max(2000, OPTS.slowloris_conns) + 1024)
    res = run_scenario(name, OPTS)
    assert res.error is None, res.error
    return res, res.rows


def test_ramp_no_failure_no_truncation_at_any_level() -> None:
    res, rows = _run("ramp")
    for row in rows:
        assert row["failed"] == 0, row
        assert row["truncated"] == 0, row
        assert row["ok"] + row["shed"] == row["requests"], row
        assert row["workers_logged_down"] == 0, row
    assert res.passed


def test_kill_and_stop_lose_no_request() -> None:
    res, [row] = _run("kill")
    assert row["failed"] == 0, row
    assert row["truncated"] == 0, row
    assert row["stopped_back"], row
    assert res.passed


def test_poison_prompt_fences_no_worker() -> None:
    res, [row] = _run("poison")
    assert row["failed"] == 0 and row["truncated"] == 0, row
    assert row["workers_seen_down"] == [], row
    assert row["workers_logged_down"] == 0, row
    assert row["poison_status"] is not None and row["poison_status"] < 500, row
    assert res.passed


def test_restart_rebuilds_the_index() -> None:
    res, [row] = _run("restart")
    assert row["confirmed_before"] > 0, row
    assert row["index_recovered_after_s"] is not None, row
    assert row["failed"] == 0 and row["truncated"] == 0, row
    assert res.passed


def test_slowloris_connections_are_closed_and_service_goes_on() -> None:
    res, rows = _run("slowloris")
    for row in rows:
        assert row["open_at_end"] == 0, row
        assert row["probes"] > 0 and row["probes_served"] == row["probes"], row
    assert res.passed
