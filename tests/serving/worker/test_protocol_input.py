"""Hostile request bodies: every one is a `ProtocolError` (a 4xx with an OpenAI error body),
never another exception (a 500) (issue 14, item 9)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agentctl.serving.prepare import prepare_sync
from agentctl.serving.protocol import (
    MAX_JSON_DEPTH,
    ProtocolError,
    parse_json_body,
    parse_request,
)
from agentctl.serving.tokenizer import BuiltinTokenizer

TOK = BuiltinTokenizer()


def _prepare(raw: bytes, kind: str = "completion", cap: int | None = 1000) -> Any:
    return prepare_sync(raw, None, TOK, 16, "r", kind=kind, max_tokens_cap=cap)  # type: ignore[arg-type]


def _refused(raw: bytes, kind: str = "completion") -> ProtocolError:
    with pytest.raises(ProtocolError) as err:
        _prepare(raw, kind)
    assert err.value.status == 400
    assert set(err.value.body()["error"]) == {"message", "type", "param", "code"}
    return err.value


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (rb'{"messages": [{"role": "user", "content": "a\ud800b"}]}', "chat"),
        (rb'{"messages": [{"role": "user", "content": [{"text": "\udc00"}]}]}', "chat"),
        (rb'{"prompt": "x\udfff"}', "completion"),
        (rb'{"prompt": "x", "cache_salt": "\ud800"}', "completion"),
        (rb'{"prompt": "x", "model": "\uDBFF"}', "completion"),
        (rb'{"prompt": "x", "\ud800": 1}', "completion"),
        (b'{"prompt": "x\xed\xa0\x80"}', "completion"),  # a surrogate encoded in UTF-8
        (b'{"prompt": "x\xff"}', "completion"),
        ('{"prompt": "x"}'.encode("utf-16"), "completion"),
    ],
)  # fmt: skip
def test_unpaired_surrogates_and_bad_utf8_are_400(raw: bytes, kind: str) -> None:
    err = _refused(raw, kind)
    assert err.code == "invalid_json"


def test_paired_surrogates_and_a_bom_are_fine() -> None:
    _, spec = _prepare(rb'{"prompt": "smile \ud83d\ude00", "model": "\u00e9"}')
    assert spec.prompt_tokens >= 2
    _, spec = _prepare(b'\xef\xbb\xbf{"prompt": "x"}')
    assert spec.prompt_tokens == 1


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 2000, 100_000])
def test_deep_nesting_is_400(depth: int) -> None:
    arrays = "[" * depth + "]" * depth
    objects = '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)
    for nested in (arrays, objects):
        err = _refused(('{"prompt": "x", "extra": ' + nested + "}").encode())
        assert "nest" in err.message


def test_nesting_up_to_the_limit_is_fine() -> None:
    depth = MAX_JSON_DEPTH - 1  # the body itself is one level
    raw = ('{"prompt": "x", "extra": ' + "[" * depth + "]" * depth + "}").encode()
    assert parse_json_body(raw)["prompt"] == "x"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_tokens", True),
        ("max_tokens", "5"),
        ("max_tokens", 2.0),
        ("max_completion_tokens", False),
        ("stream", "yes"),
        ("stream", 1),
        ("n", "2"),
        ("n", True),
        ("temperature", "0.5"),
        ("temperature", True),
        ("seed", "7"),
        ("prompt_token_ids", [1, True]),
        ("block_hashes", ["1"]),
        ("cache_salt", 5),
        ("model", 5),
        ("stream_options", {"include_usage": "true"}),
        ("nvext", {"agent_hints": {"priority": "1"}}),
        ("nvext", {"agent_hints": {"speculative_prefill": 1}}),
    ],
)
def test_lax_values_are_refused(field: str, value: object) -> None:
    err = _refused(json.dumps({"prompt": "x", field: value}).encode())
    assert err.param is not None and err.param.startswith(field)


def test_ints_still_pass_as_floats() -> None:
    _, spec = _prepare(json.dumps({"prompt": "x", "temperature": 1, "top_p": 1}).encode())
    assert spec.prompt_tokens == 1


@pytest.mark.parametrize("raw", [b'{"prompt": "x", "temperature": NaN}', b'{"a": -Infinity}'])
def test_non_json_constants_are_400(raw: bytes) -> None:
    _refused(raw)


def test_max_tokens_cap() -> None:
    assert _prepare(b'{"prompt": "x", "max_tokens": 1000}')[1].max_tokens == 1000
    err = _refused(b'{"prompt": "x", "max_tokens": 1001}')
    assert err.param == "max_tokens" and "1000" in err.message
    err = _refused(b'{"prompt": "x", "max_completion_tokens": 5000, "max_tokens": 1}')
    assert err.param == "max_completion_tokens"
    # an unset max_tokens gets the default, never more than the cap
    _, spec = prepare_sync(b'{"prompt": "x"}', None, TOK, 16, "r", kind="completion",
                           default_max_tokens=500, max_tokens_cap=100)  # fmt: skip
    assert spec.max_tokens == 100


# ---- property: nothing but ProtocolError ----------------------------------------------------

_SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
_STRINGS = st.text(st.characters() | _SURROGATES, max_size=20)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _STRINGS
)
_JSON = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_STRINGS, inner, max_size=4),
    max_leaves=20,
)
_FIELDS = [
    "model", "prompt", "messages", "max_tokens", "max_completion_tokens", "stream",
    "stream_options", "n", "temperature", "stop", "seed", "user", "prompt_token_ids",
    "block_hashes", "prompt_tokens", "cache_salt", "nvext",
]  # fmt: skip
_MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "system", "assistant"]) | _JSON},
    optional={"content": _JSON | _STRINGS, "name": _JSON, "tool_calls": _JSON},
)
_NVEXT = st.fixed_dictionaries(
    {},
    optional={
        "agent_hints": st.fixed_dictionaries(
            {}, optional={"priority": _JSON, "osl": _JSON, "speculative_prefill": _JSON}
        )
        | _JSON,
        "session_control": st.fixed_dictionaries({}, optional={"session_id": _JSON}) | _JSON,
        "cache_control": st.fixed_dictionaries(
            {}, optional={"type": st.just("ephemeral") | _JSON, "ttl": _JSON}
        )
        | _JSON,
    },
)
_BODIES = st.fixed_dictionaries(
    {},
    optional={
        **{f: _JSON for f in _FIELDS},
        "messages": st.lists(_MESSAGE, max_size=3) | _JSON,
        "prompt": _STRINGS | st.lists(st.integers(min_value=-5, max_value=2**33)) | _JSON,
        "block_hashes": st.lists(st.integers(min_value=-1, max_value=2**65), max_size=4),
        "nvext": _NVEXT,
    },
)


def _only_protocol_errors(raw: bytes, kind: str) -> None:
    try:
        parse_request(parse_json_body(raw), kind)  # type: ignore[arg-type]
    except ProtocolError as exc:
        assert 400 <= exc.status < 500
    try:
        _prepare(raw, kind)
    except ProtocolError as exc:
        assert 400 <= exc.status < 500


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(_BODIES, st.sampled_from(["chat", "completion"]))
def test_structured_bodies_raise_only_protocol_errors(body: dict[str, Any], kind: str) -> None:
    # ensure_ascii writes a lone surrogate as its \\u escape, as a hostile client would
    _only_protocol_errors(json.dumps(body).encode(), kind)


@settings(max_examples=200)
@given(st.binary(max_size=200), st.sampled_from(["chat", "completion"]))
def test_arbitrary_bytes_raise_only_protocol_errors(raw: bytes, kind: str) -> None:
    _only_protocol_errors(raw, kind)


@settings(max_examples=200)
@given(_JSON, st.sampled_from(["chat", "completion"]))
def test_arbitrary_json_raises_only_protocol_errors(value: object, kind: str) -> None:
    _only_protocol_errors(json.dumps(value).encode(), kind)
