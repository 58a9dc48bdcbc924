"""The simulated worker as a real process on loopback: HTTP API, SSE, metrics, KV events over
real ZMQ sockets, bad input, client disconnects. No mocks."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import children
import httpx
import pytest

from agentctl.serving.events import KvEventBatch, ZmqEventSubscriber
from agentctl.serving.hashing import block_hashes_from_tokens
from agentctl.serving.tokenizer import BuiltinTokenizer, render_chat
from agentctl.serving.types import AllBlocksCleared, BlockStored

BLOCK = 16
CAPACITY = 4096  # blocks: 65536 tokens
MAX_BODY = 1_000_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Collector:
    """Every batch the live SUB socket receives, in arrival order (background thread)."""

    sub: ZmqEventSubscriber
    batches: list[tuple[int, KvEventBatch]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            item = self.sub.recv(timeout=0.05)
            if item is not None:
                with self.lock:
                    self.batches.append(item)

    def snapshot(self) -> list[tuple[int, KvEventBatch]]:
        with self.lock:
            return list(self.batches)

    def wait_for(self, pred: object, timeout: float = 5.0) -> list[tuple[int, KvEventBatch]]:
        assert callable(pred)
        deadline = time.monotonic() + timeout
        while True:
            snap = self.snapshot()
            if pred(snap):
                return snap
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met; {len(snap)} batches received")
            time.sleep(0.02)


@dataclass
class Worker:
    url: str
    events: str
    replay: str
    collector: Collector
    client: httpx.Client

    def health(self) -> dict[str, object]:
        r = self.client.get("/health")
        assert r.status_code == 200
        body: dict[str, object] = r.json()
        return body

    def metric(self, name: str, labels: str = "") -> float:
        text = self.client.get("/metrics").text
        for line in text.splitlines():
            if line.startswith(name + "{") and labels in line:
                return float(line.rsplit(" ", 1)[1])
        return 0.0


@pytest.fixture(scope="module")
def worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Worker]:
    port, ev_port, rp_port = _free_port(), _free_port(), _free_port()
    events, replay = f"tcp://127.0.0.1:{ev_port}", f"tcp://127.0.0.1:{rp_port}"
    log_path: Path = tmp_path_factory.mktemp("worker") / "worker.log"
    argv = [
        sys.executable, "-m", "agentctl.serving", "worker",
        "--port", str(port), "--time-scale", "0.01",
        "--block-size", str(BLOCK), "--capacity-blocks", str(CAPACITY),
        "--events", events, "--replay", replay,
        "--max-body-bytes", str(MAX_BODY), "--log-level", "warning",
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        proc = children.start(argv, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    client = httpx.Client(base_url=url, timeout=20.0)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"worker exited {proc.returncode}: {log_path.read_text()}")
            try:
                if client.get("/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"worker not healthy in 30 s: {log_path.read_text()}")
            time.sleep(0.05)
        collector = Collector(ZmqEventSubscriber(events, replay))
        thread = threading.Thread(target=collector.run, daemon=True)
        thread.start()
        time.sleep(0.5)  # ZMQ slow joiner: let the subscription reach the publisher
        yield Worker(url, events, replay, collector, client)
        collector.stop.set()
        thread.join(5)
        collector.sub.close()
    finally:
        client.close()
        children.stop(proc)  # SIGTERM to its group, SIGKILL after 10 s


def _sse_lines(r: httpx.Response) -> Iterator[str]:
    for line in r.iter_lines():
        if line.startswith("data: "):
            yield line[len("data: ") :]


def _uniq(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex} " + " ".join(f"word{i}" for i in range(60))


def test_streamed_chat_completion_yields_chunks_and_done(worker: Worker) -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": _uniq("stream")}],
        "max_tokens": 5,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with worker.client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        datas = list(_sse_lines(r))
    assert datas[-1] == "[DONE]"
    chunks = [json.loads(d) for d in datas[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    content = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert len(content) == 5
    finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert [f["choices"][0]["finish_reason"] for f in finals] == ["length"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 5


def test_repeated_prompt_hits_the_prefix_cache(worker: Worker) -> None:
    hits0 = worker.metric("vllm:prefix_cache_hits_total")
    queries0 = worker.metric("vllm:prefix_cache_queries_total")
    body = {"model": "m", "prompt": _uniq("cache"), "max_tokens": 3}
    first = worker.client.post("/v1/completions", json=body).json()
    second = worker.client.post("/v1/completions", json=body).json()
    assert first["object"] == "text_completion"
    assert first["choices"][0]["finish_reason"] == "length"
    n = first["usage"]["prompt_tokens"]
    assert first["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached == min(n // BLOCK * BLOCK, n - 1) > 0
    assert worker.metric("vllm:prefix_cache_hits_total") - hits0 == cached
    assert worker.metric("vllm:prefix_cache_queries_total") - queries0 == 2 * n


def test_kv_events_carry_the_prompts_block_hashes(worker: Worker) -> None:
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": _uniq("ev")}]
    ids = BuiltinTokenizer().encode(render_chat(messages))
    expected = block_hashes_from_tokens(ids, BLOCK)
    assert len(expected) >= 4
    r = worker.client.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 2})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] == len(ids)

    def stored(snap: list[tuple[int, KvEventBatch]]) -> list[BlockStored]:
        return [
            e
            for _, b in snap
            for e in b.events
            if isinstance(e, BlockStored) and set(e.block_hashes) & set(expected)
        ]

    snap = worker.collector.wait_for(
        lambda s: sum(len(e.block_hashes) for e in stored(s)) >= len(expected)
    )
    seqs = [s for s, _ in snap]
    assert seqs == list(range(len(seqs)))  # from 0, monotonic, no gap
    mine = stored(snap)
    assert tuple(h for e in mine for h in e.block_hashes) == expected
    assert mine[0].parent_block_hash is None
    assert mine[0].block_size == BLOCK
    assert tuple(t for e in mine for t in e.token_ids) == tuple(ids[: len(expected) * BLOCK])


def test_health_and_every_event_batch_carry_the_instance_id(worker: Worker) -> None:
    instance = worker.health()["instance_id"]
    assert isinstance(instance, str) and len(instance) == 16
    int(instance, 16)  # hex
    assert worker.health()["instance_id"] == instance  # stable for the process's life
    worker.client.post("/v1/completions", json={"prompt": _uniq("inst"), "max_tokens": 1})
    snap = worker.collector.wait_for(lambda s: len(s) >= 1)
    assert {b.instance_id for _, b in snap} == {instance}
    sub = ZmqEventSubscriber(worker.events, worker.replay)
    try:
        assert {b.instance_id for _, b in sub.replay(0)} == {instance}
    finally:
        sub.close()


def _replayed(batches: list[tuple[int, KvEventBatch]], upto: int) -> dict[int, int | None]:
    """Block -> parent, from the events numbered below `upto`."""
    blocks: dict[int, int | None] = {}
    for seq, batch in sorted(batches, key=lambda x: x[0]):
        if seq >= upto:
            break
        for ev in batch.events:
            if isinstance(ev, BlockStored):
                parent = ev.parent_block_hash
                for h in ev.block_hashes:
                    blocks[h] = parent
                    parent = h
            elif isinstance(ev, AllBlocksCleared):
                blocks.clear()
            else:
                for h in ev.block_hashes:
                    blocks.pop(h, None)
    return blocks


def test_kv_snapshot_is_exact_at_its_sequence_number(worker: Worker) -> None:
    """Snapshots taken while requests store blocks: each equals the replay of exactly the
    events numbered below its `next_seq`, and lists parents before children."""
    import concurrent.futures

    def load(i: int) -> None:
        body = {"prompt": _uniq(f"snap{i}") * 3, "max_tokens": 3}
        assert worker.client.post("/v1/completions", json=body).status_code == 200

    snaps: list[dict[str, object]] = []
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        futs = [pool.submit(load, i) for i in range(12)]  # in the background
        with httpx.Client(base_url=worker.url, timeout=20) as c:
            for i in range(5):
                load(100 + i)  # at least one new batch of events before each snapshot
                r = c.get("/kv/snapshot")
                assert r.status_code == 200
                snaps.append(r.json())
        for f in futs:
            f.result()
    health = worker.health()
    for snap in snaps:
        assert snap["instance_id"] == health["instance_id"]
        assert snap["block_size"] == BLOCK
        nxt = snap["next_seq"]
        assert isinstance(nxt, int)
        batches = worker.collector.wait_for(lambda s, n=nxt: len(s) >= n)
        blocks = snap["blocks"]
        assert isinstance(blocks, list)
        seen: set[int] = set()
        for h, parent in blocks:
            assert parent is None or parent in seen
            seen.add(h)
        assert {h: p for h, p in blocks} == _replayed(batches, nxt)
    assert len({s["next_seq"] for s in snaps}) == len(snaps)


def test_replay_returns_a_missed_range(worker: Worker) -> None:
    worker.client.post("/v1/completions", json={"prompt": _uniq("replay"), "max_tokens": 1})
    snap = worker.collector.wait_for(lambda s: len(s) >= 3)
    live = dict(snap)
    start = snap[-3][0]
    sub = ZmqEventSubscriber(worker.events, worker.replay)
    try:
        got = sub.replay(start)
        everything = sub.replay(0)
    finally:
        sub.close()
    seqs = [s for s, _ in got]
    assert seqs[:3] == [start, start + 1, start + 2]
    assert seqs == list(range(start, start + len(seqs)))
    for s, batch in got:
        if s in live:
            assert batch.events == live[s].events
    assert [s for s, _ in everything][:1] == [0]


def test_explicit_block_hashes(worker: Worker) -> None:
    rng = random.Random(7)
    hashes = [rng.getrandbits(64) for _ in range(4)]
    body = {"prompt": "ignored", "block_hashes": hashes, "prompt_tokens": 4 * BLOCK + 5}
    body["max_tokens"] = 2
    a = worker.client.post("/v1/completions", json=body).json()
    b = worker.client.post("/v1/completions", json=body).json()
    assert a["usage"]["prompt_tokens"] == 4 * BLOCK + 5
    assert a["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert b["usage"]["prompt_tokens_details"]["cached_tokens"] == 4 * BLOCK
    snap = worker.collector.wait_for(
        lambda s: any(
            isinstance(e, BlockStored) and e.block_hashes == tuple(hashes)
            for _, bt in s
            for e in bt.events
        )
    )
    ev = next(
        e
        for _, bt in snap
        for e in bt.events
        if isinstance(e, BlockStored) and e.block_hashes == tuple(hashes)
    )
    assert ev.token_ids == ()  # unknown for hash-only requests
    # chat with hashes only (no messages) works too
    r = worker.client.post(
        "/v1/chat/completions", json={"block_hashes": hashes[:2], "max_tokens": 1}
    )
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens_details"]["cached_tokens"] == 2 * BLOCK - 1


def test_malformed_json_is_a_400_openai_error(worker: Worker) -> None:
    for path in ("/v1/completions", "/v1/chat/completions"):
        r = worker.client.post(
            path, content=b'{"model": ', headers={"content-type": "application/json"}
        )
        assert r.status_code == 400
        err = r.json()["error"]
        assert err["type"] == "invalid_request_error"
        assert "JSON" in err["message"]
        assert set(err) == {"message", "type", "param", "code"}
    r = worker.client.post("/v1/completions", content=b"[1, 2]")
    assert r.status_code == 400


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/chat/completions", {"model": "m"}, "messages"),
        ("/v1/chat/completions", {"messages": []}, "messages"),
        ("/v1/chat/completions", {"messages": [{"content": "no role"}]}, "messages.0.role"),
        ("/v1/completions", {"model": "m"}, "prompt"),
        ("/v1/completions", {"prompt": "x", "max_tokens": 0}, "max_tokens"),
        ("/v1/completions", {"prompt": "x", "max_tokens": "many"}, "max_tokens"),
        ("/v1/completions", {"prompt": "x", "n": 2}, "n"),
        ("/v1/completions", {"prompt": ""}, "prompt"),
        ("/v1/completions", {"block_hashes": [1, 2], "prompt_tokens": 3}, "prompt_tokens"),
        ("/v1/completions", {"block_hashes": [-1]}, "block_hashes"),
        ("/v1/completions", {"prompt_token_ids": [1, 2**40]}, "prompt_token_ids"),
        ("/v1/completions", {"prompt": "x", "max_tokens": True}, "max_tokens"),
        ("/v1/completions", {"prompt": "x", "stream": "yes"}, "stream"),
        ("/v1/completions", {"prompt": "x", "n": "2"}, "n"),
        ("/v1/completions", {"prompt": "x", "max_tokens": 32769}, "max_tokens"),
    ],
)
def test_invalid_requests_are_4xx_with_the_field(
    worker: Worker, path: str, body: dict[str, object], param: str
) -> None:
    r = worker.client.post(path, json=body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param
    assert err["message"]


_POISON = [
    rb'{"messages": [{"role": "user", "content": "hi \ud800"}]}',
    rb'{"prompt": "\udfff", "max_tokens": 1}',
    rb'{"prompt": "x", "cache_salt": "\ud800", "max_tokens": 1}',
    rb'{"prompt": "x", "model": "\ud800", "max_tokens": 1}',
    b'{"prompt": "x", "deep": ' + b"[" * 2000 + b"]" * 2000 + b"}",
    b'{"prompt": "x", "deep": ' + b'{"a":' * 1999 + b"{}" + b"}" * 1999 + b"}",
]


@pytest.mark.parametrize("poison", _POISON)
def test_poison_bodies_are_400_and_the_connection_stays_usable(
    worker: Worker, poison: bytes
) -> None:
    path = "/v1/chat/completions" if b"messages" in poison else "/v1/completions"
    ports = set()
    with httpx.Client(base_url=worker.url, timeout=20) as c:
        bad = c.post(path, content=poison, headers={"content-type": "application/json"})
        ports.add(bad.extensions["network_stream"].get_extra_info("client_addr"))
        good = c.post("/v1/completions", json={"prompt": "fine", "max_tokens": 1})
        ports.add(good.extensions["network_stream"].get_extra_info("client_addr"))
    assert bad.status_code == 400, bad.text
    err = bad.json()["error"]
    assert err["type"] == "invalid_request_error" and err["code"] == "invalid_json"
    assert good.status_code == 200, good.text
    assert len(ports) == 1  # one keep-alive connection carried both: the same local port
    assert bad.headers.get("connection") != "close"


def test_models_report_the_max_tokens_cap(worker: Worker) -> None:
    (model,) = worker.client.get("/v1/models").json()["data"]
    assert model["max_tokens_cap"] == 32768
    r = worker.client.post("/v1/completions", json={"prompt": "x", "max_tokens": 32768})
    assert r.status_code == 200


def test_oversized_body_is_413(worker: Worker) -> None:
    big = json.dumps({"prompt": "x" * (2 * MAX_BODY)}).encode()
    r = worker.client.post(
        "/v1/completions", content=big, headers={"content-type": "application/json"}
    )
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "request_too_large"
    assert worker.health()["status"] == "ok"


def test_prompt_larger_than_the_kv_cache_is_400(worker: Worker) -> None:
    body = {"block_hashes": [], "prompt_tokens": CAPACITY * BLOCK + 1, "max_tokens": 1}
    r = worker.client.post("/v1/completions", json=body)
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "context_length_exceeded"


def test_unknown_route_and_method_are_openai_errors(worker: Worker) -> None:
    r = worker.client.get("/v1/nothing")
    assert r.status_code == 404
    assert r.json()["error"]["type"] == "not_found_error"
    assert worker.client.get("/v1/completions").status_code == 405


def _wait_idle(worker: Worker, timeout: float = 5.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        h = worker.health()
        if h["num_requests_running"] == 0 and h["open_requests"] == 0:
            return h
        if time.monotonic() > deadline:
            raise AssertionError(f"still busy: {h}")
        time.sleep(0.02)


def test_client_closing_a_stream_cancels_its_request(worker: Worker) -> None:
    aborts0 = worker.metric("vllm:request_success_total", 'finished_reason="abort"')
    finished0 = worker.health()["num_finished"]
    body = {"prompt": _uniq("dc"), "max_tokens": 32_000, "stream": True}
    with (
        httpx.Client(base_url=worker.url, timeout=10) as c,
        c.stream("POST", "/v1/completions", json=body) as r,
    ):
        lines = _sse_lines(r)
        for _ in range(3):
            next(lines)
        assert worker.health()["num_requests_running"] == 1
    # closing the client drops the connection mid-stream
    h = _wait_idle(worker)
    assert h["num_finished"] == finished0  # cancelled, not run to completion
    assert worker.metric("vllm:request_success_total", 'finished_reason="abort"') == aborts0 + 1
    assert worker.metric("vllm:num_requests_running") == 0


def test_client_giving_up_on_a_json_response_cancels_its_request(worker: Worker) -> None:
    aborts0 = worker.metric("vllm:request_success_total", 'finished_reason="abort"')
    body = {"prompt": _uniq("dc2"), "max_tokens": 32_000}
    with httpx.Client(base_url=worker.url, timeout=0.3) as c, pytest.raises(httpx.ReadTimeout):
        c.post("/v1/completions", json=body)
    _wait_idle(worker)
    assert worker.metric("vllm:request_success_total", 'finished_reason="abort"') == aborts0 + 1


def test_models_health_and_metrics(worker: Worker) -> None:
    models = worker.client.get("/v1/models").json()
    assert models["object"] == "list"
    assert models["data"][0]["id"] == "agentctl-sim"
    h = worker.health()
    assert h["block_size"] == BLOCK and h["capacity_blocks"] == CAPACITY
    assert 0.0 <= float(h["kv_cache_usage_perc"]) <= 1.0  # type: ignore[arg-type]
    text = worker.client.get("/metrics").text
    for name in (
        "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_hits_total",
        "vllm:num_requests_running",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:inter_token_latency_seconds_bucket",
        "vllm:e2e_request_latency_seconds_count",
    ):
        assert name in text, name
    assert worker.metric("vllm:time_to_first_token_seconds_count") > 0


def test_concurrent_requests_all_complete(worker: Worker) -> None:
    import concurrent.futures

    shared = _uniq("shared")

    def one(i: int) -> dict[str, object]:
        body = {"prompt": shared + f" turn {i}", "max_tokens": 20, "stream": i % 2 == 0}
        if i % 2:
            r = worker.client.post("/v1/completions", json=body)
            assert r.status_code == 200
            out: dict[str, object] = r.json()["usage"]
            return out
        with worker.client.stream("POST", "/v1/completions", json=body) as r:
            datas = list(_sse_lines(r))
        assert datas[-1] == "[DONE]"
        return {"completion_tokens": len(datas) - 2}

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(16)))
    assert all(r["completion_tokens"] == 20 for r in results)
    _wait_idle(worker)


def test_reset_prefix_cache_clears_and_announces(worker: Worker) -> None:
    body = {"prompt": _uniq("reset"), "max_tokens": 1}
    worker.client.post("/v1/completions", json=body)
    r = worker.client.post("/v1/admin/reset_prefix_cache")
    assert r.status_code == 200
    worker.collector.wait_for(
        lambda s: any(isinstance(e, AllBlocksCleared) for _, b in s for e in b.events)
    )
    again = worker.client.post("/v1/completions", json=body).json()
    assert again["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    seqs = [s for s, _ in worker.collector.snapshot()]
    assert seqs == list(range(len(seqs)))


def test_worker_config_file_and_bad_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "w.yaml"
    cfg.write_text("worker:\n  engine: {block_size: 16, bogus: 1}\n")
    res = children.run(
        [sys.executable, "-m", "agentctl.serving", "worker", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert res.returncode == 2
    assert "bogus" in res.stderr
