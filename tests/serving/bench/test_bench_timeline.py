"""The replay timeline: windows of trace time, per worker and fleet-wide, from the records; and
the `--json` answer carrying it from a short sim replay of the shipped trace slice."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import children
import pytest

from agentctl.serving.bench.metrics import RequestRecord, summarize
from agentctl.serving.bench.timeline import (
    MAX_WINDOWS,
    MIN_WINDOWS,
    build_timeline,
    window_length,
)

SHIPPED = Path(__file__).resolve().parents[3] / "ctl" / "data" / "weka_cc_sample6.jsonl.xz"


def _rec(rid: str, worker: str | None, arrival: float, ttft: float, prompt: int, cached: int,
         *, done: bool = True) -> RequestRecord:  # fmt: skip
    first = arrival + ttft
    return RequestRecord(rid, arrival, prompt, 4, worker=worker, cached_tokens=cached,
                         first_token_s=first, finish_s=first + 1 if done else None)  # fmt: skip


def test_window_length_is_a_1_2_5_step_giving_at_least_the_windows_asked() -> None:
    assert window_length(100.0, 10) == 10.0
    assert window_length(99.0, 10) == 5.0
    assert window_length(1257.7, 17) == 50.0  # 74 s a window -> 50
    assert window_length(3.0, 20) == 0.1
    assert window_length(0.0, 8) == 1.0 and window_length(5.0, 0) == 1.0


def test_windows_by_first_token_with_token_weighted_hit_rate_and_percentiles() -> None:
    recs = [  # first tokens every 2.5 s from 0.5 to 98: 10 s windows (8 asked), 4 in each
        _rec(f"a{i}", "w0" if i % 2 else "w1", 2.5 * i, 0.5, 1000, 0 if i < 20 else 900)
        for i in range(40)
    ]
    recs.append(_rec("big", "w0", 97.0, 0.5, 9000, 9000))  # one long prompt, fully cached
    recs.append(RequestRecord("rej", 5.0, 10**9, 5, rejected=True))
    recs.append(_rec("open", "w0", 6.0, 0.5, 1000, 1000, done=False))  # never finished
    tl = build_timeline(recs, workers=["w0", "w1"])
    assert (tl.t0_s, tl.window_s, tl.windows) == (0.0, 10.0, 10)
    assert tl.fleet.requests == (4,) * 9 + (5,)
    assert sum(tl.fleet.requests) == 41  # rejected and unfinished requests are not counted
    assert tl.fleet.hit_rate[:5] == (0.0,) * 5
    assert tl.fleet.hit_rate[5:9] == (pytest.approx(0.9),) * 4
    # token-weighted: (4 * 900 + 9000) / (4 * 1000 + 9000), not the mean of per-request rates
    assert tl.fleet.hit_rate[9] == pytest.approx(12_600 / 13_000)
    assert tl.fleet.ttft_ms_p50 == (500.0,) * 10 and tl.fleet.ttft_ms_p90 == (500.0,) * 10
    assert list(tl.workers) == ["w0", "w1"]
    assert tl.workers["w0"].requests == (2,) * 9 + (3,)
    assert tl.workers["w1"].requests == (2,) * 10
    for i in range(tl.windows):  # the workers' lines add up to the fleet's
        assert tl.workers["w0"].requests[i] + tl.workers["w1"].requests[i] == tl.fleet.requests[i]
        assert (tl.workers["w0"].cached_tokens[i] + tl.workers["w1"].cached_tokens[i]
                == tl.fleet.cached_tokens[i])  # fmt: skip


def test_empty_windows_and_an_idle_worker_have_no_value_not_zero() -> None:
    recs = [_rec(f"a{i}", "w0", t, 0.25 * (i + 1), 100, 50) for i, t in enumerate((0.0, 0.5, 7.5))]
    tl = build_timeline(recs, workers=["w0", "w1"])
    # first tokens at 0.25, 1.0 and 8.25 s: 8 windows asked, 1 s each, 9 of them
    assert (tl.window_s, tl.windows) == (1.0, 9)
    assert tl.fleet.requests == (1, 1, 0, 0, 0, 0, 0, 0, 1)
    gap = (None,) * 6
    assert tl.fleet.hit_rate == (0.5, 0.5, *gap, 0.5)
    assert tl.fleet.ttft_ms_p50 == (250.0, 500.0, *gap, 750.0)
    assert tl.fleet.ttft_ms_p90 == tl.fleet.ttft_ms_p50
    two = build_timeline(recs[:2], max_windows=1)  # one window: nearest rank of 250, 500
    assert two.fleet.ttft_ms_p50 == (250.0,) and two.fleet.ttft_ms_p90 == (500.0,)
    idle = tl.workers["w1"]  # named by the cluster, never routed to
    assert idle.requests == (0,) * tl.windows and set(idle.hit_rate) == {None}
    assert set(idle.ttft_ms_p90) == {None}


def test_no_requests_and_the_caps() -> None:
    empty = build_timeline([RequestRecord("r", 0.0, 10, 1, rejected=True)], workers=["w0"])
    assert empty.windows == 0 and empty.workers["w0"].requests == ()
    many = [_rec(f"r{i}", f"w{i % 20:02d}", float(i), 0.1, 10, i % 10) for i in range(2000)]
    tl = build_timeline(many, max_workers=16)
    assert tl.windows <= MAX_WINDOWS and sum(tl.fleet.requests) == 2000
    assert len(tl.workers) == 16 and tl.workers_omitted == 4
    assert build_timeline(many, max_windows=5).windows <= 5
    again = build_timeline(list(reversed(many)), max_workers=16)
    assert again == tl  # the same records in any order: the same timeline


def test_summarize_carries_the_timeline_into_json() -> None:
    recs = [_rec(f"a{i}", "w0", float(i), 0.2, 100, 20 * (i % 5)) for i in range(10)]
    res = summarize("kv", recs, workers=["w0", "w1"], oracle_hit_rate=1.0)
    assert res.timeline is not None
    doc = res.to_json()["timeline"]
    assert isinstance(doc, dict)
    assert doc["basis"] == "first token" and doc["windows"] == res.timeline.windows
    assert sum(doc["fleet"]["cached_tokens"]) == res.cached_tokens
    assert sum(doc["fleet"]["prompt_tokens"]) == res.prompt_tokens
    assert set(doc["workers"]) == {"w0", "w1"}
    json.dumps(doc, allow_nan=False)  # null for empty windows, never NaN


def test_bench_replay_json_has_a_timeline_per_policy() -> None:
    argv = [sys.executable, "-m", "agentctl.serving", "bench", "replay", str(SHIPPED),
            "--mode", "sim", "--limit", "2", "--workers", "2",
            "--policy", "round-robin", "--policy", "kv"]  # fmt: skip
    out = children.run([*argv, "--json"], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    policies = json.loads(out.stdout)["data"]["policies"]
    assert [p["policy"] for p in policies] == ["round-robin", "kv"]
    for p in policies:
        tl = p["timeline"]
        assert MIN_WINDOWS <= tl["windows"] <= MAX_WINDOWS
        assert set(tl["workers"]) == {"w0", "w1"}
        assert sum(tl["fleet"]["requests"]) == p["completed"] == 85
        for line in (tl["fleet"], *tl["workers"].values()):
            assert all(len(v) == tl["windows"] for v in line.values())
        rate = sum(tl["fleet"]["cached_tokens"]) / sum(tl["fleet"]["prompt_tokens"])
        assert rate == pytest.approx(p["cached_tokens"] / p["prompt_tokens"])
    rr, kv = (p["timeline"]["fleet"] for p in policies)
    both = [(k, r) for k, r in zip(kv["hit_rate"], rr["hit_rate"], strict=True)
            if k is not None and r is not None]  # fmt: skip
    assert all(k >= r for k, r in both)  # kv hits at least as often all through the run...
    assert sum(k > r + 0.05 for k, r in both) >= 5  # ...and clearly more in several windows
    again = children.run([*argv, "--json"], capture_output=True, text=True, timeout=120,
                         check=False)  # fmt: skip
    assert [p["timeline"] for p in json.loads(again.stdout)["data"]["policies"]] == [
        p["timeline"] for p in policies
    ]  # deterministic in sim mode
    table = children.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert table.returncode == 0 and "timeline" not in table.stdout  # the table is unchanged
