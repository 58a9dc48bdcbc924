"""OpenAI-compatible request and response shapes, shared by the worker and the router.

Pure: pydantic models and functions, no server code, so the router imports the very parsing
the worker uses and both derive the same `RequestSpec` (and block hashes) from one body.

Requests. `/v1/completions` (`prompt`) and `/v1/chat/completions` (`messages`) with the usual
OpenAI fields (`model`, `max_tokens` / `max_completion_tokens`, `stream`, `stream_options`;
sampling fields such as `temperature` and `stop` are accepted and ignored; unknown fields are
ignored, as OpenAI-compatible servers do). agentctl extensions, all optional:

- `prompt_token_ids: [int]`: the prompt as token ids (the text is then ignored);
- `block_hashes: [u64]` + `prompt_tokens: int`: trace replay, the prompt as explicit chained block
  hashes (see `hashing.py`) and its length in tokens (default `len(block_hashes) * block_size`);
- `cache_salt: str`: isolates a tenant's prefix cache (changes every block hash, as vLLM's);
- Dynamo's `nvext`: `agent_hints {priority, osl, speculative_prefill}`,
  `session_control {session_id}`, `cache_control {type: "ephemeral", ttl: "5m" | seconds}`;
  the session id may also come in the `X-Dynamo-Session-ID` header (the body wins).

Errors are `ProtocolError`s carrying an HTTP status and an OpenAI error body
(`{"error": {"message", "type", "param", "code"}}`); `error_body` builds one for anything else.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentctl.serving.hashing import block_hashes_from_tokens, namespace_root
from agentctl.serving.tokenizer import Tokenizer, encode_chat, render_chat
from agentctl.serving.types import RequestSpec

__all__ = [
    "DEFAULT_CACHE_TTL_S",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_TOKENS",
    "DEFAULT_MAX_TOKENS_CAP",
    "MAX_JSON_DEPTH",
    "SESSION_HEADER",
    "SSE_DONE",
    "AgentHints",
    "CacheControl",
    "ChatCompletionRequest",
    "ChatMessage",
    "CompletionRequest",
    "NvExt",
    "PromptInfo",
    "ProtocolError",
    "RequestKind",
    "SessionControl",
    "StreamOptions",
    "chat_chunk",
    "chat_completion_response",
    "completion_chunk",
    "completion_response",
    "error_body",
    "parse_json_body",
    "parse_request",
    "parse_ttl",
    "read_limited",
    "resolve_prompt",
    "session_id_of",
    "sse",
    "to_request_spec",
    "usage",
    "usage_chunk",
]

RequestKind = Literal["chat", "completion"]

SESSION_HEADER = "X-Dynamo-Session-ID"
DEFAULT_MAX_TOKENS = 256
#: the most tokens one request may ask for unless a server is configured otherwise
DEFAULT_MAX_TOKENS_CAP = 32768
DEFAULT_CACHE_TTL_S = 300.0
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
SSE_DONE = "data: [DONE]\n\n"

_U32 = 1 << 32
_U64 = 1 << 64


# ---- errors --------------------------------------------------------------------------------


def error_body(
    message: str,
    type: str = "invalid_request_error",
    param: str | None = None,
    code: str | int | None = None,
) -> dict[str, Any]:
    """OpenAI's error envelope."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class ProtocolError(Exception):
    """A request the server must refuse with `status` and an OpenAI error body."""

    def __init__(
        self,
        message: str,
        status: int = 400,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


# ---- request models ------------------------------------------------------------------------


class _Lenient(BaseModel):
    """Unknown fields are kept and ignored: clients send many we do not model. Known fields
    are strict: `max_tokens: true`, `stream: "yes"` or `n: "2"` is a client bug to report,
    not to guess at (an int is still a valid float)."""

    model_config = ConfigDict(extra="allow", strict=True)


class AgentHints(_Lenient):
    #: higher is sooner (Dynamo polarity)
    priority: int = 0
    #: expected output length in tokens
    osl: int | None = Field(default=None, ge=0)
    speculative_prefill: bool = False


class SessionControl(_Lenient):
    session_id: str | None = None
    action: str | None = None
    timeout: float | None = None


class CacheControl(_Lenient):
    type: str = "ephemeral"
    #: "300s", "5m", "1h", or seconds; default 300 s
    ttl: str | float | None = None


class NvExt(_Lenient):
    agent_hints: AgentHints | None = None
    session_control: SessionControl | None = None
    cache_control: CacheControl | None = None


class StreamOptions(_Lenient):
    include_usage: bool = False


class _RequestBase(_Lenient):
    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = 1
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = None
    # agentctl extensions
    prompt_token_ids: list[int] | None = None
    block_hashes: list[int] | None = None
    prompt_tokens: int | None = Field(default=None, ge=1)
    cache_salt: str | None = None
    nvext: NvExt | None = None

    def output_limit(self, default: int = DEFAULT_MAX_TOKENS) -> int:
        """Tokens to generate: `max_completion_tokens`, else `max_tokens`, else `default`."""
        if self.max_completion_tokens is not None:
            return self.max_completion_tokens
        if self.max_tokens is not None:
            return self.max_tokens
        return default

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class CompletionRequest(_RequestBase):
    prompt: str | list[str] | list[int] | list[list[int]] | None = None


class ChatMessage(_Lenient):
    role: str
    content: str | list[Any] | None = None
    name: str | None = None
    tool_calls: list[Any] | None = None
    tool_call_id: str | None = None


class ChatCompletionRequest(_RequestBase):
    messages: list[ChatMessage] | None = None


AnyRequest = CompletionRequest | ChatCompletionRequest


# ---- parsing -------------------------------------------------------------------------------


#: deepest nesting of arrays and objects a body may have; deeper ones would exhaust the
#: recursion of the JSON codec or of pydantic somewhere down the line (a 500)
MAX_JSON_DEPTH = 64
#: a `\\uD800`-`\\uDFFF` escape: after decoding, only an unpaired one leaves a surrogate
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not valid JSON")


def _bad_json(message: str) -> ProtocolError:
    return ProtocolError(
        f"We could not parse the JSON body of your request: {message}", code="invalid_json"
    )


def _check_decoded(obj: object, surrogates: bool) -> None:
    """Nesting at most `MAX_JSON_DEPTH`; with `surrogates`, no string (key or value) holding
    an unpaired surrogate, which no UTF-8 encoder can write back (a 500 on the way out)."""
    stack: list[tuple[object, int]] = [(obj, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            items: Any = node.values()
            if surrogates and any(_SURROGATE.search(k) for k in node):
                raise _bad_json("a key holds an unpaired UTF-16 surrogate")
        elif isinstance(node, list):
            items = node
        else:
            if surrogates and isinstance(node, str) and _SURROGATE.search(node):
                raise _bad_json("a string holds an unpaired UTF-16 surrogate (\\uD800-\\uDFFF)")
            continue
        if depth > MAX_JSON_DEPTH:
            raise _bad_json(f"arrays and objects nest more than {MAX_JSON_DEPTH} levels deep")
        stack.extend((child, depth + 1) for child in items)


def parse_json_body(raw: bytes | str) -> dict[str, Any]:
    """The JSON object in a request body; `ProtocolError` 400 for anything else.

    Stricter than `json.loads`, which would let through what breaks later with a 500: the
    body must be UTF-8 (json.loads also takes UTF-16/32 and lets encoded surrogates pass),
    `NaN` / `Infinity` are refused (not JSON), and so are unpaired surrogate escapes and
    nesting deeper than `MAX_JSON_DEPTH`."""
    try:
        if isinstance(raw, bytes | bytearray):
            text = bytes(raw).decode("utf-8")
        else:
            raw.encode("utf-8")  # a str with surrogates already in it
            text = raw
        obj = json.loads(text.removeprefix("\ufeff"), parse_constant=_no_constant)
    except UnicodeError:
        raise _bad_json("the body is not valid UTF-8") from None
    except RecursionError:
        raise _bad_json(f"arrays and objects nest more than {MAX_JSON_DEPTH} levels deep") from None
    except ValueError as exc:
        raise _bad_json(str(exc)) from None
    if not isinstance(obj, dict):
        raise ProtocolError("The request body must be a JSON object.", code="invalid_json")
    _check_decoded(obj, surrogates=_SURROGATE_ESCAPE.search(text) is not None)
    return obj


async def read_limited(
    chunks: AsyncIterable[bytes], limit: int, content_length: str | None = None
) -> bytes:
    """Read a request body of at most `limit` bytes, else `ProtocolError` 413.

    An oversized body is still drained (up to 4x the limit, at least 64 MiB) before the error,
    so the client gets the 413 instead of a connection reset halfway through its upload."""
    declared: int | None = None
    if content_length is not None:
        try:
            declared = int(content_length)
        except ValueError:
            raise ProtocolError("Invalid Content-Length header.") from None
    too_big = declared is not None and declared > limit
    drain_cap = max(4 * limit, 64 * 1024 * 1024)
    parts: list[bytes] = []
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > limit:
            too_big = True
        if too_big:
            parts.clear()
            if total > drain_cap:
                break
        else:
            parts.append(chunk)
    if too_big:
        raise ProtocolError(
            f"Request body too large: limit is {limit} bytes.",
            413,
            code="request_too_large",
        )
    return b"".join(parts)


def _validation_message(exc: ValidationError) -> tuple[str, str | None]:
    errs = exc.errors()
    if not errs:
        return "Invalid request.", None
    first = errs[0]
    loc = ".".join(str(p) for p in first.get("loc", ()))
    msg = first.get("msg", "invalid value")
    more = f" (and {len(errs) - 1} more errors)" if len(errs) > 1 else ""
    return (f"{loc}: {msg}{more}" if loc else f"{msg}{more}"), (loc or None)


def parse_request(body: Mapping[str, Any], kind: RequestKind) -> AnyRequest:
    """Validate a decoded body as a completion or chat request; `ProtocolError` 400 if bad."""
    cls: type[AnyRequest] = ChatCompletionRequest if kind == "chat" else CompletionRequest
    try:
        req = cls.model_validate(dict(body))
    except ValidationError as exc:
        msg, param = _validation_message(exc)
        raise ProtocolError(msg, param=param) from None
    if req.n != 1:
        raise ProtocolError("Only n=1 is supported.", param="n")
    return req


class PromptInfo(BaseModel):
    """A request's prompt as the engine sees it."""

    model_config = ConfigDict(frozen=True)

    #: known token ids (text or `prompt_token_ids`); None for `block_hashes` requests
    token_ids: tuple[int, ...] | None
    block_hashes: tuple[int, ...]
    prompt_tokens: int


def _check_token_ids(ids: list[int], param: str) -> None:
    for t in ids:
        if not 0 <= t < _U32:
            raise ProtocolError(f"{param}: token ids must be in [0, 2**32), got {t}", param=param)


def _text_of(req: AnyRequest) -> str:
    if isinstance(req, ChatCompletionRequest):
        if not req.messages:
            raise ProtocolError(
                "'messages' is required and must not be empty (or send prompt_token_ids or "
                "block_hashes).",
                param="messages",
            )
        return render_chat([m.model_dump(exclude_none=True) for m in req.messages])
    prompt = req.prompt
    if prompt is None:
        raise ProtocolError(
            "'prompt' is required (or send prompt_token_ids or block_hashes).", param="prompt"
        )
    if isinstance(prompt, str):
        return prompt
    if not prompt:
        raise ProtocolError("The prompt is empty.", param="prompt")
    if len(prompt) == 1 and isinstance(prompt[0], str):
        return prompt[0]
    raise ProtocolError("Batched prompts are not supported: send one prompt.", param="prompt")


def resolve_prompt(req: AnyRequest, tokenizer: Tokenizer, block_size: int) -> PromptInfo:
    """Token ids, block hashes and length of the prompt; explicit ids or hashes win over text."""
    seed = 0 if req.cache_salt is None else namespace_root("cache_salt:" + req.cache_salt)
    if req.block_hashes is not None:
        for h in req.block_hashes:
            if not 0 <= h < _U64:
                raise ProtocolError(
                    f"block_hashes: hashes must be in [0, 2**64), got {h}", param="block_hashes"
                )
        n = len(req.block_hashes)
        tokens = req.prompt_tokens if req.prompt_tokens is not None else n * block_size
        if tokens < n * block_size:
            raise ProtocolError(
                f"prompt_tokens ({tokens}) is less than block_hashes x block size "
                f"({n} x {block_size}).",
                param="prompt_tokens",
            )
        if tokens <= 0:
            raise ProtocolError("The prompt is empty.", param="prompt_tokens")
        return PromptInfo(
            token_ids=None, block_hashes=tuple(req.block_hashes), prompt_tokens=tokens
        )
    ids: list[int] | None = req.prompt_token_ids
    param = "prompt_token_ids"
    if ids is None and isinstance(req, CompletionRequest) and isinstance(req.prompt, list):
        p = req.prompt
        first = p[0] if p else None
        if p and all(isinstance(x, int) for x in p):
            ids, param = [x for x in p if isinstance(x, int)], "prompt"
        elif len(p) == 1 and isinstance(first, list):
            ids, param = list(first), "prompt"
    if ids is None:
        if isinstance(req, ChatCompletionRequest) and req.messages:
            ids = encode_chat(tokenizer, [m.model_dump(exclude_none=True) for m in req.messages])
        else:
            ids = tokenizer.encode(_text_of(req))
        param = "messages" if isinstance(req, ChatCompletionRequest) else "prompt"
    else:
        _check_token_ids(ids, param)
    if not ids:
        raise ProtocolError("The prompt is empty.", param=param)
    return PromptInfo(
        token_ids=tuple(ids),
        block_hashes=block_hashes_from_tokens(ids, block_size, seed),
        prompt_tokens=len(ids),
    )


_TTL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*$")


def parse_ttl(value: str | float | None, default: float = DEFAULT_CACHE_TTL_S) -> float:
    """Seconds of a `cache_control.ttl`: a number of seconds, or "30s" / "5m" / "1h"."""
    if value is None:
        return default
    if isinstance(value, int | float) and not isinstance(value, bool):
        secs = float(value)
    else:
        m = _TTL.match(str(value))
        if m is None:
            raise ProtocolError(
                f"cache_control.ttl: expected seconds or a duration like '5m', got {value!r}",
                param="nvext.cache_control.ttl",
            )
        secs = float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]
    if secs < 0:
        raise ProtocolError("cache_control.ttl must be >= 0", param="nvext.cache_control.ttl")
    return secs


def session_id_of(req: AnyRequest, headers: Mapping[str, str] | None) -> str | None:
    """`nvext.session_control.session_id`, else the `X-Dynamo-Session-ID` header."""
    sc = req.nvext.session_control if req.nvext is not None else None
    if sc is not None and sc.session_id:
        return sc.session_id
    if not headers:
        return None
    value = headers.get(SESSION_HEADER)
    if value is None:
        want = SESSION_HEADER.lower()
        value = next((v for k, v in headers.items() if k.lower() == want), None)
    return value or None


def to_request_spec(
    body: Mapping[str, Any] | AnyRequest,
    headers: Mapping[str, str] | None,
    tokenizer: Tokenizer,
    block_size: int,
    request_id: str,
    *,
    kind: RequestKind | None = None,
    default_max_tokens: int = DEFAULT_MAX_TOKENS,
    max_tokens_cap: int | None = None,
    arrival_s: float = 0.0,
) -> RequestSpec:
    """The engine's view of a request. `body` is a decoded JSON object (then `kind`, or the
    presence of `messages`, says which endpoint) or an already parsed request. A request that
    asks for more than `max_tokens_cap` tokens is refused (400); an unset one gets
    `default_max_tokens`, never more than the cap.

    `spec.extra` holds `kind`, `model`, `stream`, `include_usage` and, when known, the prompt's
    `token_ids` (a tuple). Raises `ProtocolError` for anything invalid."""
    if isinstance(body, ChatCompletionRequest | CompletionRequest):
        req: AnyRequest = body
    else:
        if kind is None:
            kind = "chat" if "messages" in body else "completion"
        req = parse_request(body, kind)
    rkind: RequestKind = "chat" if isinstance(req, ChatCompletionRequest) else "completion"
    prompt = resolve_prompt(req, tokenizer, block_size)
    hints = req.nvext.agent_hints if req.nvext is not None else None
    cc = req.nvext.cache_control if req.nvext is not None else None
    pin_ttl: float | None = None
    if cc is not None:
        if cc.type != "ephemeral":
            raise ProtocolError(
                f"cache_control.type must be 'ephemeral', got {cc.type!r}",
                param="nvext.cache_control.type",
            )
        pin_ttl = parse_ttl(cc.ttl)
    max_tokens = req.output_limit(
        default_max_tokens if max_tokens_cap is None else min(default_max_tokens, max_tokens_cap)
    )
    if max_tokens_cap is not None and max_tokens > max_tokens_cap:
        param = "max_completion_tokens" if req.max_completion_tokens is not None else "max_tokens"
        raise ProtocolError(
            f"{param} ({max_tokens}) is more than this server allows ({max_tokens_cap}).",
            param=param,
        )
    extra: dict[str, object] = {
        "kind": rkind,
        "model": req.model,
        "stream": req.stream,
        "include_usage": req.include_usage,
    }
    if prompt.token_ids is not None:
        extra["token_ids"] = prompt.token_ids
    return RequestSpec(
        request_id=request_id,
        block_hashes=prompt.block_hashes,
        prompt_tokens=prompt.prompt_tokens,
        max_tokens=max_tokens,
        session_id=session_id_of(req, headers),
        priority=hints.priority if hints is not None else 0,
        expected_output=hints.osl if hints is not None else None,
        pin_ttl_s=pin_ttl,
        speculative_prefill=hints.speculative_prefill if hints is not None else False,
        arrival_s=arrival_s,
        extra=extra,
    )


# ---- responses -----------------------------------------------------------------------------


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict[str, Any]:
    """OpenAI `usage`, with `prompt_tokens_details.cached_tokens` (the prefix cache hit)."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


def completion_response(
    response_id: str,
    model: str,
    created: int,
    text: str,
    finish_reason: str | None,
    usage_: Mapping[str, Any],
) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}],
        "usage": dict(usage_),
    }


def chat_completion_response(
    response_id: str,
    model: str,
    created: int,
    text: str,
    finish_reason: str | None,
    usage_: Mapping[str, Any],
) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish_reason,
            }
        ],
        "usage": dict(usage_),
    }


def completion_chunk(
    response_id: str, model: str, created: int, text: str, finish_reason: str | None = None
) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}],
    }


def chat_chunk(
    response_id: str,
    model: str,
    created: int,
    delta: Mapping[str, Any],
    finish_reason: str | None = None,
) -> dict[str, Any]:
    return {
        "id": response_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [
            {"index": 0, "delta": dict(delta), "logprobs": None, "finish_reason": finish_reason}
        ],
    }


def usage_chunk(
    kind: RequestKind, response_id: str, model: str, created: int, usage_: Mapping[str, Any]
) -> dict[str, Any]:
    """The last chunk of a stream with `stream_options.include_usage`: no choices, usage."""
    return {
        "id": response_id,
        "object": "chat.completion.chunk" if kind == "chat" else "text_completion",
        "created": created,
        "model": model,
        "choices": [],
        "usage": dict(usage_),
    }


def sse(obj: Mapping[str, Any]) -> str:
    """One server-sent event carrying `obj` as compact JSON."""
    return "data: " + json.dumps(obj, separators=(",", ":")) + "\n\n"
