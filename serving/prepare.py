"""A request body to a `RequestSpec` without stalling the event loop, for worker and router.

Parsing, tokenizing and block hashing cost about 0.2 us a byte with the built-in tokenizer: a
4.8 MiB prompt is about a second of CPU. On the event loop that second is a second in which
`/health` and every other stream wait (a router then fences the worker). So a body over
`OFFLOAD_BYTES` is prepared in a small thread pool instead. The work is Python and holds the
GIL, but CPython hands the GIL to a waiting thread every `sys.getswitchinterval()` (5 ms), so the
loop's thread keeps answering, as long as no single C call runs long: the built-in tokenizer
cuts long texts for that reason (`tokenizer.split_text`), and `json.loads` of 16 MiB is about
20 ms. A process pool would avoid the GIL altogether, but would copy every large body to
another process and back and could not share the tokenizer's piece cache.

The pool is small (`POOL_THREADS`): more threads would only share the same GIL, and each extra
one lengthens the loop thread's wait for it. Small bodies are prepared inline: a thread hop
costs more than they do.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from agentctl.serving.protocol import (
    DEFAULT_MAX_TOKENS,
    RequestKind,
    parse_json_body,
    to_request_spec,
)
from agentctl.serving.tokenizer import Tokenizer
from agentctl.serving.types import RequestSpec

__all__ = ["OFFLOAD_BYTES", "POOL_THREADS", "prepare_request", "prepare_sync"]

#: bodies at least this large are prepared off the event loop
OFFLOAD_BYTES = 64 * 1024
POOL_THREADS = 2

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(POOL_THREADS, thread_name_prefix="prepare-request")
        return _pool


def prepare_sync(
    raw: bytes,
    headers: Mapping[str, str] | None,
    tokenizer: Tokenizer,
    block_size: int,
    request_id: str,
    *,
    kind: RequestKind,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
    max_tokens_cap: int | None = None,
    arrival_s: float = 0.0,
) -> tuple[dict[str, Any], RequestSpec]:
    """The decoded body and its `RequestSpec`; `ProtocolError` for anything invalid."""
    body = parse_json_body(raw)
    spec = to_request_spec(
        body,
        headers,
        tokenizer,
        block_size,
        request_id,
        kind=kind,
        default_max_tokens=default_max_tokens,
        max_tokens_cap=max_tokens_cap,
        arrival_s=arrival_s,
    )
    return body, spec


async def prepare_request(
    raw: bytes,
    headers: Mapping[str, str] | None,
    tokenizer: Tokenizer,
    block_size: int,
    request_id: str,
    *,
    kind: RequestKind,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
    max_tokens_cap: int | None = None,
    arrival_s: float = 0.0,
    offload_bytes: int = OFFLOAD_BYTES,
) -> tuple[dict[str, Any], RequestSpec]:
    """`prepare_sync`, in the thread pool when `raw` has `offload_bytes` or more."""
    # headers are copied: a Starlette `Headers` is not meant to be read from another thread
    hdrs = dict(headers) if headers is not None else None

    def work() -> tuple[dict[str, Any], RequestSpec]:
        return prepare_sync(
            raw,
            hdrs,
            tokenizer,
            block_size,
            request_id,
            kind=kind,
            default_max_tokens=default_max_tokens,
            max_tokens_cap=max_tokens_cap,
            arrival_s=arrival_s,
        )

    if len(raw) < offload_bytes:
        return work()
    return await asyncio.get_running_loop().run_in_executor(_executor(), work)
