"""The soak harness's pure parts: how a stream's end is classified, the counts, the quantiles
read from Prometheus histograms, and its argument checks. The scenarios themselves run on
demand (`pytest tests/soak`, `agentctl bench soak`)."""

from __future__ import annotations

import argparse
import math

import httpx
import pytest

from agentctl.serving.bench.soak_cli import add_soak_args, files_needed, options_of
from agentctl.serving.bench.soak_stats import (
    Outcome,
    OutcomeCounts,
    StreamResult,
    classify_http,
    classify_sse,
    has_content,
    histogram_buckets,
    histogram_delta,
    histogram_quantile,
    metric_value,
    migrated_count,
    percentile,
)

CHUNK = '{"choices":[{"delta":{"content":"hi"},"index":0}]}'
ERROR = '{"error":{"message":"worker w1 went down mid-stream","type":"bad_gateway"}}'


# ---- stream endings -------------------------------------------------------------------------


def test_done_after_chunks_is_ok() -> None:
    assert classify_sse([CHUNK, CHUNK, "[DONE]"]) == (Outcome.OK, "")


def test_error_event_fails_even_when_done_follows() -> None:
    outcome, reason = classify_sse([CHUNK, ERROR, "[DONE]"])
    assert outcome is Outcome.FAILED
    assert "went down mid-stream" in reason


def test_neither_done_nor_error_is_truncated() -> None:
    assert classify_sse([CHUNK, CHUNK])[0] is Outcome.TRUNCATED
    assert classify_sse([])[0] is Outcome.TRUNCATED


def test_text_mentioning_error_is_not_an_error_event() -> None:
    chunk = '{"choices":[{"delta":{"content":"\\"error\\" is a word"}}]}'
    assert classify_sse([chunk, "[DONE]"])[0] is Outcome.OK
    assert classify_sse(['{"error": broken json', "[DONE]"])[0] is Outcome.OK


def test_first_token_is_the_first_chunk_with_text() -> None:
    role = '{"choices":[{"delta":{"role":"assistant","content":""},"index":0}]}'
    assert not has_content(role)
    assert has_content(CHUNK)
    assert has_content('{"choices":[{"text":"x","index":0}]}')  # /v1/completions
    assert not has_content('{"choices":[{"text":"","finish_reason":"length"}]}')
    assert not has_content('{"choices":[],"usage":{"prompt_tokens":3}}')
    assert not has_content(ERROR)


def test_shed_needs_retry_after() -> None:
    with_header = httpx.Headers({"Retry-After": "1"})
    assert classify_http(429, with_header)[0] is Outcome.SHED  # type: ignore[index]
    assert classify_http(503, with_header)[0] is Outcome.SHED  # type: ignore[index]
    assert classify_http(503, httpx.Headers())[0] is Outcome.FAILED  # type: ignore[index]
    assert classify_http(502, with_header)[0] is Outcome.FAILED  # type: ignore[index]
    assert classify_http(200, with_header) is None


def test_migrated_header() -> None:
    assert migrated_count(httpx.Headers({"X-Agentctl-Migrated": "2"})) == 2
    assert migrated_count(httpx.Headers({"X-Agentctl-Migrated": "x"})) == 0
    assert migrated_count(httpx.Headers()) == 0


def test_counts() -> None:
    results = [
        StreamResult(Outcome.OK, ttft_s=0.1),
        StreamResult(Outcome.OK, migrated=1),
        StreamResult(Outcome.FAILED, reason="HTTP 502"),
        StreamResult(Outcome.FAILED, reason="HTTP 502"),
        StreamResult(Outcome.TRUNCATED, reason="cut"),
        StreamResult(Outcome.SHED, reason="HTTP 429"),
    ]
    c = OutcomeCounts.of(results)
    assert (c.ok, c.failed, c.truncated, c.shed, c.migrated, c.total) == (2, 2, 1, 1, 1, 6)
    assert c.reasons == {"HTTP 502": 2, "cut": 1, "HTTP 429": 1}


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert math.isnan(percentile([], 50))


# ---- Prometheus -----------------------------------------------------------------------------

SCRAPE = """\
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.01",model_name="m"} %d
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.02",model_name="m"} %d
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="m"} %d
vllm:time_to_first_token_seconds_count{engine="0",model_name="m"} %d
vllm:time_to_first_token_seconds_sum{engine="0",model_name="m"} 1.0
# HELP agentctl_router_migrations Streams migrated.
# TYPE agentctl_router_migrations counter
agentctl_router_migrations_total{worker="w0"} 3.0
agentctl_router_migrations_total{worker="w1"} 4.0
# HELP agentctl_router_worker_healthy 1 if healthy.
# TYPE agentctl_router_worker_healthy gauge
agentctl_router_worker_healthy{worker="w0"} 1.0
agentctl_router_worker_healthy{worker="w1"} 0.0
"""


def test_histogram_sums_workers_and_takes_deltas() -> None:
    before = histogram_buckets(SCRAPE % (10, 10, 10, 10), "vllm:time_to_first_token_seconds")
    two = (SCRAPE % (20, 40, 40, 40)) + "\n" + (SCRAPE % (0, 0, 0, 0))
    after = histogram_buckets(two, "vllm:time_to_first_token_seconds")
    assert after == {0.01: 20.0, 0.02: 40.0, math.inf: 40.0}
    assert histogram_delta(after, before) == {0.01: 10.0, 0.02: 30.0, math.inf: 30.0}


def test_histogram_quantile_interpolates_like_prometheus() -> None:
    b = {0.01: 10.0, 0.02: 30.0, math.inf: 30.0}
    assert histogram_quantile(b, 0.5) == pytest.approx(0.0125)  # rank 15: a quarter into 0.01-0.02
    assert histogram_quantile(b, 0.1) == pytest.approx(0.003)  # rank 3 of 10 in 0-0.01
    assert histogram_quantile({0.01: 0.0, math.inf: 5.0}, 0.99) == 0.01  # in +Inf: the last bound
    assert math.isnan(histogram_quantile({0.01: 0.0, math.inf: 0.0}, 0.5))
    assert math.isnan(histogram_quantile({}, 0.5))
    with pytest.raises(ValueError):
        histogram_quantile(b, 1.5)


def test_metric_value() -> None:
    text = SCRAPE % (0, 0, 0, 0)
    assert metric_value(text, "agentctl_router_migrations_total") == 7.0
    assert metric_value(text, "agentctl_router_migrations_total", {"worker": "w1"}) == 4.0
    assert metric_value(text, "agentctl_router_worker_healthy") == 1.0
    assert metric_value(text, "agentctl_router_no_such_metric") is None
    assert metric_value("", "agentctl_router_migrations_total") is None


# ---- arguments ------------------------------------------------------------------------------


def _parse(*argv: str) -> argparse.Namespace:
    ap = argparse.ArgumentParser()
    add_soak_args(ap)
    return ap.parse_args(list(argv))


def test_defaults_are_the_issue_s_run() -> None:
    opts = options_of(_parse())
    assert opts.concurrency == (64, 500, 2000)
    assert (opts.workers, opts.slowloris_s, opts.slowloris_conns, opts.stop_s) == (3, 45, 1500, 20)
    assert _parse().scenario == ("ramp", "kill", "poison", "restart", "slowloris")
    assert files_needed(opts, ("ramp",)) >= 4000


@pytest.mark.parametrize(
    "argv",
    [["--scenario", "ramp,nope"], ["--concurrency", "64,x"], ["--concurrency", "0"]],
)
def test_bad_lists_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        _parse(*argv)
    assert exc.value.code == 2


@pytest.mark.parametrize(
    "argv",
    [
        ["--workers", "2"],  # kill needs one killed, one stopped and one left
        ["--workers", "0", "--scenario", "ramp"],
        ["--time-scale", "0"],
        ["--slowloris-s", "-1"],
    ],
)
def test_values_out_of_range(argv: list[str]) -> None:
    with pytest.raises(ValueError):
        options_of(_parse(*argv))
    options_of(_parse("--workers", "2", "--scenario", "ramp,poison"))


def test_bad_values_exit_2_before_starting_anything(capsys: pytest.CaptureFixture[str]) -> None:
    from agentctl.serving.bench.soak_cli import main

    assert main(["--workers", "2"]) == 2
    assert "--workers >= 3" in capsys.readouterr().err
