"""Encoding a conversation message by message (from the cache) gives exactly the ids of
encoding its whole rendering: the router and the workers must agree on every block hash."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agentctl.serving.tokenizer import BuiltinTokenizer, encode_chat, render_chat

_text = st.text(
    alphabet=st.sampled_from(list("ab _-<>|\n\t  .,:;é€😀0123456789{}\"'\\")), max_size=40
)
_message = st.fixed_dictionaries(
    {"role": st.sampled_from(["system", "user", "assistant", "tool"]), "content": _text},
    optional={
        "name": _text,
        "tool_call_id": _text,
        "tool_calls": st.lists(st.fixed_dictionaries({"id": _text}), max_size=2),
    },
)


@settings(max_examples=300, deadline=None)
@given(st.lists(_message, min_size=1, max_size=6), st.booleans())
def test_parts_concatenate_to_the_whole(messages: list[dict[str, object]], gen: bool) -> None:
    tok = BuiltinTokenizer()
    whole = tok.encode(render_chat(messages, add_generation_prompt=gen))
    assert encode_chat(tok, messages, add_generation_prompt=gen) == whole
    assert encode_chat(tok, messages, add_generation_prompt=gen) == whole, "from the cache"


def test_cache_is_bounded_by_characters() -> None:
    tok = BuiltinTokenizer(cache_chars=4000)
    for i in range(100):
        encode_chat(tok, [{"role": "user", "content": f"message {i} " + "x" * 200}])
    assert tok._parts._chars <= 4000
    big = "word " * 2000  # larger than a quarter of the cache: encoded, never cached
    assert encode_chat(tok, [{"role": "user", "content": big}]) == tok.encode(
        render_chat([{"role": "user", "content": big}])
    )
