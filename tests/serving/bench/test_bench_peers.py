"""`bench live`'s pure parts: the command lines it builds, what it reads from aiperf's export and
the workers' `/metrics` (recorded files: tests/fixtures/bench_live, tests/fixtures/serving_metrics),
the ratio maths, the trace slice, and the peer environments' install and diagnosis path.

The benchmark itself (aiperf, sglang-router, minutes of wall clock) runs on demand, never here;
where a peer venv is already installed, its real `--help` checks the flags we pass.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentctl.serving.bench.aiperf_client import (
    EXPORT_FILE,
    TOKENIZER_REPO,
    AiperfSummary,
    aiperf_argv,
    aiperf_env,
    load_profile_export,
    parse_profile_export,
)
from agentctl.serving.bench.peer_env import (
    MARKER,
    PEERS,
    PeerUnavailable,
    default_peers_dir,
    find_env,
    install_commands,
)
from agentctl.serving.bench.peers import (
    DEFAULT_TRACE,
    RouterRow,
    failed_row,
    format_table,
    make_row,
    ratios,
    sglang_router_argv,
    slice_trace,
)
from agentctl.serving.bench.prom import EngineSample, Histogram, parse_engine_metrics

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
EXPORT = FIXTURES / "bench_live" / "aiperf-0.13.0_kv_20req_profile_export_aiperf.json"
METRICS = FIXTURES / "serving_metrics"


def _flag(argv: list[str], flag: str) -> str:
    """The value after `flag` (which must occur exactly once)."""
    assert argv.count(flag) == 1, f"{flag} occurs {argv.count(flag)} times in {argv}"
    return argv[argv.index(flag) + 1]


# ---- the workers' /metrics ------------------------------------------------------------------


def _sample(name: str) -> EngineSample:
    return parse_engine_metrics((METRICS / name).read_text())


def test_engine_metrics_of_real_workers_sum_and_difference() -> None:
    before = EngineSample.total([_sample("worker_w0_before.txt"), _sample("worker_w1_before.txt")])
    after = EngineSample.total([_sample("worker_w0_after.txt"), _sample("worker_w1_after.txt")])
    run = after.minus(before)
    # the recording's README: all six requests went to w1, 2406 query tokens, 1920 hits
    assert run.prefix_cache_queries == 2406
    assert run.prefix_cache_hits == 1920
    assert run.hit_rate == pytest.approx(1920 / 2406)
    assert run.ttft.count == 6
    # w1: one TTFT <= 0.5 ms, five in (1 ms, 2.5 ms]: rank 3 lies 2/5 into that bucket
    assert run.ttft.quantile(0.5) == pytest.approx(0.001 + 0.0015 * 2 / 5)
    assert run.ttft.quantile(0.1) == pytest.approx(0.0005 * 0.6 / 1)
    assert math.isnan(before.hit_rate)  # nothing queried yet
    assert math.isnan(before.ttft.quantile(0.5))


def test_histogram_quantile_follows_prometheus() -> None:
    h = Histogram(((0.1, 2.0), (1.0, 6.0), (math.inf, 10.0)))
    assert h.quantile(0.0) == 0.0
    assert h.quantile(0.2) == pytest.approx(0.1)  # rank 2: the top of the first bucket
    assert h.quantile(0.4) == pytest.approx(0.1 + 0.9 * 2 / 4)
    assert h.quantile(0.99) == 1.0  # in +Inf: the highest finite bound
    doubled = h.plus(h)
    assert doubled.count == 20 and doubled.quantile(0.4) == h.quantile(0.4)
    assert doubled.minus(h) == h
    with pytest.raises(ValueError):
        h.plus(Histogram(((0.5, 1.0), (math.inf, 1.0))))
    with pytest.raises(ValueError):
        h.quantile(1.5)


def test_metrics_text_that_is_not_an_exposition_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_engine_metrics("this is not { metrics")
    assert parse_engine_metrics("") == EngineSample()


# ---- aiperf's export ------------------------------------------------------------------------


def test_recorded_aiperf_export_parses() -> None:
    s = parse_profile_export(json.loads(EXPORT.read_text()))
    assert s.aiperf_version == "0.13.0"
    assert (s.requests, s.errors) == (20, 1)  # 19 streamed, one failed
    assert s.ttft_ms_p50 == pytest.approx(1864.998684)
    assert s.ttft_ms_p99 == pytest.approx(5683.476214120001)
    assert s.ttft_ms_avg == pytest.approx(1859.0654268421051)
    assert s.duration_s == pytest.approx(13.525454592)
    assert s.usage_cached_pct == pytest.approx(3.0412572340172765)
    assert len(s.error_kinds) == 1 and "InvalidInferenceResultError" in s.error_kinds[0]


def test_export_without_errors_or_ttft(tmp_path: Path) -> None:
    doc = json.loads(EXPORT.read_text())
    del doc["error_request_count"]  # aiperf leaves the count out of an error-free run...
    doc["error_summary"] = []
    del doc["time_to_first_token"]  # ...and TTFT out of a run where nothing streamed
    (tmp_path / EXPORT_FILE).write_text(json.dumps(doc))
    s = load_profile_export(tmp_path)
    assert (s.requests, s.errors, s.error_kinds) == (19, 0, ())
    assert math.isnan(s.ttft_ms_p50) and math.isnan(s.ttft_ms_p99)
    with pytest.raises(ValueError, match="not an aiperf profile export"):
        parse_profile_export({"time_to_first_token": {"p50": 1.0}})
    with pytest.raises(OSError):
        load_profile_export(tmp_path / "missing")


def test_aiperf_command_line_replays_the_trace_on_its_timestamps() -> None:
    argv = aiperf_argv(
        "/venv/bin/aiperf",
        url="http://127.0.0.1:8000",
        model="agentctl-sim",
        input_file="trace.jsonl",
        artifact_dir="art",
        seed=7,
    )
    assert argv[:2] == ["/venv/bin/aiperf", "profile"]
    assert _flag(argv, "--custom-dataset-type") == "mooncake_trace"
    assert "--fixed-schedule" in argv and "--streaming" in argv
    assert _flag(argv, "--endpoint-type") == "completions"
    assert _flag(argv, "--input-file") == "trace.jsonl"
    assert _flag(argv, "--url") == "http://127.0.0.1:8000"
    assert _flag(argv, "--tokenizer") == TOKENIZER_REPO
    assert _flag(argv, "--random-seed") == "7"
    assert _flag(argv, "--artifact-dir") == "art"
    assert _flag(argv, "--ui-type") == "none"


def test_aiperf_runs_offline_on_the_peer_cache() -> None:
    base = {"PATH": "/bin", "HF_HOME": "/elsewhere"}
    env = aiperf_env("/peers/aiperf/hf", base)
    assert env["HF_HOME"] == "/peers/aiperf/hf"
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"
    assert env["PATH"] == "/bin" and base["HF_HOME"] == "/elsewhere"  # a copy


def test_sglang_router_command_line() -> None:
    argv = sglang_router_argv(
        "/venv/bin/python",
        host="127.0.0.1",
        port=30001,
        worker_urls=["http://127.0.0.1:1", "http://127.0.0.1:2"],
        prometheus_port=30002,
    )
    assert argv[:3] == ["/venv/bin/python", "-m", "sglang_router.launch_router"]
    i = argv.index("--worker-urls")
    assert argv[i + 1 : i + 3] == ["http://127.0.0.1:1", "http://127.0.0.1:2"]
    assert argv[i + 3].startswith("--")
    assert _flag(argv, "--policy") == "cache_aware"
    assert _flag(argv, "--port") == "30001"
    assert _flag(argv, "--prometheus-port") == "30002"  # never its fixed default 29000


def _installed_help(name: str, argv: list[str]) -> str:
    try:
        env = find_env(PEERS[name], default_peers_dir())
    except PeerUnavailable as exc:
        pytest.skip(f"{exc}")
    cmd = [str(env.root / "bin" / argv[0]), *argv[1:]]
    res = subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "300"}
    )
    assert res.returncode == 0, res.stderr
    return res.stdout + res.stderr


def _flags(argv: list[str]) -> list[str]:
    return [a for a in argv if a.startswith("--")]


def test_installed_aiperf_knows_every_flag_we_pass() -> None:
    text = _installed_help("aiperf", ["aiperf", "profile", "--help"])
    argv = aiperf_argv("aiperf", url="u", model="m", input_file="f", artifact_dir="a")
    for flag in _flags(argv):
        assert flag in text, f"aiperf {PEERS['aiperf'].version} has no {flag}"


def test_installed_sglang_router_knows_every_flag_we_pass() -> None:
    text = _installed_help("sglang-router", ["python", "-m", "sglang_router.launch_router", "-h"])
    argv = sglang_router_argv("python", host="h", port=1, worker_urls=["u"], prometheus_port=2)
    for flag in _flags(argv):
        assert flag in text, f"sglang-router {PEERS['sglang-router'].version} has no {flag}"


# ---- rows and ratios ------------------------------------------------------------------------


def _client(p50: float, p99: float, errors: int = 0) -> AiperfSummary:
    return AiperfSummary(300, errors, p50, p99, p50, 100.0, 5.0, "0.13.0")


def _engines(hits: float, queries: float, ttft_le_s: float) -> EngineSample:
    # every request's TTFT in the bucket (0, ttft_le_s]: the median is half of it
    return EngineSample(hits, queries, Histogram(((ttft_le_s, 300.0), (math.inf, 300.0))))


def test_row_subtracts_engine_median_from_client_median() -> None:
    row = make_row("kv", _client(500.0, 2000.0), _engines(70.0, 1000.0, 0.6))
    assert row.engine_ttft_ms_p50 == pytest.approx(300.0)
    assert row.added_ms_p50 == pytest.approx(200.0)
    assert row.hit_rate == pytest.approx(0.07)
    assert row.prompt_tokens == 1000
    assert row.ok
    assert not make_row("kv", _client(1.0, 1.0, errors=2), _engines(0, 1, 1)).ok


def test_ratios_against_round_robin() -> None:
    rr = make_row("round-robin", _client(600.0, 2400.0), _engines(50.0, 1000.0, 0.6))
    kv = make_row("kv", _client(300.0, 3000.0), _engines(75.0, 1000.0, 0.6))
    bad = failed_row("sglang-router", "did not become ready")
    r = ratios([kv, rr, bad])
    assert r["kv"]["x_ttft_p50"] == pytest.approx(2.0)  # half round-robin's median
    assert r["kv"]["x_ttft_p99"] == pytest.approx(0.8)
    assert r["kv"]["hit_x"] == pytest.approx(1.5)
    assert r["round-robin"] == {"x_ttft_p50": 1.0, "x_ttft_p99": 1.0, "hit_x": 1.0}
    assert all(math.isnan(v) for v in r["sglang-router"].values())
    without_base = ratios([kv])
    assert all(math.isnan(v) for v in without_base["kv"].values())


def test_table_shows_every_router_its_failure_and_the_prediction() -> None:
    rr = make_row("round-robin", _client(600.0, 2400.0), _engines(50.0, 1000.0, 0.6))
    own = Histogram(((0.001, 90.0), (0.005, 100.0), (math.inf, 100.0)))
    kv = make_row("kv", _client(300.0, 3000.0), _engines(75.0, 1000.0, 0.6), own=own)
    bad = failed_row("sglang-router", "did not become ready")
    sim = {"kv": {"hit_rate": 0.077, "oracle_hit_rate": 0.081, "ttft_ms_p50": 1.0}}
    text = format_table([kv, rr, bad], sim)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["router", "done", "err"]
    kv_line = next(line for line in lines if line.startswith("kv "))
    assert kv_line.split() == [
        "kv", "300", "0", "300", "3,000", "300", "0", "0.6", "4.6", "7.5%", "2.00", "0.80",
        "1.50",
    ]  # fmt: skip
    rr_line = next(line for line in lines if line.startswith("round-robin "))
    assert rr_line.split()[7:9] == ["-", "-"], "no own figures: a row without the histogram"
    assert "sglang-router: did not become ready" in text
    assert "kv 7.7% (bound 8.1%)" in text


# ---- the trace slice ------------------------------------------------------------------------


def test_slice_takes_the_first_rows_and_scales_only_timestamps() -> None:
    lines = DEFAULT_TRACE.read_text().splitlines()[:5]
    first = [json.loads(line) for line in lines]
    out = [json.loads(line) for line in slice_trace(["", *lines], 3, rate_scale=2.0)]
    assert len(out) == 3
    for row, orig in zip(out, first, strict=False):
        assert row["hash_ids"] == orig["hash_ids"]
        assert row["input_length"] == orig["input_length"]
        assert row["timestamp"] == round(orig["timestamp"] / 2.0)
    assert len(slice_trace(lines, 300)) == 5  # a shorter trace is all of it


def test_slice_rejects_what_is_not_a_mooncake_trace() -> None:
    with pytest.raises(ValueError, match="line 1: not JSON"):
        slice_trace(["{nope"], 1)
    with pytest.raises(ValueError, match="line 2: not a Mooncake row"):
        slice_trace(['{"timestamp": 0, "input_length": 1, "hash_ids": [1]}', '{"id": "x"}'], 5)
    with pytest.raises(ValueError):
        slice_trace([], 0)
    with pytest.raises(ValueError):
        slice_trace([], 1, rate_scale=0.0)


# ---- the peer environments ------------------------------------------------------------------


def test_missing_or_stale_peer_env_says_how_to_install(tmp_path: Path) -> None:
    spec = PEERS["aiperf"]
    with pytest.raises(PeerUnavailable, match="--install-peers"):
        find_env(spec, tmp_path)
    root = tmp_path / spec.dirname
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "python").write_text("")
    (root / MARKER).write_text(json.dumps({"requirement": "aiperf==0.0.1"}))
    with pytest.raises(PeerUnavailable, match=r"aiperf==0\.13\.0"):
        find_env(spec, tmp_path)  # a venv of another version is not this one
    (root / MARKER).write_text(json.dumps({"requirement": spec.requirement}))
    env = find_env(spec, tmp_path)
    assert env.root == root and env.python == root / "bin" / "python"


def test_peers_dir_is_outside_the_clone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_peers_dir() == tmp_path / "agentctl" / "peers"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_peers_dir() == Path.home() / ".cache" / "agentctl" / "peers"


def test_install_commands_make_a_venv_and_pin_the_version(tmp_path: Path) -> None:
    root = tmp_path / "aiperf-0.13.0"
    venv, pip, tok = install_commands(PEERS["aiperf"], root, python="/usr/bin/python3")
    assert venv == ["/usr/bin/python3", "-m", "venv", str(root)]
    assert pip[0] == str(root / "bin" / "python") and pip[-1] == "aiperf==0.13.0"
    assert tok[0] == str(root / "bin" / "python") and tok[1].endswith("peer_tokenizer.py")
    assert Path(tok[1]).is_file()
    sglang = install_commands(PEERS["sglang-router"], tmp_path / "s", python="py")
    assert len(sglang) == 2 and sglang[1][-1] == "sglang-router==0.3.2"


def _live(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agentctl.serving", "bench", "live", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def test_without_peers_the_command_says_how_and_exits_2(tmp_path: Path) -> None:
    res = _live("--peers-dir", str(tmp_path), "--peer", "sglang-router")
    assert res.returncode == 2
    assert "aiperf==0.13.0 is not installed" in res.stderr
    assert "agentctl bench live --install-peers" in res.stderr
    assert res.stdout == ""
    assert list(tmp_path.iterdir()) == []  # nothing installed unasked


@pytest.mark.timeout(300)
def test_an_install_that_cannot_reach_an_index_exits_2_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    """Air-gapped, for real: pip with no index and an empty wheel directory."""
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(wheels)}
    peers = tmp_path / "peers"
    res = _live("--peers-dir", str(peers), "--install-peers", env=env)
    assert res.returncode == 2, res.stderr
    assert "cannot install aiperf==0.13.0" in res.stderr
    assert "aiperf" in res.stderr.splitlines()[-1]  # pip's own last line says what it lacked
    assert list(peers.iterdir()) == []  # the half-made venv is gone


def test_agentctl_bench_live_passes_through_to_the_serving_benchmark() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "agentctl.ctl", "bench", "live", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    for word in ("--peer", "--install-peers", "--peers-dir", "--trace", "--requests", "--json"):
        assert word in res.stdout
    assert "vllm:prefix_cache_hits" in res.stdout  # the help says how hit% is measured
    assert "client TTFT p50 minus engine TTFT p50" in res.stdout


def test_failed_row_is_not_ok() -> None:
    row = failed_row("kv", "aiperf exited 1")
    assert isinstance(row, RouterRow) and not row.ok and math.isnan(row.hit_rate)
