"""Data shared by the engine, the router and the replay benchmark (no I/O, no framework).

Blocks are identified by chained 64-bit hashes: `h[0] = H(seed, tokens of block 0)`,
`h[i] = H(h[i-1], tokens of block i)`, so equal hashes at a position mean an identical prefix up
to the end of that block. Only full blocks are hashed; a prompt's trailing partial block never
hits. The router and the simulated engine compute the same hashes (see `hashing.py`); a real
vLLM's opaque hashes are mapped onto them through the token ids its events carry.
"""

from __future__ import annotations

from dataclasses import dataclass, field

BlockHash = int


@dataclass(frozen=True)
class RequestSpec:
    """What the router and an engine need to know about one request."""

    request_id: str
    #: chained hashes of the prompt's full blocks, in order (engine block size)
    block_hashes: tuple[BlockHash, ...]
    #: total prompt length in tokens (>= len(block_hashes) * block_size)
    prompt_tokens: int
    #: tokens to generate (the simulated engine generates exactly this many)
    max_tokens: int
    session_id: str | None = None
    #: higher is sooner (Dynamo's agent_hints.priority polarity)
    priority: int = 0
    #: expected output length hint (agent_hints.osl); None: unknown
    expected_output: int | None = None
    #: seconds to keep this prompt's blocks pinned after it finishes (cache_control ttl)
    pin_ttl_s: float | None = None
    #: send only the prefill (max_tokens=1 semantics) to warm a predicted next prompt
    speculative_prefill: bool = False
    arrival_s: float = 0.0
    extra: dict[str, object] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class BlockStored:
    """vLLM `BlockStored`: blocks now resident, each chained to its parent."""

    block_hashes: tuple[BlockHash, ...]
    parent_block_hash: BlockHash | None
    token_ids: tuple[int, ...] = ()
    block_size: int = 64


@dataclass(frozen=True)
class BlockRemoved:
    block_hashes: tuple[BlockHash, ...]


@dataclass(frozen=True)
class AllBlocksCleared:
    pass


KvEvent = BlockStored | BlockRemoved | AllBlocksCleared
