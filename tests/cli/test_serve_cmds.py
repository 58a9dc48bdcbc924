"""`agentctl serve ...` and `agentctl bench replay ...` reach the standalone serving package."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import children
import jsonschema

from agentctl.ctl.envelope import ENVELOPE_SCHEMA

TRACE = Path(__file__).resolve().parent.parent / "fixtures" / "traces" / "weka_cc_sample6.jsonl.xz"


def _agentctl(*args: str) -> subprocess.CompletedProcess[str]:
    return children.run(  # bench replay starts a cluster: a timeout stops it too
        [sys.executable, "-m", "agentctl.ctl", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_bench_replay_json_envelope_with_ratios():
    res = _agentctl(
        "bench",
        "replay",
        str(TRACE),
        "--workers",
        "3",
        "--limit",
        "3",
        "--policy",
        "round-robin",
        "--policy",
        "kv",
        "--json",
    )
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    jsonschema.validate(doc, ENVELOPE_SCHEMA)
    assert doc["meta"]["schema"] == "agentctl.bench.replay/1"
    assert doc["data"]["workers"] == 3


def test_bench_replay_bad_input_exits_nonzero():
    res = _agentctl("bench", "replay", str(TRACE), "--policy", "nope")
    assert res.returncode == 2
    assert "unknown policy" in res.stderr
    res = _agentctl("bench", "replay", "/nonexistent/trace.jsonl")
    assert res.returncode == 1


def test_serve_passes_arguments_through():
    res = _agentctl("serve", "router", "--help")
    assert res.returncode == 0
    assert "--policy" in res.stdout
