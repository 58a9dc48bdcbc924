"""A minimal HTTP/1.1 GET over any socket-like stream, for `/metrics`.

The stream may be a plain socket or an SSH `direct-tcpip` channel (what `SSHConnector.open_tcp`
returns), so a node's loopback-only service is scraped through SSH without exposing anything
new on the node, and collectors need no import of the control side: the caller injects an
`OpenStream` callable.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable
from typing import Protocol

__all__ = [
    "MAX_BODY",
    "FetchError",
    "OpenStream",
    "SocketLike",
    "http_get_over",
    "metrics_fetcher",
    "open_socket",
]

#: refuse bodies past this size (a /metrics page is tens of KiB)
MAX_BODY = 16 * 1024 * 1024
_CHUNK = 65536


class FetchError(RuntimeError):
    """The GET failed: the stream broke, timed out, or the reply is not HTTP."""


class SocketLike(Protocol):
    """What `http_get_over` needs: a socket or a paramiko Channel both qualify."""

    def sendall(self, data: bytes, /) -> object: ...

    def recv(self, size: int, /) -> bytes: ...

    def settimeout(self, timeout: float | None, /) -> object: ...

    def close(self) -> object: ...


#: open a stream to (host, port) within `timeout` seconds
OpenStream = Callable[[str, int, float], SocketLike]


def open_socket(host: str, port: int, timeout: float) -> SocketLike:
    """An `OpenStream` for a directly reachable endpoint: a plain TCP connection."""
    return socket.create_connection((host, port), timeout=timeout)


def http_get_over(stream: SocketLike, host: str, path: str, timeout: float) -> tuple[int, bytes]:
    """GET `path` over `stream` (which it closes), within `timeout` seconds overall.

    Sends `Connection: close` and reads to the end of the body (Content-Length, chunked, or
    EOF). Returns (status, body). Raises `FetchError` on a timeout, a broken stream, a reply
    that is not HTTP/1.x, or a body over `MAX_BODY`.
    """
    deadline = time.monotonic() + timeout
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: agentctl-collector\r\n"
        "Accept: text/plain\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n"
    ).encode("ascii")
    try:
        stream.settimeout(timeout)
        stream.sendall(request)
        raw = _read_all(stream, deadline)
    except TimeoutError as exc:
        raise FetchError(f"GET {path} from {host}: no complete reply within {timeout:g}s") from exc
    except (OSError, EOFError) as exc:
        raise FetchError(f"GET {path} from {host}: {exc}") from exc
    finally:
        with contextlib.suppress(OSError, EOFError):
            stream.close()
    return _parse_response(raw, host, path)


def _read_all(stream: SocketLike, deadline: float) -> bytes:
    buf = bytearray()
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        stream.settimeout(remaining)
        data = stream.recv(_CHUNK)
        if not data:
            return bytes(buf)
        buf += data
        if len(buf) > MAX_BODY + 65536:
            raise FetchError(f"reply larger than {MAX_BODY} bytes")
        if _complete(buf):
            return bytes(buf)


def _complete(buf: bytearray) -> bool:
    """Whether a Content-Length reply is complete (chunked and EOF-delimited read to EOF)."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return False
    length = _headers(bytes(buf[:end])).get("content-length")
    return length is not None and length.isdigit() and len(buf) - end - 4 >= int(length)


def _headers(head: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in head.split(b"\r\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep:
            out[key.strip().lower().decode("latin-1")] = value.strip().decode("latin-1")
    return out


def _parse_response(raw: bytes, host: str, path: str) -> tuple[int, bytes]:
    where = f"GET {path} from {host}"
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        raise FetchError(f"{where}: connection closed before a complete HTTP reply")
    head, body = raw[:end], raw[end + 4 :]
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise FetchError(f"{where}: not an HTTP reply: {status_line[:80]!r}")
    headers = _headers(head)
    if "chunked" in headers.get("transfer-encoding", "").lower():
        body = _dechunk(body, where)
    elif (length := headers.get("content-length")) is not None:
        if not length.isdigit() or len(body) < int(length):
            raise FetchError(f"{where}: body shorter than its Content-Length {length}")
        body = body[: int(length)]
    return int(parts[1]), body


def _dechunk(body: bytes, where: str) -> bytes:
    out = bytearray()
    pos = 0
    while True:
        eol = body.find(b"\r\n", pos)
        if eol < 0:
            raise FetchError(f"{where}: truncated chunked body")
        try:
            size = int(body[pos:eol].split(b";", 1)[0], 16)
        except ValueError as exc:
            raise FetchError(f"{where}: bad chunk size") from exc
        if size == 0:
            return bytes(out)
        start = eol + 2
        if len(body) < start + size:
            raise FetchError(f"{where}: truncated chunked body")
        out += body[start : start + size]
        pos = start + size + 2


def metrics_fetcher(
    open_stream: OpenStream, *, path: str = "/metrics", timeout: float = 10.0
) -> Callable[[str], str]:
    """A `fetch(endpoint)` for `ScrapeState`: endpoint `host:port`, streams from `open_stream`
    (e.g. `open_socket`, or an SSH connector's `open_tcp`). Raises `FetchError` on a non-200."""

    def fetch(endpoint: str) -> str:
        host, sep, port = endpoint.rpartition(":")
        if not sep or not port.isdigit():
            raise FetchError(f"endpoint {endpoint!r} is not host:port")
        host = host.strip("[]")
        try:
            stream = open_stream(host, int(port), timeout)
        except (OSError, EOFError) as exc:
            raise FetchError(f"cannot reach {endpoint}: {exc}") from exc
        status, body = http_get_over(stream, endpoint, path, timeout)
        if status != 200:
            raise FetchError(f"GET {path} from {endpoint}: HTTP {status}")
        return body.decode("utf-8", errors="replace")

    return fetch
