"""A large legal request on a real worker process: its parse, tokenize and hash run off the
event loop, so `/health` keeps answering while it is prepared (issue 14, item 2)."""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import children
import httpx
import pytest

BLOCK = 64
CAPACITY = 24_000  # blocks: 1.5M tokens, more than the 4.8 MiB prompt's
MAX_BODY = 16 * 1024 * 1024


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = _free_port()
    log_path: Path = tmp_path_factory.mktemp("worker") / "worker.log"
    argv = [
        sys.executable, "-m", "agentctl.serving", "worker",
        "--port", str(port), "--time-scale", "0.01",
        "--block-size", str(BLOCK), "--capacity-blocks", str(CAPACITY),
        "--max-body-bytes", str(MAX_BODY), "--log-level", "warning",
    ]  # fmt: skip
    with open(log_path, "wb") as log:
        proc = children.start(argv, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"worker exited {proc.returncode}: {log_path.read_text()}")
            try:
                if httpx.get(base + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"worker not healthy in 30 s: {log_path.read_text()}")
            time.sleep(0.05)
        yield base
    finally:
        children.stop(proc)


def _big_prompt(n_bytes: int) -> str:
    rng = random.Random(14)
    words = ["def", "return", "self", "value", "=", "(", ")", "import", "\n", "    "]
    parts: list[str] = []
    size = 0
    while size < n_bytes:
        w = rng.choice(words) + str(rng.randrange(100_000)) + " "
        parts.append(w)
        size += len(w)
    return "".join(parts)[:n_bytes]


def test_health_answers_while_a_large_prompt_is_prepared(url: str) -> None:
    prompt = _big_prompt(4_800_000)
    body = json.dumps({"messages": [{"role": "user", "content": prompt}], "max_tokens": 1})
    assert 4_700_000 < len(body) < MAX_BODY
    result: dict[str, object] = {}

    def send() -> None:
        r = httpx.post(
            url + "/v1/chat/completions",
            content=body.encode(),
            headers={"content-type": "application/json"},
            timeout=120,
        )
        result["status"] = r.status_code
        result["usage"] = r.json().get("usage")

    big = threading.Thread(target=send)
    big.start()
    seen_preparing: list[dict[str, object]] = []
    try:
        with httpx.Client(base_url=url, timeout=30) as c:
            while big.is_alive() and not seen_preparing:
                h = c.get("/health").json()
                if h["requests_preparing"] == 1:
                    # answered while the big body was being parsed and tokenized: on the loop
                    # that work would have kept this request waiting until it was over
                    seen_preparing.append(h)
            assert c.get("/health").json()["status"] == "ok"
    finally:
        big.join(120)
    assert seen_preparing, "/health never answered while the large request was prepared"
    assert seen_preparing[0]["open_requests"] == 0  # not yet submitted to the engine
    assert result["status"] == 200, result
    usage = result["usage"]
    assert isinstance(usage, dict) and usage["prompt_tokens"] > 1_000_000
    with httpx.Client(base_url=url, timeout=30) as c:
        assert c.get("/health").json()["requests_preparing"] == 0
