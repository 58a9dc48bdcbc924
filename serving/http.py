"""HTTP pieces the worker and the router share: OpenAI error handling and an SSE response
that notices a client disconnect at once."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from agentctl.serving.protocol import ProtocolError, error_body


def status_type(status: int) -> str:
    """OpenAI's error `type` for an HTTP status."""
    return {
        400: "invalid_request_error",
        401: "authentication_error",
        404: "not_found_error",
        405: "invalid_request_error",
        413: "invalid_request_error",
        503: "service_unavailable",
    }.get(status, "invalid_request_error" if status < 500 else "internal_server_error")


def install_error_handlers(
    app: FastAPI, *, on_refused: Callable[[Request, ProtocolError], None] | None = None
) -> None:
    """Every error leaves as an OpenAI error body, never a traceback; `on_refused` sees each
    request refused for bad input (the router counts them)."""

    async def on_protocol_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProtocolError)
        if on_refused is not None:
            on_refused(request, exc)
        return JSONResponse(exc.body(), status_code=exc.status)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return JSONResponse(
            error_body(str(exc.detail), status_type(exc.status_code), code=exc.status_code),
            status_code=exc.status_code,
            headers=exc.headers,
        )

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        return JSONResponse(error_body(str(exc)), status_code=400)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        return JSONResponse(
            error_body(f"internal error: {type(exc).__name__}", "internal_server_error"),
            status_code=500,
        )

    app.add_exception_handler(ProtocolError, on_protocol_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(Exception, on_unexpected)


class SSEResponse(Response):
    """A streaming response that reacts to a client disconnect by calling `on_disconnect`
    directly, instead of relying on cancelling the streaming task as Starlette's
    `StreamingResponse` does: that cancellation is only delivered once the task waits on an
    unfinished future, and a busy producer keeps finishing futures, so under load the
    disconnect could go unnoticed for seconds while the engine kept generating."""

    media_type = "text/event-stream"

    def __init__(
        self,
        content: AsyncIterator[bytes] | AsyncIterator[str],
        *,
        on_disconnect: Callable[[], None],
        headers: dict[str, str],
        status_code: int = 200,
    ) -> None:
        # not Response.__init__: it would render an empty body and send Content-Length: 0
        self.status_code = status_code
        self.background = None
        self.init_headers(headers)
        self._content = content
        self._on_disconnect = on_disconnect

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    self._on_disconnect()
                    return

        watcher = asyncio.ensure_future(watch())
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": self.status_code,
                    "headers": self.raw_headers,
                }
            )
            async for chunk in self._content:
                if watcher.done():
                    break
                body = chunk.encode() if isinstance(chunk, str) else chunk
                await send({"type": "http.response.body", "body": body, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:  # ASGI >= 2.4 servers report a gone client this way
            self._on_disconnect()
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            aclose = getattr(self._content, "aclose", None)
            if aclose is not None:
                await aclose()
