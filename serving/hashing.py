"""Deterministic chained 64-bit block hashes, shared by the router, the engine and the benchmark.

Every hash here is an **unsigned** 64-bit int in `[0, 2**64)`: BLAKE2b with an 8-byte digest read
little-endian. BLAKE2b (stdlib) is stable across processes, machines and Python versions, unlike
the salted builtin `hash()`, so a router and its workers in different processes agree.

Chaining: `h[0] = H(seed, block 0)`, `h[i] = H(h[i-1], block i)`. An equal hash at position i
therefore means an identical prefix up to the end of block i, which is what prefix matching needs.
Only full blocks are hashed; a trailing partial block never hits.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from functools import lru_cache
from hashlib import blake2b

MASK64 = (1 << 64) - 1

_U64 = struct.Struct("<Q")
_U64_PAIR = struct.Struct("<QQ")


def _digest(data: bytes) -> int:
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "little")


def hash_block(parent: int, token_ids: Sequence[int]) -> int:
    """Chained hash of one block of token ids (each in `[0, 2**32)`) under `parent`."""
    payload = _U64.pack(parent & MASK64) + struct.pack(f"<{len(token_ids)}I", *token_ids)
    return _digest(payload)


def full_blocks(prompt_tokens: int, block_size: int) -> int:
    """Number of full blocks in a prompt: the only ones that are hashed and can hit."""
    if block_size <= 0:
        raise ValueError(f"block_size must be > 0, got {block_size}")
    return max(0, prompt_tokens) // block_size


def block_hashes_from_tokens(
    token_ids: Sequence[int], block_size: int, seed: int = 0
) -> tuple[int, ...]:
    """Chained hashes of the full blocks of `token_ids` (the partial tail is not hashed)."""
    n = full_blocks(len(token_ids), block_size)
    out: list[int] = []
    parent = seed & MASK64
    for i in range(n):
        parent = hash_block(parent, token_ids[i * block_size : (i + 1) * block_size])
        out.append(parent)
    return tuple(out)


def namespace_root(namespace: str | int) -> int:
    """The chain's starting value for a hash space (a trace file, a conversation, a tenant)."""
    if isinstance(namespace, str):
        data = b"s:" + namespace.encode("utf-8")
    else:
        data = b"i:" + _U64.pack(namespace & MASK64)
    return _digest(b"agentctl-ns\x00" + data)


@lru_cache(maxsize=1 << 16)
def _expand_one(parent: int, trace_id: int, ratio: int) -> tuple[int, ...]:
    # Memoised: traces resend the same prefixes over and over (that is the point of them).
    out: list[int] = []
    tid = trace_id & MASK64
    for k in range(ratio):
        parent = _digest(_U64_PAIR.pack(parent, tid) + _U64.pack(k))
        out.append(parent)
    return tuple(out)


def expand_trace_blocks(
    hash_ids: Iterable[int],
    *,
    trace_block_size: int,
    engine_block_size: int,
    namespace: str | int = 0,
    prompt_tokens: int | None = None,
) -> tuple[int, ...]:
    """Map a trace's block ids onto engine-block hashes.

    Each trace id (already prefix-chained, e.g. Mooncake's 512-token blocks) becomes
    `trace_block_size // engine_block_size` engine blocks whose hashes are derived from
    `(namespace, trace id, k)` chained to the previous engine hash, so equal trace-id prefixes in
    one namespace give equal engine-hash prefixes and different namespaces never collide.

    With `prompt_tokens`, the result is cut to the prompt's full engine blocks
    (`prompt_tokens // engine_block_size`): a trace's last id usually covers a partial block.
    """
    if engine_block_size <= 0 or trace_block_size % engine_block_size != 0:
        raise ValueError(
            f"trace_block_size ({trace_block_size}) must be a positive multiple of "
            f"engine_block_size ({engine_block_size})"
        )
    ratio = trace_block_size // engine_block_size
    limit = None if prompt_tokens is None else full_blocks(prompt_tokens, engine_block_size)
    out: list[int] = []
    parent = namespace_root(namespace)
    for tid in hash_ids:
        if limit is not None and len(out) >= limit:
            break
        chunk = _expand_one(parent, tid, ratio)
        out.extend(chunk)
        parent = chunk[-1]
    if limit is not None and len(out) > limit:
        del out[limit:]
    return tuple(out)
