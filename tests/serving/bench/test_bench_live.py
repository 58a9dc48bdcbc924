"""`--mode live`: the real router and worker processes on loopback, driven on the wall clock."""

from __future__ import annotations

import asyncio
import json
import sys
from dataclasses import replace
from pathlib import Path

import children
import pytest

from agentctl.serving.bench.live import LiveOptions, replay, request_body, run_live
from agentctl.serving.bench.sim import run_sim
from agentctl.serving.bench.workload import Workload, load_workload
from agentctl.serving.cluster import ClusterError, ClusterSpec, LocalCluster, free_port
from agentctl.serving.engine import EngineConfig

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "traces"
WEKA = FIX / "weka_cc_sample6.jsonl.xz"
FAST = LiveOptions(time_scale=0.05, request_timeout_s=60.0)


def _short(wl: Workload, requests: int, max_output: int) -> Workload:
    """The first `requests` requests of each root session, outputs capped, sub-agents dropped:
    a live run of a few seconds with the same prefix structure as the trace."""
    sessions = tuple(
        replace(
            s,
            requests=tuple(
                replace(r, output_tokens=min(r.output_tokens, max_output))
                for r in s.requests[:requests]
            ),
            children=(),
        )
        for s in wl.sessions
    )
    return replace(wl, sessions=sessions)


@pytest.fixture(scope="module")
def one_session() -> Workload:
    return _short(load_workload(WEKA, limit=1, think_scale=0.0), requests=8, max_output=4)


def test_request_body_is_trace_replay_completion() -> None:
    from agentctl.serving.types import RequestSpec

    spec = RequestSpec("s#0", (1, 2), 150, 7, session_id="s")
    body = request_body(spec)
    assert body["block_hashes"] == [1, 2] and body["prompt_tokens"] == 150
    assert body["max_tokens"] == 7 and body["stream"] is True
    assert body["nvext"] == {"session_control": {"session_id": "s"}}


def test_kv_keeps_a_conversation_on_one_worker_round_robin_spreads_it(
    one_session: Workload,
) -> None:
    kv = run_live(one_session, policy_name="kv", workers=3, options=FAST, keep_records=True)
    rr = run_live(
        one_session, policy_name="round-robin", workers=3, options=FAST, keep_records=True
    )
    for res in (kv, rr):
        assert (res.completed, res.rejected, res.extra["failed"]) == (8, 0, 0.0), res.policy
        assert all(r.first_token_s is not None and r.worker for r in res.records)
        assert res.ttft_ms.p50 > 0
    assert len({r.worker for r in kv.records}) == 1
    assert len({r.worker for r in rr.records}) == 3
    # the engines' own counters: kv reuses the growing prefix, round-robin recomputes it on
    # every worker it has not visited yet
    assert kv.hit_rate > rr.hit_rate
    sim = run_sim(one_session, policy_name="kv", workers=3)
    assert kv.hit_rate == pytest.approx(sim.hit_rate, abs=0.01)
    assert kv.oracle_hit_rate == pytest.approx(sim.oracle_hit_rate)


def test_oversized_request_is_recorded_rejected_and_the_session_goes_on(
    one_session: Workload,
) -> None:
    biggest = max(r.prompt_tokens for r in one_session.sessions[0].requests)
    capacity = (biggest // 64) - 2  # the largest prompts cannot fit, the first ones can
    assert one_session.sessions[0].requests[0].prompt_tokens < capacity * 64
    res = run_live(
        one_session,
        policy_name="kv",
        workers=1,
        engine_config=EngineConfig(capacity_blocks=capacity),
        options=FAST,
        keep_records=True,
    )
    assert res.completed + res.rejected == 8
    assert res.rejected >= 1 and res.extra["failed"] == 0.0
    refused = [r for r in res.records if r.rejected]
    assert all(r.reject_reason.startswith("HTTP 400") for r in refused), refused


def test_unreachable_router_fails_every_request_without_raising(one_session: Workload) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    records, lags = asyncio.run(replay(one_session, url, time_scale=0.01))
    assert len(records) == 8 and len(lags) == 8
    assert all(r.rejected and "Connect" in r.reject_reason for r in records)


def test_cluster_that_cannot_start_says_why(tmp_path: Path) -> None:
    spec = ClusterSpec(workers=1, worker_args=["--block-size", "0"])
    with pytest.raises(ClusterError, match="w0 did not become healthy"):
        LocalCluster(spec, workdir=tmp_path).start(timeout_s=20)
    assert (tmp_path / "w0.log").read_text()


def test_cluster_stop_leaves_no_process(tmp_path: Path) -> None:
    cluster = LocalCluster(ClusterSpec(workers=1, time_scale=0.01), workdir=tmp_path)
    with cluster:
        procs = [cluster.workers["w0"].popen, cluster.router.popen if cluster.router else None]
        assert all(p is not None and p.poll() is None for p in procs)
    assert all(p is not None and p.poll() is not None for p in procs)


def test_cli_live_json(tmp_path: Path) -> None:
    trace = tmp_path / "tiny.jsonl"
    rows = [
        {"timestamp": 100 * i, "input_length": 1100, "output_length": 3, "hash_ids": [0, 1, i + 2]}
        for i in range(6)
    ]
    trace.write_text("".join(json.dumps(r) + "\n" for r in rows))
    argv = [
        sys.executable, "-m", "agentctl.serving", "bench", "replay", str(trace),
        "--mode", "live", "--workers", "2", "--time-scale", "0.05",
        "--policy", "round-robin", "--policy", "kv", "--json",
    ]  # fmt: skip
    out = children.run(  # a live replay starts a cluster: a timeout stops it too
        argv,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["ok"] is True and doc["data"]["mode"] == "live"
    by = {r["policy"]: r for r in doc["data"]["policies"]}
    assert set(by) == {"round-robin", "kv"}
    for r in by.values():
        assert r["completed"] == 6 and r["rejected"] == 0
        assert r["extra"]["time_scale"] == 0.05
