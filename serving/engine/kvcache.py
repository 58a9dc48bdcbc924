"""A paged KV cache with prefix reuse, leaf-first LRU eviction, TTL pins and vLLM-style events.

Model. The cache holds `capacity_blocks` physical blocks of `block_size` tokens. A block holding
a full block of a prompt is *hashed*: it is keyed by its chained hash (`agentctl.serving.hashing`),
remembers its parent, and stays resident after its requests release it, so a later prompt with
the same prefix reuses it. Blocks for a prompt's partial tail and for generated tokens are
*anonymous*: owned by one request and freed when it releases them (the simulator never knows the
generated tokens, so it cannot hash them; the trace oracle does not count them either).

Eviction, like vLLM's free queue and Dynamo mocker's default "Lineage" policy: only blocks with
refcount 0, no resident child and no live pin are candidates, least recently used first. Use
order is a logical counter, not a clock (a virtual clock gives many equal times). A request's
blocks are touched when it releases them, leaf first, so within one chain the deepest block is
the oldest. Consequence, and the invariant everything below relies on: a resident block's parent
is always resident, and the referenced and pinned sets are prefix-closed, so every unreferenced,
unpinned block can be reclaimed (after its descendants). That makes `free_blocks` exact.

Events. Every hashed block stored emits `BlockStored` (consecutive stores of one chain batched,
with the parent of the first); every eviction `BlockRemoved`; `clear()` `AllBlocksCleared`.
Replaying them reproduces `resident_hashes()` exactly. Anonymous blocks emit nothing.

Cost: O(1) dict work per block touched plus O(log n) heap work per eviction or pin.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass

from agentctl.serving.types import (
    AllBlocksCleared,
    BlockHash,
    BlockRemoved,
    BlockStored,
    KvEvent,
)

__all__ = ["CacheStats", "KVCache"]


class _Block:
    __slots__ = ("block_hash", "children", "parent", "pinned", "pinned_until", "refcount", "tick")

    def __init__(self, block_hash: BlockHash, parent: BlockHash | None) -> None:
        self.block_hash = block_hash
        self.parent = parent
        self.refcount = 1
        self.children = 0  # resident children
        self.tick = 0  # logical last-use time (set on release)
        self.pinned = False
        self.pinned_until = 0.0


class _Alloc:
    """What one request holds: the first `n_hashed` of `hashes`, then `n_anon` anonymous blocks."""

    __slots__ = ("hashes", "n_anon", "n_hashed")

    def __init__(self, hashes: Sequence[BlockHash]) -> None:
        self.hashes = hashes
        self.n_hashed = 0
        self.n_anon = 0


class _PendingStored:
    __slots__ = ("hashes", "parent")

    def __init__(self, parent: BlockHash | None, hashes: list[BlockHash]) -> None:
        self.parent = parent
        self.hashes = hashes


class _PendingRemoved:
    __slots__ = ("hashes",)

    def __init__(self, hashes: list[BlockHash]) -> None:
        self.hashes = hashes


_Pending = _PendingStored | _PendingRemoved | AllBlocksCleared


@dataclass(frozen=True)
class CacheStats:
    """A snapshot of occupancy, in blocks (`usage` is `used_blocks / capacity_blocks`)."""

    capacity_blocks: int
    #: blocks held by requests (hashed with refcount > 0, plus anonymous): vLLM's "used"
    used_blocks: int
    #: hashed blocks resident (referenced or cached for reuse)
    cached_blocks: int
    #: blocks physically occupied (hashed resident + anonymous)
    resident_blocks: int
    #: blocks an allocation could get now without preempting anyone (honouring pins)
    free_blocks: int
    pinned_blocks: int
    usage: float


class KVCache:
    """Paged KV cache keyed by chained block hashes (see the module docstring)."""

    def __init__(
        self,
        capacity_blocks: int,
        block_size: int = 64,
        *,
        max_pinned_fraction: float = 0.25,
        record_events: bool = True,
    ) -> None:
        if capacity_blocks <= 0 or block_size <= 0:
            raise ValueError("capacity_blocks and block_size must be > 0")
        if not 0.0 <= max_pinned_fraction <= 1.0:
            raise ValueError("max_pinned_fraction must be in [0, 1]")
        self._capacity = capacity_blocks
        self._block_size = block_size
        self._max_pinned = int(max_pinned_fraction * capacity_blocks)
        self._record = record_events
        self._blocks: dict[BlockHash, _Block] = {}
        self._allocs: dict[str, _Alloc] = {}
        self._anon = 0  # anonymous blocks held
        self._referenced = 0  # hashed blocks with refcount > 0
        self._free_cached = 0  # hashed, refcount 0, not pinned: reclaimable
        self._pinned = 0  # hashed blocks with a live pin
        self._pinned_free = 0  # pinned with refcount 0
        self._evict_heap: list[tuple[int, BlockHash]] = []
        self._pin_heap: list[tuple[float, BlockHash]] = []
        self._tick = 0
        self._now = 0.0
        self._pending: list[_Pending] = []

    # ---- read side ----------------------------------------------------------------------

    @property
    def capacity_blocks(self) -> int:
        return self._capacity

    @property
    def block_size(self) -> int:
        return self._block_size

    @property
    def max_pinned_blocks(self) -> int:
        return self._max_pinned

    @property
    def used_blocks(self) -> int:
        return self._referenced + self._anon

    @property
    def usage(self) -> float:
        """Fraction of capacity held by requests (vLLM's `kv_cache_usage_perc`, as 0..1)."""
        return (self._referenced + self._anon) / self._capacity

    @property
    def cached_blocks(self) -> int:
        return len(self._blocks)

    @property
    def resident_blocks(self) -> int:
        return len(self._blocks) + self._anon

    @property
    def free_blocks(self) -> int:
        return self._capacity - len(self._blocks) - self._anon + self._free_cached

    @property
    def pinned_blocks(self) -> int:
        return self._pinned

    @property
    def num_requests(self) -> int:
        return len(self._allocs)

    def stats(self) -> CacheStats:
        return CacheStats(
            capacity_blocks=self._capacity,
            used_blocks=self.used_blocks,
            cached_blocks=self.cached_blocks,
            resident_blocks=self.resident_blocks,
            free_blocks=self.free_blocks,
            pinned_blocks=self._pinned,
            usage=self.usage,
        )

    def __contains__(self, block_hash: object) -> bool:
        return block_hash in self._blocks

    def resident_hashes(self) -> frozenset[BlockHash]:
        return frozenset(self._blocks)

    def snapshot(self) -> tuple[list[BlockHash], list[BlockHash | None]]:
        """Every resident hashed block and its parent (two parallel lists), parents before
        children: the dict keeps insertion order, a block is inserted after its parent and
        its parent is evicted only after it. Two flat lists, no pair per block: on a 16k-block
        cache this runs on the event loop and must not set off the GC."""
        blocks = self._blocks
        return list(blocks), [b.parent for b in blocks.values()]

    def held(self, request_id: str) -> tuple[int, int]:
        """(hashed, anonymous) blocks `request_id` holds; (0, 0) if none."""
        alloc = self._allocs.get(request_id)
        return (0, 0) if alloc is None else (alloc.n_hashed, alloc.n_anon)

    def match_prefix(self, hashes: Sequence[BlockHash]) -> int:
        """Number of leading blocks of `hashes` resident now (no side effect)."""
        blocks = self._blocks
        n = 0
        for h in hashes:
            if h not in blocks:
                break
            n += 1
        return n

    # ---- time and pins --------------------------------------------------------------------

    def advance(self, now: float) -> None:
        """Move the cache's clock to `now` (never backwards) and expire pins that ended."""
        if now > self._now:
            self._now = now
        heap = self._pin_heap
        blocks = self._blocks
        while heap and heap[0][0] <= self._now:
            until, h = heapq.heappop(heap)
            b = blocks.get(h)
            if b is not None and b.pinned and b.pinned_until == until:
                self._unpin(b)

    def pin(self, hashes: Sequence[BlockHash], until_s: float, now: float | None = None) -> int:
        """Keep the resident leading prefix of `hashes` from eviction until `until_s`.

        Pins only extend (an earlier expiry never shortens a later one) and stop at the budget
        (`max_pinned_fraction` of capacity), so the pinned set stays a set of prefixes. Returns
        how many blocks are now pinned until at least `until_s` (a partial pin is possible).
        """
        if now is not None:
            self.advance(now)
        if until_s <= self._now:
            return 0
        blocks = self._blocks
        count = 0
        for h in hashes:
            b = blocks.get(h)
            if b is None:
                break
            if b.pinned:
                if until_s > b.pinned_until:
                    b.pinned_until = until_s
                    heapq.heappush(self._pin_heap, (until_s, h))
            else:
                if self._pinned >= self._max_pinned:
                    break
                b.pinned = True
                b.pinned_until = until_s
                self._pinned += 1
                if b.refcount == 0:
                    self._free_cached -= 1
                    self._pinned_free += 1
                heapq.heappush(self._pin_heap, (until_s, h))
            count += 1
        return count

    def _unpin(self, b: _Block) -> None:
        b.pinned = False
        b.pinned_until = 0.0
        self._pinned -= 1
        if b.refcount == 0:
            self._pinned_free -= 1
            self._free_cached += 1
            if b.children == 0:
                heapq.heappush(self._evict_heap, (b.tick, b.block_hash))

    # ---- allocation -------------------------------------------------------------------------

    def acquire(
        self,
        request_id: str,
        hashes: Sequence[BlockHash],
        num_blocks: int | None = None,
        now: float | None = None,
        *,
        reserve: int = 0,
        evict_pinned: bool = False,
    ) -> int | None:
        """Give a new request `hashes` (reusing the resident prefix) plus anonymous blocks up to
        `num_blocks` in all. Returns the number of prefix blocks reused, or None (and changes
        nothing) when there is no room."""
        if request_id in self._allocs:
            raise ValueError(f"request {request_id!r} already holds blocks")
        matched = self.match_prefix(hashes)
        total = len(hashes) if num_blocks is None else num_blocks
        ok = self.allocate(
            request_id,
            hashes,
            len(hashes),
            total,
            now,
            reserve=reserve,
            evict_pinned=evict_pinned,
        )
        return matched if ok else None

    def allocate(
        self,
        request_id: str,
        hashes: Sequence[BlockHash],
        num_hashed: int,
        num_blocks: int,
        now: float | None = None,
        *,
        reserve: int = 0,
        evict_pinned: bool = False,
    ) -> bool:
        """Grow `request_id`'s holding to the first `num_hashed` of `hashes` plus anonymous
        blocks, `num_blocks` in all (both never shrink; `hashes` must extend what it holds).

        Hashed blocks already resident are shared (refcount++); the rest are stored, evicting
        reclaimable blocks LRU-first as needed. All or nothing: returns False, changing nothing,
        unless at least `reserve` blocks stay free afterwards. `evict_pinned` lets this one
        allocation reclaim pinned blocks too (the engine's last resort before it would starve).
        """
        if now is not None:
            self.advance(now)
        alloc = self._allocs.get(request_id)
        h0 = 0 if alloc is None else alloc.n_hashed
        a0 = 0 if alloc is None else alloc.n_anon
        if not h0 <= num_hashed <= len(hashes) or num_blocks < num_hashed:
            raise ValueError("allocate: bad hashed/total block counts")
        if num_blocks < h0 + a0:
            raise ValueError("allocate: a request's holding never shrinks")
        blocks = self._blocks
        get = blocks.get
        found: list[_Block] = []  # resident: shared, not stored
        missing: list[int] = []  # indexes to store
        reuse_free = 0
        reuse_pinned_free = 0
        for i in range(h0, num_hashed):
            b = get(hashes[i])
            if b is None:
                missing.append(i)
            else:
                found.append(b)
                if b.refcount == 0:
                    if b.pinned:
                        reuse_pinned_free += 1
                    else:
                        reuse_free += 1
        a1 = num_blocks - num_hashed
        need = len(missing) + a1 - a0
        if need > 0:
            reclaim = self._free_cached - reuse_free
            if evict_pinned:
                reclaim += self._pinned_free - reuse_pinned_free
            available = self._capacity - len(blocks) - self._anon + reclaim
            if available - need < reserve:
                return False
        if alloc is None:
            alloc = _Alloc(hashes)
            self._allocs[request_id] = alloc
        alloc.hashes = hashes
        # 1. share the resident ones first, so eviction cannot take them
        took_free = took_pinned = 0  # exact (a hash listed twice counts once)
        for b in found:
            if b.refcount == 0:
                if b.pinned:
                    took_pinned += 1
                else:
                    took_free += 1
            b.refcount += 1
        self._referenced += took_free + took_pinned
        self._free_cached -= took_free
        self._pinned_free -= took_pinned
        # 2. make room, then 3. store the rest in chain order
        if missing:
            deficit = len(blocks) + self._anon + len(missing) + (a1 - a0) - self._capacity
            if deficit > 0:
                self._evict(deficit, evict_pinned)
            stored = 0
            run: list[BlockHash] = []  # consecutive stores of one chain: one event
            run_parent: BlockHash | None = None
            for i in missing:
                h = hashes[i]
                existing = get(h)
                if existing is not None:  # the same hash twice in one request
                    existing.refcount += 1
                    continue
                parent = hashes[i - 1] if i > 0 else None
                blocks[h] = _Block(h, parent)
                stored += 1
                if parent is not None:
                    blocks[parent].children += 1
                if not run or run[-1] != parent:
                    if run:
                        self._emit_stored(run_parent, run)
                    run = []
                    run_parent = parent
                run.append(h)
            if run:
                self._emit_stored(run_parent, run)
            self._referenced += stored
        elif a1 - a0 > 0:
            deficit = len(blocks) + self._anon + (a1 - a0) - self._capacity
            if deficit > 0:
                self._evict(deficit, evict_pinned)
        self._anon += a1 - a0
        alloc.n_anon = a1
        alloc.n_hashed = num_hashed
        return True

    def grow(self, request_id: str, num_blocks: int, now: float | None = None) -> bool:
        """Add anonymous blocks (decode) so `request_id` holds `num_blocks` in all."""
        alloc = self._allocs.get(request_id)
        if alloc is None:
            raise KeyError(request_id)
        return self.allocate(request_id, alloc.hashes, alloc.n_hashed, num_blocks, now)

    def release(self, request_id: str, now: float | None = None) -> bool:
        """Drop `request_id`'s references; hashed blocks stay cached (most recently used, leaf
        oldest), anonymous ones are freed. Returns False for an unknown request."""
        if now is not None:
            self.advance(now)
        alloc = self._allocs.pop(request_id, None)
        if alloc is None:
            return False
        blocks = self._blocks
        hashes = alloc.hashes
        heap = self._evict_heap
        tick = self._tick
        freed = freed_pinned = 0
        for i in range(alloc.n_hashed - 1, -1, -1):
            b = blocks[hashes[i]]
            tick += 1
            b.tick = tick
            b.refcount -= 1
            if b.refcount == 0:
                if b.pinned:
                    freed_pinned += 1
                else:
                    freed += 1
                    if b.children == 0:
                        heapq.heappush(heap, (tick, b.block_hash))
        self._tick = tick
        self._referenced -= freed + freed_pinned
        self._free_cached += freed
        self._pinned_free += freed_pinned
        self._anon -= alloc.n_anon
        self._maybe_compact()
        return True

    def clear(self) -> None:
        """Drop every pin and every block no request holds (vLLM `reset_prefix_cache`), emitting
        `AllBlocksCleared`. vLLM refuses while blocks are in use; here the blocks running
        requests hold stay resident and are announced again right after the clear, so an event
        consumer's view stays exact."""
        blocks = self._blocks
        kept = {h: b for h, b in blocks.items() if b.refcount > 0}
        for b in kept.values():
            b.pinned = False
            b.pinned_until = 0.0
            b.children = 0
        for b in kept.values():
            if b.parent is not None:
                kept[b.parent].children += 1  # referenced sets are prefix-closed
        self._blocks = kept
        self._free_cached = self._pinned = self._pinned_free = 0
        self._evict_heap.clear()
        self._pin_heap.clear()
        if not self._record:
            return
        self._pending.append(AllBlocksCleared())
        announced: set[BlockHash] = set()
        for alloc in self._allocs.values():  # each holding is a chain, parents first
            for i in range(alloc.n_hashed):
                h = alloc.hashes[i]
                if h not in announced:
                    announced.add(h)
                    self._emit_stored(kept[h].parent, [h])

    def drain_events(self) -> list[KvEvent]:
        """The events since the last drain, in order, consecutive ones batched."""
        out: list[KvEvent] = []
        for p in self._pending:
            if isinstance(p, _PendingStored):
                out.append(
                    BlockStored(
                        block_hashes=tuple(p.hashes),
                        parent_block_hash=p.parent,
                        block_size=self._block_size,
                    )
                )
            elif isinstance(p, _PendingRemoved):
                out.append(BlockRemoved(block_hashes=tuple(p.hashes)))
            else:
                out.append(p)
        self._pending.clear()
        return out

    # ---- internals --------------------------------------------------------------------------

    def _evict(self, n: int, evict_pinned: bool) -> None:
        blocks = self._blocks
        heap = self._evict_heap
        gone: list[BlockHash] = []
        while n > 0:
            if not heap:
                if evict_pinned and self._pinned_free:
                    for pb in [x for x in blocks.values() if x.pinned and x.refcount == 0]:
                        self._unpin(pb)
                    continue
                raise RuntimeError("KV cache accounting error: nothing left to evict")
            tick, h = heapq.heappop(heap)
            b = blocks.get(h)
            if b is None or b.tick != tick or b.refcount or b.children or b.pinned:
                continue  # stale entry
            del blocks[h]
            if b.parent is not None:
                p = blocks[b.parent]
                p.children -= 1
                if p.children == 0 and p.refcount == 0 and not p.pinned:
                    heapq.heappush(heap, (p.tick, p.block_hash))
            gone.append(h)
            n -= 1
        self._free_cached -= len(gone)
        self._emit_removed(gone)

    def _maybe_compact(self) -> None:
        heap = self._evict_heap
        if len(heap) > 2 * len(self._blocks) + 1024:
            self._evict_heap = [
                (b.tick, b.block_hash)
                for b in self._blocks.values()
                if b.refcount == 0 and b.children == 0 and not b.pinned
            ]
            heapq.heapify(self._evict_heap)

    def _emit_stored(self, parent: BlockHash | None, hashes: list[BlockHash]) -> None:
        if not self._record:
            return
        pending = self._pending
        if pending:
            last = pending[-1]
            if isinstance(last, _PendingStored) and last.hashes[-1] == parent:
                last.hashes.extend(hashes)
                return
        pending.append(_PendingStored(parent, hashes))

    def _emit_removed(self, hashes: list[BlockHash]) -> None:
        if not self._record or not hashes:
            return
        pending = self._pending
        if pending:
            last = pending[-1]
            if isinstance(last, _PendingRemoved):
                last.hashes.extend(hashes)
                return
        pending.append(_PendingRemoved(hashes))

    def check_invariants(self) -> None:
        """Recount everything from scratch and raise if a counter or link disagrees (tests)."""
        blocks = self._blocks
        refs: dict[BlockHash, int] = {}
        anon = 0
        for alloc in self._allocs.values():
            anon += alloc.n_anon
            for i in range(alloc.n_hashed):
                refs[alloc.hashes[i]] = refs.get(alloc.hashes[i], 0) + 1
        children: dict[BlockHash, int] = {}
        for b in blocks.values():
            if b.parent is not None:
                if b.parent not in blocks:
                    raise RuntimeError(f"block {b.block_hash} resident without its parent")
                children[b.parent] = children.get(b.parent, 0) + 1
        problems: list[str] = []
        for h, b in blocks.items():
            if b.refcount != refs.get(h, 0):
                problems.append(f"refcount {h}: {b.refcount} != {refs.get(h, 0)}")
            if b.children != children.get(h, 0):
                problems.append(f"children {h}: {b.children} != {children.get(h, 0)}")
        if set(refs) - set(blocks):
            problems.append("a request references a block that is not resident")
        expect = {
            "anon": anon,
            "referenced": sum(1 for b in blocks.values() if b.refcount),
            "free_cached": sum(1 for b in blocks.values() if not b.refcount and not b.pinned),
            "pinned": sum(1 for b in blocks.values() if b.pinned),
            "pinned_free": sum(1 for b in blocks.values() if b.pinned and not b.refcount),
        }
        got = {
            "anon": self._anon,
            "referenced": self._referenced,
            "free_cached": self._free_cached,
            "pinned": self._pinned,
            "pinned_free": self._pinned_free,
        }
        if expect != got:
            problems.append(f"counters {got} != {expect}")
        if len(blocks) + self._anon > self._capacity:
            problems.append("capacity exceeded")
        if self._pinned > self._max_pinned:
            problems.append("pin budget exceeded")
        if problems:
            raise RuntimeError("; ".join(problems[:5]))
