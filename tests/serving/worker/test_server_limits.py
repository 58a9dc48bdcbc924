"""Slow and greedy clients against real worker and router processes (issue 14, item 10): a
connection that never completes its headers is closed, one address cannot hold more than its
share of connections, and ordinary requests go on meanwhile."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import children
import httpx
import pytest

PARTIAL = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: appl"
HEALTH = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
MODELS = b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"  # 200 on a router without workers


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _server(kind: str, tmp: Path, *flags: str) -> Iterator[int]:
    port = _free_port()
    argv = [sys.executable, "-m", "agentctl.serving", kind, "--port", str(port), *flags]
    log_path = tmp / f"{kind}-{port}.log"
    with open(log_path, "wb") as log:
        proc = children.start(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"{kind} exited {proc.returncode}: {log_path.read_text()}")
            try:
                httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{kind} not up in 30 s: {log_path.read_text()}")
            time.sleep(0.05)
        yield port
    finally:
        children.stop(proc)


def _connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    return s


def _closed_by_server(s: socket.socket) -> bool:
    """Waits (up to the socket's timeout) for the server to close; True if it did."""
    try:
        while True:
            data = s.recv(65536)
            if not data:
                return True
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def _health_over(s: socket.socket, request: bytes = HEALTH) -> bytes:
    s.sendall(request)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    length = next(
        (int(v) for k, _, v in (ln.partition(b":") for ln in head.split(b"\r\n"))
         if k.strip().lower() == b"content-length"),
        0,
    )  # fmt: skip
    while len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            break
        rest += chunk
    return head


def _admitted(port: int, request: bytes = HEALTH) -> socket.socket:
    """A new connection that got an answer to a request: retried while the server still
    counts a connection the client side has closed already (it learns of it a moment later)."""
    deadline = time.monotonic() + 10
    while True:
        s = _connect(port)
        try:
            head = _health_over(s, request)
        except (ConnectionResetError, BrokenPipeError):
            head = b""
        if head.startswith(b"HTTP/1.1 200"):
            return s
        s.close()
        assert time.monotonic() < deadline, head
        time.sleep(0.05)


def _refused(port: int) -> bytes:
    """What a connection over the cap gets: a 503 or nothing (closed)."""
    with _connect(port) as extra:
        try:
            extra.sendall(HEALTH)
            return extra.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return b""


def test_partial_headers_are_closed_after_the_header_timeout(tmp_path: Path) -> None:
    flags = ["--time-scale", "0.01", "--header-timeout", "1", "--log-level", "warning"]
    with _server("worker", tmp_path, *flags) as port:
        socks = [_connect(port) for _ in range(50)]
        try:
            for s in socks:
                s.sendall(PARTIAL)
            # a normal request is served while the 50 hang
            r = httpx.post(
                f"http://127.0.0.1:{port}/v1/completions", json={"prompt": "hi", "max_tokens": 1}
            )
            assert r.status_code == 200
            closed = [_closed_by_server(s) for s in socks]
        finally:
            for s in socks:
                s.close()
        assert all(closed), f"{closed.count(False)} of 50 still open"
        # a kept-alive connection that starts its next request and stalls is closed too
        with _connect(port) as s:
            assert _health_over(s).startswith(b"HTTP/1.1 200")
            s.sendall(b"GET /health HTTP/1.1\r\nHo")
            assert _closed_by_server(s)


def test_per_ip_cap_refuses_the_extra_connection(tmp_path: Path) -> None:
    cap = 20
    flags = ["--time-scale", "0.01", "--max-connections-per-ip", str(cap)]
    with _server("worker", tmp_path, *flags, "--log-level", "error") as port:
        held: list[socket.socket] = []
        try:
            held += [_admitted(port) for _ in range(cap)]  # each did a request, stays open
            refused = _refused(port)
            assert refused == b"" or refused.startswith(b"HTTP/1.1 503"), refused
            if refused:
                assert b"connection: close" in refused.lower()
                assert b"Too many connections" in refused
            assert _health_over(held[0]).startswith(b"HTTP/1.1 200")  # the held ones work
            held.pop().close()
            held.append(_admitted(port))  # once one closes, a new one is admitted again
        finally:
            for s in held:
                s.close()


def test_router_has_the_same_limits(tmp_path: Path) -> None:
    flags = ["--header-timeout", "1", "--max-connections-per-ip", "3", "--log-level", "error"]
    with _server("router", tmp_path, *flags) as port:
        with _connect(port) as slow:
            slow.sendall(PARTIAL)
            assert _closed_by_server(slow)
        held: list[socket.socket] = []
        try:
            held += [_admitted(port, MODELS) for _ in range(3)]
            refused = _refused(port)
            assert refused == b"" or b"Too many connections" in refused, refused
        finally:
            for s in held:
                s.close()
