"""Stream migration's pure parts: what was relayed, the continuation request, the splice."""

from __future__ import annotations

import json

from agentctl.serving.router.migration import (
    Relayed,
    Splicer,
    continuation_body,
    split_events,
)


def _ev(obj: object) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\n\n"


def _chat_chunk(content: str | None = None, role: bool = False, finish: str | None = None,
                cid: str = "chatcmpl-a") -> bytes:  # fmt: skip
    delta: dict[str, str] = {}
    if role:
        delta["role"] = "assistant"
    if content is not None:
        delta["content"] = content
    return _ev(
        {"id": cid, "created": 7, "model": "m",
         "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
    )  # fmt: skip


def test_relayed_counts_text_tokens_and_identity() -> None:
    r = Relayed("chat")
    r.feed(_chat_chunk("", role=True) + _chat_chunk(" a") + _chat_chunk(" b"))
    r.feed(b": comment\n\n" + _chat_chunk(" c"))
    assert (r.text, r.tokens, r.id, r.created, r.model) == (" a b c", 3, "chatcmpl-a", 7, "m")
    assert not r.finished
    r.feed(_chat_chunk(None, finish="length") + b"data: [DONE]\n\n")
    assert r.finished


def test_relayed_completion_text_and_garbage_is_ignored() -> None:
    r = Relayed("completion")
    r.feed(_ev({"id": "cmpl-x", "choices": [{"text": "hi"}]}) + b"data: {not json\n\n")
    r.feed(_ev([1, 2]) + _ev({"choices": "nope"}))
    assert (r.text, r.tokens, r.id) == ("hi", 1, "cmpl-x")


def test_split_events_keeps_only_complete_nonblank_events() -> None:
    assert split_events(b"data: 1\n\ndata: 2\n\n\n\n") == [b"data: 1", b"data: 2"]


def test_chat_continuation_appends_the_partial_answer() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "q"}], "max_tokens": 10,
            "stream": True}  # fmt: skip
    cont = continuation_body(body, "chat", " partial", 4, 10)
    assert cont is not None
    assert cont["messages"][-1] == {"role": "assistant", "content": " partial"}
    assert cont["continue_final_message"] is True and cont["add_generation_prompt"] is False
    assert cont["max_tokens"] == 6 and cont["stream"] is True
    assert body["messages"] == [{"role": "user", "content": "q"}], "the original is untouched"


def test_completion_continuation_and_limits() -> None:
    cont = continuation_body({"prompt": "p", "max_completion_tokens": 5}, "completion", "xy", 2, 5)
    assert cont == {"prompt": "pxy", "max_completion_tokens": 3}
    cont = continuation_body({"prompt": ["p"]}, "completion", "z", 9, 9)
    assert cont == {"prompt": ["pz"], "max_tokens": 1}


def test_what_cannot_be_continued() -> None:
    assert continuation_body({"prompt": "p", "n": 2}, "completion", "x", 1, 5) is None
    assert continuation_body({"prompt": [1, 2, 3]}, "completion", "x", 1, 5) is None
    assert (
        continuation_body({"prompt_token_ids": [1], "prompt": "p"}, "completion", "", 0, 5) is None
    )
    assert continuation_body({"messages": "nope"}, "chat", "x", 1, 5) is None


def test_trace_replay_requests_keep_their_hashes() -> None:
    body = {"block_hashes": [1, 2], "prompt_tokens": 128, "max_tokens": 8}
    assert continuation_body(body, "completion", "xx", 2, 8) == {**body, "max_tokens": 6}


def test_splicer_rewrites_identity_drops_second_role_and_fixes_usage() -> None:
    r = Relayed("chat")
    r.feed(_chat_chunk("", role=True) + _chat_chunk(" a") + _chat_chunk(" b"))
    s = Splicer(r, prompt_tokens=100)
    use = {"prompt_tokens": 103, "completion_tokens": 2, "total_tokens": 105}
    usage = _ev({"id": "chatcmpl-b", "created": 99, "choices": [], "usage": use})
    out = s.rewrite(
        _chat_chunk("", role=True, cid="chatcmpl-b")
        + _chat_chunk(" c", cid="chatcmpl-b")
        + _chat_chunk(None, finish="length", cid="chatcmpl-b")
        + usage
        + b"data: [DONE]\n\n"
    )
    events = [e[len(b"data: ") :] for e in split_events(out)]
    assert events[-1] == b"[DONE]"
    objs = [json.loads(e) for e in events[:-1]]
    assert len(objs) == 3, "the continuation's role chunk is dropped"
    assert {o["id"] for o in objs} == {"chatcmpl-a"} and {o["created"] for o in objs} == {7}
    assert objs[-1]["usage"] == {"prompt_tokens": 100, "completion_tokens": 4, "total_tokens": 104}
