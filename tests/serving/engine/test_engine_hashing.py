"""Block hashes are chained, unsigned 64-bit and identical in every process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from agentctl.serving.hashing import (
    MASK64,
    block_hashes_from_tokens,
    expand_trace_blocks,
    full_blocks,
    hash_block,
    namespace_root,
)

TOKENS = list(range(1000, 1000 + 64 * 5 + 17))

_CHILD = """
import json
from agentctl.serving.hashing import block_hashes_from_tokens, expand_trace_blocks
tokens = list(range(1000, 1000 + 64 * 5 + 17))
print(json.dumps({
    "tok": block_hashes_from_tokens(tokens, 64, seed=7),
    "exp": expand_trace_blocks([3, 1, 4, 1, 5], trace_block_size=512, engine_block_size=64,
                               namespace="conv-9"),
    "exp_int": expand_trace_blocks([3, 1], trace_block_size=512, engine_block_size=64,
                                   namespace=12),
}))
"""


def test_hashes_are_identical_in_another_process() -> None:
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run(
        [sys.executable, "-c", _CHILD], capture_output=True, text=True, env=env, check=True
    )
    got = json.loads(out.stdout)
    assert tuple(got["tok"]) == block_hashes_from_tokens(TOKENS, 64, seed=7)
    assert tuple(got["exp"]) == expand_trace_blocks(
        [3, 1, 4, 1, 5], trace_block_size=512, engine_block_size=64, namespace="conv-9"
    )
    assert tuple(got["exp_int"]) == expand_trace_blocks(
        [3, 1], trace_block_size=512, engine_block_size=64, namespace=12
    )


def test_full_blocks_only_chained_and_unsigned() -> None:
    hs = block_hashes_from_tokens(TOKENS, 64)
    assert len(hs) == 5 == full_blocks(len(TOKENS), 64)
    assert all(0 <= h <= MASK64 for h in hs)
    assert len(set(hs)) == 5
    # h0 = H(seed, block0), hi = H(h(i-1), block i)
    assert hs[0] == hash_block(0, TOKENS[:64])
    for i in range(1, 5):
        assert hs[i] == hash_block(hs[i - 1], TOKENS[64 * i : 64 * (i + 1)])
    # the partial tail changes nothing; the seed changes everything
    assert block_hashes_from_tokens(TOKENS[: 64 * 5], 64) == hs
    assert set(block_hashes_from_tokens(TOKENS, 64, seed=1)).isdisjoint(hs)


def test_chain_property_equal_prefix_equal_hashes() -> None:
    other = list(TOKENS)
    other[64 * 2 + 5] += 1  # differs inside block 2
    a = block_hashes_from_tokens(TOKENS, 64)
    b = block_hashes_from_tokens(other, 64)
    assert a[:2] == b[:2]
    assert all(x != y for x, y in zip(a[2:], b[2:], strict=True))
    # the same block content after a different prefix hashes differently
    moved = TOKENS[64:128] + TOKENS[64:128]
    m = block_hashes_from_tokens(moved, 64)
    assert m[0] != m[1]


def test_expand_trace_blocks_prefix_property() -> None:
    kw = {"trace_block_size": 512, "engine_block_size": 64}
    a = expand_trace_blocks([10, 11, 12, 13], **kw)
    b = expand_trace_blocks([10, 11, 99], **kw)
    assert len(a) == 32 and len(b) == 24
    assert a[:16] == b[:16]
    assert set(a[16:]).isdisjoint(b[16:])
    assert len(set(a)) == 32
    # a namespace is its own hash space
    c = expand_trace_blocks([10, 11, 12, 13], namespace="session-2", **kw)
    assert set(a).isdisjoint(c)
    assert expand_trace_blocks([10, 11], namespace=0, **kw) == a[:16]
    # cut to the prompt's full engine blocks: 2 trace blocks of 512, prompt 700 -> 10 blocks
    assert expand_trace_blocks([10, 11], prompt_tokens=700, **kw) == a[:10]
    assert namespace_root("0") != namespace_root(0)
    with pytest.raises(ValueError):
        expand_trace_blocks([1], trace_block_size=100, engine_block_size=64)
