"""The exposition parser and PromQL arithmetic, on metrics text recorded from the real stack
(tests/fixtures/serving_metrics, see its README) and on hand-checked bucket sets."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from agentctl.collectors.serving import (
    Histogram,
    PromTextError,
    counter_delta,
    histogram_delta,
    histogram_quantile,
    parse,
)

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "serving_metrics"
INF = math.inf


def _text(name: str) -> str:
    return (FIX / name).read_text()


def test_parses_a_recorded_worker_page_into_typed_samples() -> None:
    exp = parse(_text("worker_w1_after.txt"))
    fam = exp.families["vllm:prefix_cache_queries"]
    assert fam.type == "counter" and "Prefix cache queries" in fam.help
    (s,) = exp.samples("vllm:prefix_cache_queries_total")
    assert s.value == 2406.0 and s.label("model_name") == "agentctl-sim"
    assert exp.value("vllm:prefix_cache_hits_total") == 1920.0
    assert exp.value("vllm:prefix_cache_hits_total", {"model_name": "other"}) is None
    assert exp.value("vllm:num_requests_running") == 0.0
    assert exp.families["vllm:kv_cache_usage_perc"].type == "gauge"
    ttft = exp.histogram("vllm:time_to_first_token_seconds")
    assert ttft is not None and ttft.count == 6.0 and ttft.buckets[-1] == (INF, 6.0)
    assert [b for b, _ in ttft.buckets] == sorted(b for b, _ in ttft.buckets)
    assert exp.histogram("vllm:no_such_histogram") is None


def test_quantiles_of_the_recorded_histograms_match_promql_by_hand() -> None:
    exp = parse(_text("worker_w1_after.txt"))
    ttft = exp.histogram("vllm:time_to_first_token_seconds")
    itl = exp.histogram("vllm:inter_token_latency_seconds")
    assert ttft is not None and itl is not None
    # TTFT: 1 obs <= 0.5ms, 6 <= 2.5ms; rank 3 -> 1ms + 1.5ms * (3 - 1) / 5
    assert histogram_quantile(ttft.buckets, 0.5) == pytest.approx(0.0016)
    # ITL: 7 of 12 <= 0.1ms; rank 6 in the first bucket, interpolated from 0
    assert histogram_quantile(itl.buckets, 0.5) == pytest.approx(0.0001 * 6 / 7)


def test_router_page_parses_per_worker_series() -> None:
    exp = parse(_text("router_after.txt"))
    assert exp.value("agentctl_router_requests_total", {"worker": "w1", "outcome": "ok"}) == 6.0
    in_flight = exp.samples("agentctl_router_in_flight_requests")
    assert {s.label("worker") for s in in_flight} == {"w0", "w1"}


def test_malformed_text_is_a_clear_error() -> None:
    with pytest.raises(PromTextError):
        parse('metric{label="unterminated} 1\n')


@pytest.mark.parametrize(
    ("buckets", "q", "expected"),
    [
        ([(0.1, 0), (0.2, 10), (INF, 10)], 0.5, 0.15),  # linear inside the bucket
        ([(0.1, 0), (0.2, 10), (INF, 10)], 1.0, 0.2),
        ([(1.0, 4), (INF, 4)], 0.5, 0.5),  # the first bucket starts at 0
        ([(1.0, 0), (2.0, 0), (INF, 5)], 0.5, 2.0),  # rank in +Inf: highest finite bound
        ([(0.0, 3), (1.0, 6), (INF, 6)], 0.25, 0.0),  # first bound <= 0 is returned
        ([(-1.0, 3), (1.0, 6), (INF, 6)], 0.25, -1.0),
        ([(1.0, 5), (2.0, 3), (INF, 10)], 0.5, 1.0),  # counts forced monotonic
        ([(INF, 4), (1.0, 2), (1.0, 2)], 0.5, 0.5),  # sorted, equal bounds merged
        ([(1.0, 2), (2.0, 4), (INF, 4)], 0.75, 1.5),
        ([(1.0, 2), (2.0, 4), (INF, 4)], -0.1, -INF),
        ([(1.0, 2), (2.0, 4), (INF, 4)], 1.1, INF),
    ],
)
def test_histogram_quantile_as_prometheus(
    buckets: list[tuple[float, float]], q: float, expected: float
) -> None:
    assert histogram_quantile(buckets, q) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("buckets", "q"),
    [
        ([(1.0, 2), (2.0, 4)], 0.5),  # no +Inf bucket
        ([(INF, 4)], 0.5),  # fewer than two buckets
        ([(1.0, 0), (INF, 0)], 0.5),  # no observations
        ([(1.0, 0), (2.0, 4), (INF, 4)], 0.0),  # Go's 0/0 in an empty first bucket
        ([(1.0, 2), (INF, 4)], math.nan),
        ([], 0.5),
    ],
)
def test_histogram_quantile_nan_cases(buckets: list[tuple[float, float]], q: float) -> None:
    assert math.isnan(histogram_quantile(buckets, q))


def test_counter_delta_reads_a_decrease_as_a_restart() -> None:
    assert counter_delta(None, 5.0) == 5.0  # first scrape: since the process started
    assert counter_delta(3.0, 5.0) == 2.0
    assert counter_delta(3.0, 3.0) == 0.0
    assert counter_delta(10.0, 4.0) == 4.0  # went down: restarted, 4 since the restart


def test_histogram_delta_per_bucket_and_on_reset() -> None:
    before = Histogram(((0.1, 2.0), (1.0, 5.0), (INF, 6.0)), 6.0, 3.0)
    after = Histogram(((0.1, 2.0), (1.0, 9.0), (INF, 10.0)), 10.0, 5.0)
    d = histogram_delta(before, after)
    assert d.buckets == ((0.1, 0.0), (1.0, 4.0), (INF, 4.0)) and d.count == 4.0
    assert d.sum == pytest.approx(2.0)
    assert histogram_quantile(d.buckets, 0.5) == pytest.approx(0.1 + 0.9 * 0.5)
    restarted = Histogram(((0.1, 1.0), (1.0, 1.0), (INF, 1.0)), 1.0, 0.05)
    assert histogram_delta(after, restarted) == restarted
    relaid = Histogram(((0.5, 20.0), (INF, 20.0)), 20.0, 1.0)
    assert histogram_delta(after, relaid) == relaid
