"""Serving samples from successive scrapes: recorded pages, restarts, no traffic, and a live
LocalCluster scraped over real TCP with the collectors' own HTTP GET."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agentctl.collectors.serving import (
    FetchError,
    ScrapeState,
    http_get_over,
    metrics_fetcher,
    open_socket,
)
from agentctl.serving.cluster import ClusterSpec, LocalCluster

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "serving_metrics"


def _text(name: str) -> str:
    return (FIX / name).read_text()


def test_recorded_interval_gives_hit_rate_and_latency_quantiles() -> None:
    state = ScrapeState()
    first = state.worker("w1", _text("worker_w1_before.txt"), at=100.0)
    assert first.since_start and first.interval_s is None
    assert first.kv_hit_rate is None and first.ttft is None and first.itl is None  # N/A
    s = state.worker("w1", _text("worker_w1_after.txt"), at=105.0)
    assert not s.since_start and s.interval_s == 5.0
    assert (s.prefix_queries, s.prefix_hits) == (2406.0, 1920.0)
    assert s.kv_hit_rate == pytest.approx(1920 / 2406)
    assert s.ttft is not None and s.ttft.count == 6 and s.ttft.p50 == pytest.approx(0.0016)
    assert s.ttft.p50 <= s.ttft.p90 <= s.ttft.p99 <= 0.0025
    assert s.itl is not None and s.itl.count == 12
    assert (s.requests_running, s.requests_waiting, s.kv_cache_usage) == (0.0, 0.0, 0.0)
    # the next interval has no traffic: N/A again, not 0
    idle = state.worker("w1", _text("worker_w1_after.txt"), at=110.0)
    assert idle.prefix_queries == 0 and idle.kv_hit_rate is None and idle.ttft is None


def test_an_untouched_worker_has_no_hit_rate() -> None:
    state = ScrapeState()
    state.worker("w0", _text("worker_w0_before.txt"), at=0.0)
    s = state.worker("w0", _text("worker_w0_after.txt"), at=1.0)
    assert s.prefix_queries == 0 and s.kv_hit_rate is None and s.ttft is None


def _restarted_page(queries: int, hits: int) -> str:
    """The recorded page with its prefix-cache counters replaced (a restarted worker)."""
    lines = []
    for line in _text("worker_w1_before.txt").splitlines():
        if line.startswith("vllm:prefix_cache_queries_total"):
            line = line.rsplit(" ", 1)[0] + f" {queries}.0"
        elif line.startswith("vllm:prefix_cache_hits_total"):
            line = line.rsplit(" ", 1)[0] + f" {hits}.0"
        lines.append(line)
    return "\n".join(lines) + "\n"


def test_counter_reset_counts_the_new_values_as_the_interval() -> None:
    state = ScrapeState()
    state.worker("w1", _text("worker_w1_after.txt"), at=0.0)
    s = state.worker("w1", _restarted_page(100, 25), at=1.0)
    assert s.since_start and s.interval_s is None
    assert (s.prefix_queries, s.prefix_hits) == (100.0, 25.0)
    assert s.kv_hit_rate == 0.25
    # and from there on, ordinary deltas again
    s2 = state.worker("w1", _restarted_page(300, 125), at=2.0)
    assert not s2.since_start and s2.kv_hit_rate == 0.5


def test_state_is_kept_per_endpoint() -> None:
    state = ScrapeState()
    state.worker("a:1", _text("worker_w1_before.txt"), at=0.0)
    b = state.worker("b:1", _text("worker_w1_after.txt"), at=0.0)
    assert b.since_start and b.kv_hit_rate == pytest.approx(1920 / 2406)
    a = state.worker("a:1", _text("worker_w1_after.txt"), at=1.0)
    assert not a.since_start and a.prefix_queries == 2406.0
    state.forget("a:1")
    assert "a:1" not in state and "b:1" in state


def test_router_interval_gives_per_worker_load() -> None:
    state = ScrapeState()
    state.router("r", _text("router_before.txt"), at=0.0)
    r = state.router("r", _text("router_after.txt"), at=2.0)
    assert r.requests == 6.0 and r.rejected == 0.0 and r.interval_s == 2.0
    assert set(r.workers) == {"w0", "w1"}
    w1, w0 = r.workers["w1"], r.workers["w0"]
    assert (w1.requests, w1.errors, w1.share, w1.in_flight) == (6.0, 0.0, 1.0, 0.0)
    assert w1.healthy is True and w1.draining is False
    assert (w0.requests, w0.share) == (0.0, 0.0)


# ---- the HTTP GET, over real sockets --------------------------------------------------------


@pytest.fixture
def server() -> Iterator[tuple[int, list[bytes]]]:
    """A one-shot TCP server on loopback answering each connection with the next canned reply
    (b"" = accept and say nothing)."""
    replies: list[bytes] = []
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)
                reply = replies.pop(0) if replies else b""
                if reply:
                    conn.sendall(reply)
                else:
                    stop.wait(5)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield port, replies
    stop.set()
    t.join(5)
    listener.close()


def test_http_get_reads_chunked_and_content_length_replies(
    server: tuple[int, list[bytes]],
) -> None:
    port, replies = server
    replies.append(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n"
    )
    replies.append(b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\n\r\nnot found")
    assert http_get_over(open_socket("127.0.0.1", port, 5), "h", "/metrics", 5) == (
        200,
        b"hello, world",
    )
    assert http_get_over(open_socket("127.0.0.1", port, 5), "h", "/x", 5) == (404, b"not found")


def test_http_get_silence_is_a_timeout_error_not_a_hang(server: tuple[int, list[bytes]]) -> None:
    port, _ = server
    with pytest.raises(FetchError, match=r"no complete reply within 0\.3s"):
        http_get_over(open_socket("127.0.0.1", port, 5), "h", "/metrics", 0.3)


def test_http_get_rejects_a_reply_that_is_not_http(server: tuple[int, list[bytes]]) -> None:
    port, replies = server
    replies.append(b"SSH-2.0-OpenSSH\r\n\r\n")
    with pytest.raises(FetchError, match="not an HTTP reply"):
        http_get_over(open_socket("127.0.0.1", port, 5), "h", "/metrics", 5)


def test_fetcher_reports_non_200_and_unreachable(server: tuple[int, list[bytes]]) -> None:
    port, replies = server
    replies.append(b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n")
    fetch = metrics_fetcher(open_socket, timeout=5)
    with pytest.raises(FetchError, match="HTTP 503"):
        fetch(f"127.0.0.1:{port}")
    with pytest.raises(FetchError, match="not host:port"):
        fetch("127.0.0.1")


# ---- live -----------------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_live_cluster_shared_prompt_gives_hits_and_ttft(tmp_path: Path) -> None:
    cluster = LocalCluster(ClusterSpec(workers=2, time_scale=0.01), workdir=tmp_path)
    cluster.start()
    try:
        state = ScrapeState(metrics_fetcher(open_socket, timeout=10))
        workers = {n: u.removeprefix("http://") for n, u in cluster.worker_urls.items()}
        router = cluster.router_url.removeprefix("http://")
        before = [state.scrape_worker(e) for e in workers.values()]
        assert all(s.kv_hit_rate is None for s in before)  # no traffic yet
        state.scrape_router(router)
        prompt = "Shared system prompt for every agent in this fleet. " * 40
        with httpx.Client(timeout=30) as client:
            for i in range(5):
                r = client.post(
                    cluster.router_url + "/v1/completions",
                    json={"prompt": prompt + f"question {i}", "max_tokens": 3},
                )
                assert r.status_code == 200, r.text
        after = {n: state.scrape_worker(e) for n, e in workers.items()}
        routed = state.scrape_router(router)
    finally:
        cluster.stop()
    served = [s for s in after.values() if s.prefix_queries]
    assert served and all(not s.since_start for s in after.values())
    assert sum(s.prefix_hits or 0 for s in served) > 0
    assert any(s.kv_hit_rate is not None and s.kv_hit_rate > 0 for s in served)
    for s in served:
        assert s.ttft is not None and s.ttft.count >= 1
        assert 0 < s.ttft.p50 <= s.ttft.p90 <= s.ttft.p99
        assert s.itl is not None
    assert sum(s.ttft.count for s in served if s.ttft) == 5
    assert routed.requests == 5 and set(routed.workers) == set(workers)
    assert sum(w.requests for w in routed.workers.values()) == 5
