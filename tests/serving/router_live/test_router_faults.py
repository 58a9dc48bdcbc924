"""Faults through real router and worker processes: a stopped worker's streams move on and
it comes back; a stream nobody can finish still ends with an error and [DONE]; a client that
leaves a non-streaming request frees the worker's slot."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from agentctl.serving.cluster import ClusterSpec, LocalCluster
from agentctl.serving.router.proxy import WORKER_HEADER


@pytest.fixture()
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    spec = ClusterSpec(workers=2, time_scale=0.01)
    with LocalCluster(spec, tmp_path_factory.mktemp("faults")) as c:
        yield c


def _chat(content: str, **extra: object) -> dict[str, object]:
    return {"model": "agentctl-sim", "messages": [{"role": "user", "content": content}], **extra}


def _events(text: str) -> list[str]:
    return [e[len("data: ") :] for e in text.split("\n\n") if e.startswith("data: ")]


def _health(c: LocalCluster) -> dict[str, dict[str, object]]:
    body = httpx.get(c.router_url + "/health", timeout=10).json()
    return {w["id"]: w for w in body["workers"]}


def _wait(pred: object, timeout: float = 30.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def test_stopped_worker_streams_migrate_and_it_returns_after_cont(cluster: LocalCluster) -> None:
    limit = 20_000
    with httpx.Client(base_url=cluster.router_url, timeout=60.0) as c:
        with c.stream("POST", "/v1/chat/completions", json=_chat("go", max_tokens=limit,
                                                                 stream=True)) as r:  # fmt: skip
            assert r.status_code == 200
            victim = r.headers[WORKER_HEADER]
            proc = cluster.workers[victim].popen
            assert proc is not None
            it = r.iter_text()
            got = next(it)
            proc.send_signal(signal.SIGSTOP)
            try:
                got += "".join(it)
                seen_down = _health(cluster)[victim]["healthy"] is False
            finally:
                proc.send_signal(signal.SIGCONT)
        events = _events(got)
        assert events[-1] == "[DONE]"
        chunks = [json.loads(e) for e in events[:-1]]
        assert not [ch for ch in chunks if "error" in ch]
        content = [
            ch for ch in chunks if ch["choices"] and ch["choices"][0]["delta"].get("content")
        ]
        assert len(content) == limit
        assert seen_down
        assert _wait(lambda: _health(cluster)[victim]["healthy"] is True), "back after CONT"
        served = {
            c.post("/v1/completions", json={"prompt": f"p{i}", "max_tokens": 2}).headers[
                WORKER_HEADER
            ]
            for i in range(8)
        }
        assert victim in served, "the stopped worker is back in rotation"


def test_stream_nobody_can_finish_ends_with_error_and_done(cluster: LocalCluster) -> None:
    with httpx.Client(base_url=cluster.router_url, timeout=60.0) as c:
        body = _chat("go", max_tokens=20_000, stream=True)
        with c.stream("POST", "/v1/chat/completions", json=body) as r:
            victim = r.headers[WORKER_HEADER]
            other = next(n for n in cluster.workers if n != victim)
            assert c.post(f"/admin/workers/{other}/drain").status_code == 200
            it = r.iter_text()
            got = next(it)
            cluster.kill_worker(victim)
            got += "".join(it)
        events = _events(got)
        assert events[-1] == "[DONE]"
        err = json.loads(events[-2])["error"]
        assert err["code"] == 502 and victim in err["message"]


def _running(c: LocalCluster) -> int:
    total = 0
    for url in c.worker_urls.values():
        total += httpx.get(url + "/health", timeout=10).json()["num_requests_running"]
    return total


def test_client_leaving_a_non_streaming_request_frees_the_slot(cluster: LocalCluster) -> None:
    host, port = cluster.router_url.removeprefix("http://").split(":")
    body = json.dumps(_chat("wait for me", max_tokens=30_000)).encode()
    head = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    socks = []
    for _ in range(20):
        s = socket.create_connection((host, int(port)))
        s.sendall(head + body)
        socks.append(s)
    assert _wait(lambda: _running(cluster) >= 20), "the requests reached the workers"
    for s in socks:
        s.close()
    assert _wait(lambda: _running(cluster) == 0), "abandoned requests still hold slots"


def _confirmed(c: LocalCluster) -> int:
    body = httpx.get(c.router_url + "/health", timeout=10).json()
    return int(body["index"]["confirmed_blocks"])


def test_restarted_router_knows_the_workers_caches_at_once(cluster: LocalCluster) -> None:
    prompts = [f"[{i}] " + " ".join(f"word{j}x{i}" for j in range(400)) for i in range(6)]
    with httpx.Client(base_url=cluster.router_url, timeout=60.0) as c:
        for p in prompts:
            assert c.post("/v1/completions", json={"prompt": p, "max_tokens": 1}).status_code == 200
    assert _wait(lambda: _confirmed(cluster) > 0)
    before = _confirmed(cluster)
    cluster.restart_router()
    # no request in between: only the workers' snapshots can tell the new router
    assert _wait(lambda: _confirmed(cluster) >= before), (before, _confirmed(cluster))
    with httpx.Client(base_url=cluster.router_url, timeout=60.0) as c:
        r = c.post("/v1/completions", json={"prompt": prompts[0], "max_tokens": 1})
    assert r.json()["usage"]["prompt_tokens_details"]["cached_tokens"] > 0


def test_poison_prompt_fences_no_worker_and_other_streams_finish(cluster: LocalCluster) -> None:
    import threading

    poison = {"prompt": "poison " * 700_000, "max_tokens": 1}  # ~4.8 MiB, a legal body
    result: dict[str, int] = {}

    def send_poison() -> None:
        with httpx.Client(timeout=120.0) as pc:
            result["status"] = pc.post(
                cluster.router_url + "/v1/completions", json=poison
            ).status_code

    th = threading.Thread(target=send_poison)
    th.start()
    try:
        with httpx.Client(base_url=cluster.router_url, timeout=60.0) as c:
            while th.is_alive():
                body = _chat("meanwhile", max_tokens=50, stream=True)
                with c.stream("POST", "/v1/chat/completions", json=body) as r:
                    assert r.status_code == 200
                    events = _events("".join(r.iter_text()))
                assert events[-1] == "[DONE]" and not [e for e in events if '"error"' in e]
                assert all(w["healthy"] for w in _health(cluster).values())
    finally:
        th.join(120)
    assert result["status"] in (200, 400), result
    metrics = httpx.get(cluster.router_url + "/metrics", timeout=10).text
    assert "agentctl_router_worker_healthy" in metrics
    down = [
        ln
        for ln in metrics.splitlines()
        if ln.startswith("agentctl_router_worker_healthy{") and ln.endswith(" 0.0")
    ]
    assert not down
