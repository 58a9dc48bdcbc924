"""Continuing a stream on another worker: what was relayed, and the request that resumes it.

When a worker dies or stalls mid-stream, the router re-issues the prompt plus the text already
generated to another worker, asking for the tokens that remain, and splices the new stream into
the old one so that the client sees one uninterrupted stream (Dynamo's request migration).
Pure functions over SSE bytes and JSON bodies, no I/O, so every case is unit-tested.

- `Relayed` reads the complete SSE events already sent to the client: the generated text, how
  many content chunks (tokens, for engines that stream one token per chunk), the response's
  id / created / model, and whether a finish reason was already sent.
- `continuation_body` builds the request for the rest: chat gets the partial answer as a final
  assistant message with vLLM's `continue_final_message: true, add_generation_prompt: false`;
  a text completion gets it appended to the prompt; the output limit shrinks by what was sent.
  A trace-replay request (`block_hashes`) is re-sent as it is, with the smaller limit. A
  request that cannot be continued faithfully (`n > 1`, a prompt of token ids) gives None.
- `Splicer` rewrites the continuation's events into the first stream's identity: chat's
  opening role-only chunk is dropped, `id` and `created` are the first stream's, and a final
  `usage` counts the original prompt and every token generated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Relayed", "Splicer", "continuation_body", "split_events"]

_DONE = b"[DONE]"


def split_events(block: bytes) -> list[bytes]:
    """The SSE events in `block` (complete events, each without its blank-line end)."""
    return [e for e in block.split(b"\n\n") if e.strip()]


def _data(event: bytes) -> bytes | None:
    """The `data:` payload of one SSE event (lines joined), or None if it has none."""
    parts = [ln[5:].lstrip() for ln in event.split(b"\n") if ln.startswith(b"data:")]
    return b"\n".join(parts) if parts else None


def _json(payload: bytes) -> dict[str, Any] | None:
    try:
        obj = json.loads(payload)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def _choice(obj: dict[str, Any]) -> dict[str, Any] | None:
    choices = obj.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return choices[0]
    return None


def _content(choice: dict[str, Any], kind: str) -> str:
    if kind == "chat":
        delta = choice.get("delta")
        text = delta.get("content") if isinstance(delta, dict) else None
    else:
        text = choice.get("text")
    return text if isinstance(text, str) else ""


@dataclass
class Relayed:
    """What the client has been sent so far (complete SSE events only)."""

    kind: str
    text_parts: list[str] = field(default_factory=list)
    tokens: int = 0
    id: str | None = None
    created: int | None = None
    model: str | None = None
    finished: bool = False

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    def feed(self, block: bytes) -> None:
        """Account for a block of complete events that was just relayed."""
        for event in split_events(block):
            payload = _data(event)
            if payload is None or payload == _DONE:
                continue
            obj = _json(payload)
            if obj is None:
                continue
            if self.id is None and isinstance(obj.get("id"), str):
                self.id = obj["id"]
                created = obj.get("created")
                self.created = created if isinstance(created, int) else None
                model = obj.get("model")
                self.model = model if isinstance(model, str) else None
            choice = _choice(obj)
            if choice is None:
                continue
            text = _content(choice, self.kind)
            if text:
                self.text_parts.append(text)
                self.tokens += 1
            if choice.get("finish_reason"):
                self.finished = True


def continuation_body(
    body: dict[str, Any], kind: str, text: str, tokens: int, limit: int
) -> dict[str, Any] | None:
    """The request that resumes `body` after `text` (`tokens` of `limit` generated), or None
    if it cannot be resumed faithfully (see the module docstring)."""
    if body.get("n", 1) not in (1, None):
        return None
    if body.get("prompt_token_ids") is not None:
        return None  # a prompt of token ids: the text's ids are unknown here
    out = dict(body)
    if body.get("block_hashes") is not None:
        pass  # trace replay: the prompt is its hashes; only the output limit changes
    elif kind == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list):
            return None
        out["messages"] = [*messages, {"role": "assistant", "content": text}]
        out["continue_final_message"] = True
        out["add_generation_prompt"] = False
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            out["prompt"] = prompt + text
        elif isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            out["prompt"] = [prompt[0] + text]
        else:
            return None
    remaining = max(1, limit - tokens)
    if out.get("max_completion_tokens") is not None:
        out["max_completion_tokens"] = remaining
        out.pop("max_tokens", None)
    else:
        out["max_tokens"] = remaining
    return out


class Splicer:
    """Rewrites a continuation stream's events into the first stream's identity."""

    def __init__(self, relayed: Relayed, prompt_tokens: int) -> None:
        self.relayed = relayed
        self.tokens_before = relayed.tokens
        self.prompt_tokens = prompt_tokens

    def rewrite(self, block: bytes) -> bytes:
        out: list[bytes] = []
        kind = self.relayed.kind
        for event in split_events(block):
            payload = _data(event)
            obj = _json(payload) if payload is not None and payload != _DONE else None
            if obj is None:
                out.append(event + b"\n\n")
                continue
            choice = _choice(obj)
            if (
                kind == "chat"
                and choice is not None
                and not _content(choice, kind)
                and not choice.get("finish_reason")
                and isinstance(choice.get("delta"), dict)
                and "role" in choice["delta"]
            ):
                continue  # the continuation's own opening: the client had one already
            if self.relayed.id is not None:
                obj["id"] = self.relayed.id
            if self.relayed.created is not None:
                obj["created"] = self.relayed.created
            use = obj.get("usage")
            if isinstance(use, dict):
                done = use.get("completion_tokens")
                done = done if isinstance(done, int) else 0
                use["prompt_tokens"] = self.prompt_tokens
                use["completion_tokens"] = done + self.tokens_before
                use["total_tokens"] = self.prompt_tokens + done + self.tokens_before
            out.append(b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n")
        return b"".join(out)
