"""The HTTP server of the worker and the router: uvicorn, hardened against slow clients.

uvicorn closes idle keep-alive connections (`timeout_keep_alive`) but has no deadline for a
request's headers and no per-client limit, so 1,500 connections that each send half a header
line hold 1,500 sockets (and file descriptors) for as long as they like: slowloris. `serve`
runs uvicorn with `LimitedH11Protocol`, its h11 protocol plus:

- a header deadline: a connection must deliver a request's complete headers within
  `header_timeout_s` of opening, or of the first byte of its next request on a kept-alive
  connection, else it is closed (the idle time between requests is the keep-alive timeout's);
- a per-IP cap: a peer address holding `max_connections_per_ip` connections gets a 503 (with
  `Connection: close`) and its new connection closed at once; 0 means no cap.

Idle keep-alive connections are closed after `keepalive_timeout_s`. Keep it above the
clients' own keep-alive expiry (httpx: 5 s): a server that closes an idle connection just as a
client reuses it makes that client's request fail with a reset connection.

The subclass relies on uvicorn's `H11Protocol` internals (`cycle`, `handle_events`,
`data_received`); `tests/serving/worker/test_server_limits.py` pins the behaviour.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any, Protocol

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

__all__ = ["LimitedH11Protocol", "ServerSettings", "limited_protocol", "serve", "server_config"]


class ServerSettings(Protocol):
    """What `serve` reads from a `WorkerConfig` or a `RouterConfig`."""

    host: str
    port: int
    log_level: str
    header_timeout_s: float
    keepalive_timeout_s: float
    max_connections_per_ip: int


_REFUSED_BODY = json.dumps(
    {
        "error": {
            "message": "Too many connections from your address.",
            "type": "service_unavailable",
            "param": None,
            "code": 503,
        }
    }
).encode()
_REFUSED = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"content-type: application/json\r\n"
    b"connection: close\r\n"
    b"retry-after: 1\r\n"
    b"content-length: " + str(len(_REFUSED_BODY)).encode() + b"\r\n\r\n" + _REFUSED_BODY
)


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header deadline and a per-IP connection cap (see the
    module docstring). Configure a subclass with `limited_protocol`."""

    header_timeout_s: float = 10.0
    max_connections_per_ip: int = 0
    #: open (admitted) connections per peer address, shared by every connection of a server
    per_ip: Counter[str] = Counter()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None
        self._peer_ip: str | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ip = self.client[0] if self.client else None
        cap = self.max_connections_per_ip
        if ip is not None and cap > 0:
            if self.per_ip[ip] >= cap:
                self.logger.warning("refused a connection from %s: %d already open", ip, cap)
                transport.write(_REFUSED)
                transport.close()
                return
            self.per_ip[ip] += 1
            self._peer_ip = ip
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        ip, self._peer_ip = self._peer_ip, None
        if ip is not None:
            self.per_ip[ip] -= 1
            if self.per_ip[ip] <= 0:
                del self.per_ip[ip]
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._header_timer is None and (self.cycle is None or self.cycle.response_complete):
            self._arm_header_timer()  # the first bytes of the next request on this connection
        super().data_received(data)

    def handle_events(self) -> None:
        before = self.cycle
        super().handle_events()
        if self.cycle is not before:  # a request's headers are complete: it has a cycle
            self._cancel_header_timer()

    def _arm_header_timer(self) -> None:
        if self.header_timeout_s > 0 and not self.transport.is_closing():
            self._header_timer = self.loop.call_later(self.header_timeout_s, self._header_late)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _header_late(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.logger.info(
                "closed a connection from %s: no complete headers in time", self.client
            )
            self.transport.close()


def limited_protocol(
    header_timeout_s: float, max_connections_per_ip: int
) -> type[LimitedH11Protocol]:
    """A `LimitedH11Protocol` subclass with these limits and its own per-IP counter."""
    return type(
        "LimitedH11Protocol",
        (LimitedH11Protocol,),
        {
            "header_timeout_s": header_timeout_s,
            "max_connections_per_ip": max_connections_per_ip,
            "per_ip": Counter(),
        },
    )


def server_config(app: Any, cfg: ServerSettings, *, access_log: bool = False) -> uvicorn.Config:
    """The uvicorn configuration `serve` runs (tests run it in a `uvicorn.Server`)."""
    return uvicorn.Config(
        app,
        host=cfg.host,
        port=cfg.port,
        log_level=cfg.log_level,
        access_log=access_log,
        timeout_graceful_shutdown=5,
        # typed int, used as call_later's delay: a float works (the tests' short timeouts)
        timeout_keep_alive=cfg.keepalive_timeout_s,  # type: ignore[arg-type]
        http=limited_protocol(cfg.header_timeout_s, cfg.max_connections_per_ip),
    )


def serve(app: Any, cfg: ServerSettings, *, access_log: bool = False) -> None:
    """Run `app` until SIGINT / SIGTERM, as `uvicorn.run` would, with the limits of `cfg`."""
    uvicorn.Server(server_config(app, cfg, access_log=access_log)).run()
