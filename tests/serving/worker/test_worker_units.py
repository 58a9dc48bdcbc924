"""Pure pieces of the worker: the vLLM KV event wire format, the ZMQ publisher's sequence and
replay (real sockets, in-process), the tokenizers, request parsing, configuration."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentctl.serving.config import ConfigError, WorkerConfig, load_worker_config
from agentctl.serving.events import (
    AsyncZmqEventSubscriber,
    EventDecodeError,
    KvEventBatch,
    ZmqEventPublisher,
    ZmqEventSubscriber,
    decode_batch,
    encode_batch,
)
from agentctl.serving.hashing import block_hashes_from_tokens
from agentctl.serving.protocol import (
    ProtocolError,
    parse_json_body,
    parse_ttl,
    to_request_spec,
)
from agentctl.serving.tokenizer import (
    BuiltinTokenizer,
    TokenizersTokenizer,
    TokenizerUnavailable,
    load_tokenizer,
    render_chat,
    split_text,
)
from agentctl.serving.types import AllBlocksCleared, BlockRemoved, BlockStored

TOP = (1 << 64) - 1

# ---- wire format ---------------------------------------------------------------------------


def test_batch_round_trip() -> None:
    batch = KvEventBatch(
        1234.5,
        (
            BlockStored((TOP, 1, 2), None, tuple(range(48)), 16),
            BlockStored((7,), 2, (), 16),
            BlockRemoved((TOP, 5)),
            AllBlocksCleared(),
        ),
        0,
    )
    assert decode_batch(encode_batch(batch)) == batch


def test_encoding_is_vllms_array_like_layout() -> None:
    batch = KvEventBatch(2.0, (BlockStored((1, 2), 9, (5, 6), 1), BlockRemoved((3,))), 0)
    raw = msgpack.unpackb(encode_batch(batch), raw=False)
    assert raw == [
        2.0,
        [
            ["BlockStored", [1, 2], 9, [5, 6], 1, None, "GPU", None],
            ["BlockRemoved", [3], "GPU"],
        ],
        0,
    ]


def test_decodes_a_newer_vllm_payload_tolerantly() -> None:
    """A hand-built payload as a recent vLLM emits it: extra trailing fields (extra_keys,
    group_idx, kv_cache_spec_*), signed hashes, an event type we do not know."""
    payload = msgpack.packb(
        [
            17.25,
            [
                [
                    "BlockStored",
                    [-1, 42],
                    None,
                    [1, 2, 3, 4],
                    2,
                    None,
                    "GPU",
                    None,
                    None,
                    0,
                    "full",
                ],
                ["BlockRemoved", [-2], "GPU", 0],
                ["SomethingNew", 1, 2],
                ["AllBlocksCleared"],
            ],
            3,
        ],
        use_bin_type=True,
    )
    batch = decode_batch(payload)
    assert batch.ts == 17.25 and batch.data_parallel_rank == 3 and batch.skipped == 1
    assert batch.events == (
        BlockStored((TOP, 42), None, (1, 2, 3, 4), 2),
        BlockRemoved((TOP - 1,)),
        AllBlocksCleared(),
    )


def test_decodes_the_map_form_and_bytes_hashes() -> None:
    h = (123456789).to_bytes(32, "big")
    payload = msgpack.packb(
        {
            "ts": 1,
            "events": [
                {"type": "BlockStored", "block_hashes": [h], "parent_block_hash": None,
                 "token_ids": [[1, 2], [3, 4]], "block_size": 2, "lora_name": None},
                {"type": "AllBlocksCleared"},
            ],
        },
        use_bin_type=True,
    )  # fmt: skip
    batch = decode_batch(payload)
    assert batch.data_parallel_rank is None
    assert batch.events == (BlockStored((123456789,), None, (1, 3), 2), AllBlocksCleared())


def test_instance_id_round_trip_as_a_fourth_element() -> None:
    batch = KvEventBatch(3.0, (BlockRemoved((7,)),), 0, "0123abcd")
    assert decode_batch(encode_batch(batch)) == batch
    assert msgpack.unpackb(encode_batch(batch), raw=False) == [
        3.0,
        [["BlockRemoved", [7], "GPU"]],
        0,
        "0123abcd",
    ]
    # a rank-less batch keeps the id's position with a nil rank
    bare = KvEventBatch(3.0, (), None, "ff")
    assert msgpack.unpackb(encode_batch(bare), raw=False) == [3.0, [], None, "ff"]
    assert decode_batch(encode_batch(bare)) == bare


def test_batches_without_an_instance_id_decode_to_none() -> None:
    for body in ([1.0, [], 0], [1.0, []], [1.0, [], 0, 17], {"ts": 1.0, "events": []}):
        assert decode_batch(msgpack.packb(body)).instance_id is None  # vLLM sends none
    mapped = decode_batch(msgpack.packb({"ts": 1.0, "events": [], "instance_id": "ab"}))
    assert mapped.instance_id == "ab"
    assert encode_batch(KvEventBatch(1.0, (), 0)) == msgpack.packb([1.0, [], 0])  # vLLM's


def test_vllms_own_msgspec_decoder_reads_our_batches() -> None:
    """vLLM decodes with msgspec structs (array_like, tagged events); our batch carries a 4th
    element (instance_id) and an 8th BlockStored field (lora_name) it must skip."""
    msgspec = pytest.importorskip("msgspec")

    # The struct definitions of vllm/distributed/kv_events.py (vLLM, Apache-2.0), as of
    # vLLM 0.10; ExternalBlockHash is `bytes | int` there.
    class EventBatch(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):  # type: ignore[misc]
        ts: float
        events: list[Any]
        data_parallel_rank: int | None = None

    class KVCacheEvent(msgspec.Struct, array_like=True, omit_defaults=True, gc=False, tag=True):  # type: ignore[misc]
        """Base class for all KV cache-related events"""

    class BlockStoredV(KVCacheEvent, tag="BlockStored"):  # type: ignore[misc]
        block_hashes: list[bytes | int]
        parent_block_hash: bytes | int | None
        token_ids: list[int]
        block_size: int
        lora_id: int | None
        medium: str | None

    class BlockRemovedV(KVCacheEvent, tag="BlockRemoved"):  # type: ignore[misc]
        block_hashes: list[bytes | int]
        medium: str | None

    class AllBlocksClearedV(KVCacheEvent, tag="AllBlocksCleared"):  # type: ignore[misc]
        pass

    # class KVEventBatch(EventBatch): events: list[BlockStored | BlockRemoved | ...], built
    # with defstruct: string annotations (this module's __future__ import) cannot name
    # classes local to a function
    events_type = list[BlockStoredV | BlockRemovedV | AllBlocksClearedV]  # type: ignore[valid-type]
    KVEventBatch = msgspec.defstruct("KVEventBatch", [("events", events_type)], bases=(EventBatch,))

    ours = KvEventBatch(
        9.5,
        (BlockStored((1, TOP), None, (3, 4), 2), BlockRemoved((5,)), AllBlocksCleared()),
        2,
        "c0ffee",
    )
    got = msgspec.msgpack.Decoder(KVEventBatch).decode(encode_batch(ours))
    assert (got.ts, got.data_parallel_rank) == (9.5, 2)
    stored, removed, cleared = got.events
    assert isinstance(stored, BlockStoredV) and stored.block_hashes == [1, TOP]
    assert stored.token_ids == [3, 4] and stored.medium == "GPU"
    assert isinstance(removed, BlockRemovedV) and removed.block_hashes == [5]
    assert isinstance(cleared, AllBlocksClearedV)
    # and what vLLM itself encodes, we decode (no instance id)
    back = decode_batch(msgspec.msgpack.Encoder().encode(got))
    assert back.events == ours.events and back.instance_id is None


@pytest.mark.parametrize(
    "payload",
    [
        b"\xc1",  # never valid msgpack
        msgpack.packb("hello"),
        msgpack.packb([1.0]),
        msgpack.packb(["x", []]),
        msgpack.packb([1.0, [["BlockStored", "nope", None, [], 16]]]),
        msgpack.packb([1.0, [["BlockStored", [1]]]]),
        msgpack.packb([1.0, [42]]),
    ],
)
def test_garbage_raises_event_decode_error_only(payload: bytes) -> None:
    with pytest.raises(EventDecodeError):
        decode_batch(payload)


# ---- publisher / subscriber ----------------------------------------------------------------


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_publisher_sequence_and_replay_over_real_sockets() -> None:
    ep, rp = f"tcp://127.0.0.1:{_port()}", f"tcp://127.0.0.1:{_port()}"
    pub = ZmqEventPublisher(ep, rp, topic="kv", buffer_steps=3)
    sub = ZmqEventSubscriber(ep, rp, topic="kv")
    try:
        time.sleep(0.3)  # slow joiner
        pub.publish([])  # nothing to send: no seq used
        for i in range(5):
            pub.publish([BlockStored((i,), None, (), 16)], ts=float(i))
        got = [sub.recv(timeout=5) for _ in range(5)]
        assert [g[0] for g in got if g] == [0, 1, 2, 3, 4]
        assert [g[1].events[0].block_hashes for g in got if g] == [(i,) for i in range(5)]
        assert sub.recv(timeout=0.05) is None
        # only the last 3 are buffered
        assert [s for s, _ in sub.replay(0)] == [2, 3, 4]
        replayed = sub.replay(3)
        assert [(s, b.ts) for s, b in replayed] == [(3, 3.0), (4, 4.0)]
        assert sub.replay(99) == []
        assert pub.next_seq == 5
    finally:
        sub.close()
        pub.close()
    with pytest.raises(RuntimeError):
        pub.publish([AllBlocksCleared()])


def test_async_subscriber_receives_and_replays() -> None:
    ep, rp = f"tcp://127.0.0.1:{_port()}", f"tcp://127.0.0.1:{_port()}"

    async def scenario() -> None:
        sub = AsyncZmqEventSubscriber(ep, rp)
        try:
            await asyncio.sleep(0.3)  # slow joiner
            pub.publish([BlockRemoved((1,))])
            pub.publish([AllBlocksCleared()])
            first = await asyncio.wait_for(sub.recv(), 5)
            second = await asyncio.wait_for(sub.recv(), 5)
            assert (first[0], second[0]) == (0, 1)
            assert second[1].events == (AllBlocksCleared(),)
            assert [s for s, _ in await sub.replay(1)] == [1]
        finally:
            sub.close()

    pub = ZmqEventPublisher(ep, rp)
    try:
        asyncio.run(scenario())
    finally:
        pub.close()


def test_publisher_port_in_use_fails_at_construction() -> None:
    ep = f"tcp://127.0.0.1:{_port()}"
    pub = ZmqEventPublisher(ep)
    try:
        with pytest.raises(Exception, match=r"(?i)address"):
            ZmqEventPublisher(ep)
    finally:
        pub.close()


# ---- tokenizers ----------------------------------------------------------------------------

TEXT = "def foo(bar_baz):\n    return bar_baz * 2  # Grüße, 世界!\n\n"


def test_builtin_tokenizer_is_stable_across_processes() -> None:
    tok = BuiltinTokenizer()
    ids = tok.encode(TEXT)
    assert "".join(tok.pieces(TEXT)) == TEXT
    assert all(0 <= i < 2**31 for i in ids)
    assert 8 <= len(ids) <= len(TEXT)
    code = (
        "import json, sys; from agentctl.serving.tokenizer import BuiltinTokenizer;"
        "print(json.dumps(BuiltinTokenizer().encode(sys.argv[1])))"
    )
    for seed in ("1", "987"):
        out = subprocess.run(
            [sys.executable, "-c", code, TEXT],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, "PYTHONHASHSEED": seed},
            check=True,
        ).stdout
        assert json.loads(out) == ids


def test_builtin_tokenizer_keeps_prefixes() -> None:
    tok = BuiltinTokenizer()
    a = tok.encode("The quick brown fox jumps over")
    b = tok.encode("The quick brown fox jumps over the lazy dog")
    assert b[: len(a)] == a


_TEXTS = st.text(alphabet=st.sampled_from("ab_ 9.,(\n\t\u00e9\u4e16-"), max_size=400)


@given(_TEXTS, st.integers(min_value=1, max_value=40))
def test_split_text_keeps_every_piece(text: str, chunk: int) -> None:
    """Long texts are tokenized chunk by chunk (the GIL is released between chunks): the cut
    points must never change a piece."""
    parts = split_text(text, chunk)
    assert "".join(parts) == text
    pieces = BuiltinTokenizer().pieces
    assert [p for part in parts for p in pieces(part)] == pieces(text)


def test_long_texts_tokenize_as_one() -> None:
    text = (TEXT * 4000) + "x" * 300_000 + TEXT * 10  # chunks, and a stretch with no cut
    tok = BuiltinTokenizer()
    assert len(split_text(text)) >= 4
    assert "".join(tok.pieces(text)) == text
    assert tok.pieces(text)[:40] == tok.pieces(TEXT * 3)[:40]
    assert len(tok.pieces("x" * 300_000)) == 50_000  # runs of 6 word characters


def test_tokenizers_tokenizer_from_a_real_tokenizer_json(tmp_path: Path) -> None:
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    hf = tokenizers.Tokenizer(WordLevel({"[UNK]": 0, "hello": 1, "world": 2}, unk_token="[UNK]"))
    hf.pre_tokenizer = Whitespace()
    path = tmp_path / "tokenizer.json"
    hf.save(str(path))
    tok = load_tokenizer(path)
    assert isinstance(tok, TokenizersTokenizer)
    assert tok.encode("hello world again") == [1, 2, 0]
    with pytest.raises(TokenizerUnavailable, match="not found"):
        TokenizersTokenizer(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(TokenizerUnavailable):
        TokenizersTokenizer(bad)


def test_render_chat_is_stable_and_prefix_preserving() -> None:
    turn1 = [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}]
    turn2 = [
        *turn1,
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function"}]},
        {"role": "tool", "tool_call_id": "c", "content": [{"type": "text", "text": "ok"}]},
    ]
    r1 = render_chat(turn1, add_generation_prompt=False)
    assert render_chat(turn2).startswith(r1)
    assert render_chat(turn2) == render_chat(json.loads(json.dumps(turn2)))


# ---- request parsing -----------------------------------------------------------------------


def test_chat_request_spec_matches_the_tokenized_prompt() -> None:
    tok = BuiltinTokenizer()
    msgs = [{"role": "user", "content": "x " * 100}]
    body = {
        "model": "m",
        "messages": msgs,
        "max_completion_tokens": 7,
        "max_tokens": 99,
        "temperature": 0.2,
        "tools": [{"type": "function"}],  # unknown fields are ignored
        "nvext": {
            "agent_hints": {"priority": 3, "osl": 50, "speculative_prefill": True},
            "cache_control": {"type": "ephemeral", "ttl": "5m"},
        },
    }
    spec = to_request_spec(body, {"x-dynamo-session-id": "sess-1"}, tok, 16, "r1")
    ids = tok.encode(render_chat(msgs))
    assert spec.prompt_tokens == len(ids)
    assert spec.block_hashes == block_hashes_from_tokens(ids, 16)
    assert spec.max_tokens == 7
    assert (spec.priority, spec.expected_output, spec.speculative_prefill) == (3, 50, True)
    assert spec.pin_ttl_s == 300.0
    assert spec.session_id == "sess-1"
    assert spec.extra["kind"] == "chat" and spec.extra["token_ids"] == tuple(ids)
    body["nvext"] = {"session_control": {"session_id": "body-wins"}}
    assert to_request_spec(body, {"X-Dynamo-Session-ID": "h"}, tok, 16, "r").session_id == (
        "body-wins"
    )


def test_completion_variants() -> None:
    tok = BuiltinTokenizer()
    ids = list(range(40))
    for body in (
        {"prompt": ids},
        {"prompt": [ids]},
        {"prompt": "ignored", "prompt_token_ids": ids},
    ):
        spec = to_request_spec(body, None, tok, 16, "r", default_max_tokens=5)
        assert spec.prompt_tokens == 40
        assert spec.block_hashes == block_hashes_from_tokens(ids, 16)
        assert spec.max_tokens == 5
    salted = to_request_spec({"prompt": ids, "cache_salt": "t1"}, None, tok, 16, "r")
    assert salted.block_hashes != block_hashes_from_tokens(ids, 16)
    hashed = to_request_spec({"block_hashes": [5, 6], "prompt_tokens": 40}, None, tok, 16, "r")
    assert hashed.block_hashes == (5, 6) and hashed.prompt_tokens == 40
    assert "token_ids" not in hashed.extra
    with pytest.raises(ProtocolError, match="Batched"):
        to_request_spec({"prompt": ["a", "b"]}, None, tok, 16, "r")


def test_ttl_and_json_errors() -> None:
    assert parse_ttl("30s") == 30 and parse_ttl("1h") == 3600 and parse_ttl(12) == 12
    assert parse_ttl(None) == 300
    with pytest.raises(ProtocolError):
        parse_ttl("soon")
    with pytest.raises(ProtocolError) as exc:
        parse_json_body(b"\xff")
    assert exc.value.status == 400 and exc.value.body()["error"]["code"] == "invalid_json"


# ---- configuration -------------------------------------------------------------------------


def test_config_file_and_overrides(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(
        "worker:\n  port: 9001\n  engine: {block_size: 16}\n  cost: {time_scale: 0.5}\n"
        "router: {anything: 1}\n"
    )
    cfg = load_worker_config(path).with_overrides(
        {"port": 9002, "engine.capacity_blocks": 100, "model": None}
    )
    assert (cfg.port, cfg.engine.block_size, cfg.engine.capacity_blocks) == (9002, 16, 100)
    assert cfg.model == WorkerConfig().model
    assert cfg.cost_model().time_scale == 0.5
    assert cfg.engine_config().block_size == 16
    (tmp_path / "w.json").write_text(json.dumps({"events": {"endpoint": "tcp://*:5557"}}))
    assert load_worker_config(tmp_path / "w.json").events.endpoint == "tcp://*:5557"
    with pytest.raises(ConfigError):
        WorkerConfig().with_overrides({"engine.block_size": 0})
    (tmp_path / "bad.yaml").write_text("port: [1\n")
    with pytest.raises(ConfigError):
        load_worker_config(tmp_path / "bad.yaml")


# ---- prepare_request -------------------------------------------------------------------------


def test_prepare_request_off_the_loop_gives_the_same_spec() -> None:
    from agentctl.serving.prepare import prepare_request

    raw = json.dumps({"messages": [{"role": "user", "content": TEXT * 50}], "max_tokens": 3})

    async def both() -> tuple[object, object]:
        kw: dict[str, object] = {"kind": "chat", "arrival_s": 1.5}
        inline = await prepare_request(
            raw.encode(), {}, BuiltinTokenizer(), 16, "r", offload_bytes=1 << 30, **kw
        )
        pooled = await prepare_request(
            raw.encode(), {}, BuiltinTokenizer(), 16, "r", offload_bytes=0, **kw
        )
        return inline, pooled

    inline, pooled = asyncio.run(both())
    assert inline == pooled
    with pytest.raises(ProtocolError) as err:  # errors cross the thread as they are
        asyncio.run(
            prepare_request(b"[1]", None, BuiltinTokenizer(), 16, "r", kind="chat", offload_bytes=0)
        )
    assert err.value.status == 400


def test_instance_id_and_cap_flags() -> None:
    from agentctl.serving.__main__ import build_parser

    parse = build_parser("worker").parse_args
    args = parse(["worker", "--events-no-instance-id", "--max-tokens-cap", "99"])
    assert args.events_instance_id is False and args.max_tokens_cap == 99
    assert parse(["worker"]).events_instance_id is None  # unset: the config's (on)
    cfg = WorkerConfig().with_overrides({"events.send_instance_id": False, "max_tokens_cap": 99})
    assert cfg.events.send_instance_id is False and cfg.max_tokens_cap == 99
    assert WorkerConfig().events.send_instance_id is True
