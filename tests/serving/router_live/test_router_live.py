"""The router as a real process in front of two real worker processes on loopback: streaming
through the router, KV-aware routing fed by real ZMQ events, bad input, the admin API, and a
worker killed with SIGKILL (in-flight requests fail fast, later ones go to the survivor).
No mocks. Tests run in file order and share one fleet; the kill test comes last."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import children
import httpx
import pytest

WORKER_HEADER = "x-agentctl-worker"
MAX_BODY = 200_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Proc:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    url: str
    events: str = ""
    replay: str = ""


@dataclass
class Fleet:
    router: Proc
    workers: dict[str, Proc]
    client: httpx.Client

    def health(self) -> dict[str, object]:
        body: dict[str, object] = self.client.get("/health").json()
        return body

    def metric(self, name: str, labels: str = "") -> float:
        total = 0.0
        for line in self.client.get("/metrics").text.splitlines():
            if line.startswith(name) and not line.startswith("#") and labels in line:
                head = line.split("{", 1)[0].split(" ", 1)[0]
                if head == name:
                    total += float(line.rsplit(" ", 1)[1])
        return total


def _start(argv: list[str], log_path: Path) -> subprocess.Popen[bytes]:
    """Its own group with SIGINT at default: the fixture's SIGINT stops it whatever pytest's
    own SIGINT disposition is, and a SIGKILL of the group leaves nothing behind."""
    with open(log_path, "wb") as log:
        return children.start(argv, stdout=log, stderr=subprocess.STDOUT)


def _wait_healthy(p: Proc, pred: object = None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if p.proc.poll() is not None:
            pytest.fail(f"{p.name} exited {p.proc.returncode}: {p.log.read_text()}")
        try:
            r = httpx.get(p.url + "/health", timeout=2.0)
            if r.status_code == 200 and (pred is None or (callable(pred) and pred(r.json()))):
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{p.name} not healthy in {timeout} s: {p.log.read_text()}")
        time.sleep(0.05)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    tmp = tmp_path_factory.mktemp("router_live")
    procs: list[Proc] = []
    workers: dict[str, Proc] = {}
    try:
        for i in range(2):
            port, ev, rp = _free_port(), _free_port(), _free_port()
            events, replay = f"tcp://127.0.0.1:{ev}", f"tcp://127.0.0.1:{rp}"
            log = tmp / f"w{i}.log"
            argv = [
                sys.executable, "-m", "agentctl.serving", "worker",
                "--port", str(port), "--time-scale", "0.01",
                "--events", events, "--replay", replay, "--log-level", "warning",
            ]  # fmt: skip
            p = Proc(f"w{i}", _start(argv, log), log, f"http://127.0.0.1:{port}", events, replay)
            procs.append(p)
            workers[p.name] = p
        for p in procs:
            _wait_healthy(p)
        rport = _free_port()
        argv = [
            sys.executable, "-m", "agentctl.serving", "router",
            "--port", str(rport), "--policy", "kv", "--health-interval", "0.3",
            "--max-body-bytes", str(MAX_BODY), "--log-level", "warning",
        ]  # fmt: skip
        for name, p in workers.items():
            argv += ["--worker", f"{p.url},events={p.events},replay={p.replay},id={name}"]
        rlog = tmp / "router.log"
        router = Proc("router", _start(argv, rlog), rlog, f"http://127.0.0.1:{rport}")
        procs.append(router)
        _wait_healthy(
            router, lambda b: all(w["healthy"] for w in b["workers"]) and len(b["workers"]) == 2
        )
        with httpx.Client(base_url=router.url, timeout=20.0) as client:
            yield Fleet(router, workers, client)
    finally:
        for p in reversed(procs):  # the router first: it stops sending to the workers
            if p.proc.returncode is None:
                p.proc.send_signal(signal.SIGINT)
        for p in procs:
            children.stop(p.proc, first=None)


def _long_prompt(tag: str, words: int = 600) -> str:
    return f"[{tag}] " + " ".join(f"tok{i % 97}x{tag}" for i in range(words))


def _chat(content: str, **extra: object) -> dict[str, object]:
    return {"model": "agentctl-sim", "messages": [{"role": "user", "content": content}], **extra}


def _sse_events(text: str) -> list[str]:
    return [e[len("data: ") :] for e in text.split("\n\n") if e.startswith("data: ")]


def test_streamed_chat_through_router(fleet: Fleet) -> None:
    body = _chat("hello router", max_tokens=12, stream=True, stream_options={"include_usage": True})
    with fleet.client.stream("POST", "/v1/chat/completions", json=body) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers[WORKER_HEADER] in fleet.workers
        text = "".join(r.iter_text())
    events = _sse_events(text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    content = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
    assert len(content) == 12
    assert chunks[-1]["usage"]["completion_tokens"] == 12
    # a plain completion, non-streaming, through the other endpoint
    r2 = fleet.client.post("/v1/completions", json={"prompt": "abc", "max_tokens": 3})
    assert r2.status_code == 200, r2.text
    assert r2.json()["usage"]["completion_tokens"] == 3


def test_same_prompt_lands_on_same_worker_and_hits_cache(fleet: Fleet) -> None:
    body = _chat(_long_prompt("affinity"), max_tokens=4)
    r1 = fleet.client.post("/v1/chat/completions", json=body)
    assert r1.status_code == 200, r1.text
    first = r1.headers[WORKER_HEADER]
    # the worker's BlockStored events reach the router's confirmed layer
    deadline = time.monotonic() + 30  # a wait, not a measurement
    while True:
        index = fleet.health()["index"]
        assert isinstance(index, dict)
        if index["confirmed_blocks"] > 0:
            break
        assert time.monotonic() < deadline, f"no KV events reached the router: {index}"
        time.sleep(0.05)
    assert fleet.metric("agentctl_router_kv_event_batches_total") > 0
    assert fleet.metric("agentctl_router_index_blocks", 'layer="confirmed"') > 0
    r2 = fleet.client.post("/v1/chat/completions", json=body)
    assert r2.status_code == 200, r2.text
    assert r2.headers[WORKER_HEADER] == first
    assert r2.json()["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
    assert fleet.metric("agentctl_router_predicted_hit_blocks_sum", 'layer="confirmed"') > 0
    assert fleet.metric("agentctl_router_requests_total", f'worker="{first}"') >= 2


def test_models_health_metrics(fleet: Fleet) -> None:
    models = fleet.client.get("/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["agentctl-sim"]
    h = fleet.health()
    assert h["status"] == "ok" and h["policy"] == "kv"
    assert fleet.metric("agentctl_router_decision_seconds_count") > 0


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        (b"{not json", 400, "invalid_json"),
        (b"[1, 2]", 400, "invalid_json"),
        (b'{"model": "m"}', 400, None),
        (b'{"messages": "nope"}', 400, None),
    ],
)
def test_bad_input(fleet: Fleet, content: bytes, status: int, code: str | None) -> None:
    r = fleet.client.post(
        "/v1/chat/completions", content=content, headers={"content-type": "application/json"}
    )
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["type"] == "invalid_request_error" and err["message"]
    if code is not None:
        assert err["code"] == code


def test_oversized_body_413(fleet: Fleet) -> None:
    r = fleet.client.post("/v1/completions", json={"prompt": "x" * (MAX_BODY + 10)})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "request_too_large"


def test_admin_remove_add_drain(fleet: Fleet) -> None:
    c = fleet.client
    listed = c.get("/admin/workers").json()["workers"]
    assert {w["id"] for w in listed} == {"w0", "w1"}
    w1 = fleet.workers["w1"]
    assert c.delete("/admin/workers/w1").status_code == 200
    assert c.delete("/admin/workers/w1").status_code == 404
    assert {w["id"] for w in c.get("/admin/workers").json()["workers"]} == {"w0"}
    for i in range(4):
        r = c.post("/v1/completions", json={"prompt": f"only w0 {i}", "max_tokens": 2})
        assert r.status_code == 200 and r.headers[WORKER_HEADER] == "w0"
    # w1 caches a prefix while the router is not listening: its events are missed
    missed = _long_prompt("missed")
    direct = httpx.post(w1.url + "/v1/completions", json={"prompt": missed, "max_tokens": 1})
    assert direct.status_code == 200
    spec = {"id": "w1", "url": w1.url, "events": w1.events, "replay": w1.replay}
    snap = ("agentctl_router_kv_snapshots_total", 'outcome="ok",worker="w1"')
    snapshots_before = fleet.metric(*snap)
    r = c.post("/admin/workers", json=spec)
    assert r.status_code == 201, r.text
    # the router takes w1's cache snapshot as it joins: the missed prefix is known at once
    deadline = time.monotonic() + 30  # a wait, not a measurement
    while fleet.metric(*snap) <= snapshots_before:
        assert time.monotonic() < deadline, [
            ln for ln in c.get("/metrics").text.splitlines() if "kv_" in ln and "#" not in ln
        ]
        time.sleep(0.1)
    r = c.post("/v1/completions", json={"prompt": missed, "max_tokens": 1})
    assert r.status_code == 200 and r.headers[WORKER_HEADER] == "w1"
    assert r.json()["usage"]["prompt_tokens_details"]["cached_tokens"] > 0
    assert c.post("/admin/workers", json=spec).status_code == 409
    assert c.post("/admin/workers", content=b"{oops").status_code == 400
    assert c.post("/admin/workers", json={"id": "x"}).status_code == 400
    assert c.post("/admin/workers/w0/drain").json()["draining"] is True
    for i in range(4):
        r = c.post("/v1/completions", json={"prompt": f"drained w0 {i}", "max_tokens": 2})
        assert r.status_code == 200 and r.headers[WORKER_HEADER] == "w1"
    assert c.post("/admin/workers/w1/drain").status_code == 200
    r = c.post("/v1/completions", json={"prompt": "nobody", "max_tokens": 2})
    assert r.status_code == 503
    assert r.json()["error"]["type"] == "service_unavailable"
    assert c.post("/admin/workers/w0/undrain").status_code == 200
    assert c.post("/admin/workers/w1/undrain").status_code == 200
    assert c.post("/admin/workers/nope/drain").status_code == 404
    assert fleet.health()["status"] == "ok"


def test_kill_worker_in_flight_migrates_to_survivor(fleet: Fleet) -> None:
    """A worker killed mid-request: its stream goes on from the survivor as one stream (same
    id, every token, one [DONE], no error), and a non-streaming request is re-sent."""
    c = fleet.client
    limit = 20_000  # long enough to be in flight at the kill, whatever the machine's speed
    body = _chat("a long generation", max_tokens=limit, stream=True)
    body["stream_options"] = {"include_usage": True}
    with c.stream("POST", "/v1/chat/completions", json=body, timeout=30.0) as r:
        assert r.status_code == 200
        victim = r.headers[WORKER_HEADER]
        it = r.iter_text()
        got = ""
        while got.count("data:") < 5:
            got += next(it)
        # a non-streaming request in flight to the same worker (the other one drained)
        other = next(n for n in fleet.workers if n != victim)
        assert c.post(f"/admin/workers/{other}/drain").status_code == 200
        result: dict[str, object] = {}

        def blocking() -> None:
            body2 = _chat("another long one", max_tokens=limit)
            with httpx.Client(base_url=fleet.router.url, timeout=30.0) as c2:
                resp = c2.post("/v1/chat/completions", json=body2)
            result["status"], result["body"] = resp.status_code, resp.json()
            result["worker"] = resp.headers.get(WORKER_HEADER)

        th = threading.Thread(target=blocking)
        th.start()
        time.sleep(0.3)
        assert c.post(f"/admin/workers/{other}/undrain").status_code == 200
        fleet.workers[victim].proc.send_signal(signal.SIGKILL)
        rest = "".join(it)
        th.join(60)
    assert not th.is_alive(), "non-streaming request hung"
    survivor = next(n for n in fleet.workers if n != victim)
    assert result["status"] == 200, result
    assert result["worker"] == survivor
    events = _sse_events(got + rest)
    assert events[-1] == "[DONE]" and events.count("[DONE]") == 1
    chunks = [json.loads(e) for e in events[:-1]]
    assert not [ch for ch in chunks if "error" in ch], "the client saw the failure"
    assert len({ch["id"] for ch in chunks}) == 1, "one stream, one id"
    roles = [ch for ch in chunks if ch["choices"] and "role" in ch["choices"][0]["delta"]]
    assert len(roles) == 1, "one opening role chunk"
    content = [ch for ch in chunks if ch["choices"] and ch["choices"][0]["delta"].get("content")]
    assert len(content) == limit, "every token, once"
    finishes = [ch for ch in chunks if ch["choices"] and ch["choices"][0].get("finish_reason")]
    assert len(finishes) == 1
    assert chunks[-1]["usage"]["completion_tokens"] == limit
    metrics = c.get("/metrics").text
    assert 'agentctl_router_migrations_total{reason="stream"} 1.0' in metrics, metrics
    # the non-streaming one was re-sent: before its answer's headers (a retry) or after
    assert re.search(
        r'agentctl_router_(retries|migrations)_total\{reason="(connect|resend)"\}', metrics
    )
    for i in range(6):
        r2 = c.post("/v1/completions", json={"prompt": f"after kill {i}", "max_tokens": 3})
        assert r2.status_code == 200, r2.text
        assert r2.headers[WORKER_HEADER] == survivor
    workers = fleet.health()["workers"]
    assert isinstance(workers, list)
    states = {w["id"]: w["healthy"] for w in workers}
    assert states == {victim: False, survivor: True}
    # with the survivor drained as well, nothing is left: 503 with Retry-After, not a hang
    assert c.post(f"/admin/workers/{survivor}/drain").status_code == 200
    r3 = c.post("/v1/chat/completions", json=_chat("x", max_tokens=1))
    assert r3.status_code == 503 and r3.headers["retry-after"] == "1"
    assert c.post(f"/admin/workers/{survivor}/undrain").status_code == 200
