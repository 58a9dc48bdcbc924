"""The router's global block index: which worker holds which chained block hash.

Three layers, each a `dict[block hash -> int bitmask of worker slots]` plus, per worker, an
`OrderedDict` of its hashes in LRU order (the order is what bounds memory):

- **confirmed**: fed by the workers' KV events (`BlockStored` / `BlockRemoved` /
  `AllBlocksCleared`), applied in sequence-number order. A gap is reported as a `Gap` so the
  caller can ask the worker's replay endpoint; events after the gap wait in a bounded buffer.
  (Dynamo router-design.md: fetch the missing range on `event_id > last+1`.)
- **predicted**: blocks of a request just routed to an event-publishing worker, kept for a short
  TTL (default 5 s) until the worker's `BlockStored` confirms them, so that sibling bursts which
  arrive before any event still find the prefix (Dynamo `--router-predicted-ttl-secs`).
- **approximate**: routing decisions for workers that publish no events, with a long TTL
  (default 120 s, Dynamo `PruneConfig`) and an LRU cap at the worker's capacity.

Every layer is hard-capped at the worker's `capacity_blocks`; a worker that overflows it (it
stopped sending `BlockRemoved`) has the router's view evicted in LRU order, and removals delete
dict entries outright, so memory is bounded and nothing leaks (Dynamo PR #11678, #11785).

A lookup runs entirely in C: `map(dict.get)` per layer, `or` across layers, a running `and`
(`itertools.accumulate`) cut at the first empty mask (`takewhile`), then a few `bisect`s on the
non-increasing prefix masks to read each worker's drop-out depth. That is exact (a hole breaks
the prefix), so the jump search of Dynamo's positional indexer is not needed to pass the
1M blocks/s target (see tests/bench/bench_index.py for the figures).

Time is always passed in (`now`, seconds, non-decreasing); nothing here does I/O.
"""

from __future__ import annotations

import math
import sys
from bisect import bisect_right
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate, repeat, takewhile
from operator import and_, neg, or_
from typing import Literal

from agentctl.serving.types import AllBlocksCleared, BlockHash, BlockRemoved, BlockStored, KvEvent

LayerName = Literal["confirmed", "predicted", "approximate"]


@dataclass(frozen=True)
class Gap:
    """Sequence numbers `first_missing..last_missing` (inclusive) of `worker` never arrived."""

    worker: str
    first_missing: int
    last_missing: int


@dataclass(frozen=True)
class Overlap:
    """Leading blocks of a prompt resident on one worker, overall and per layer.

    `blocks` is the depth over the union of the layers, which is at least the maximum of the
    per-layer depths: while a long prefill is confirmed chunk by chunk, its first blocks are
    confirmed and its last ones still predicted, and only the union sees the whole prefix.
    """

    blocks: int
    confirmed: int
    predicted: int
    approximate: int

    @property
    def layer(self) -> LayerName:
        """The layer that accounts for the match: confirmed when events cover all of it."""
        if self.confirmed >= self.blocks:
            return "confirmed"
        if self.approximate >= self.predicted:
            return "approximate"
        return "predicted"


@dataclass(frozen=True)
class IndexStats:
    workers: int
    confirmed_blocks: int
    predicted_blocks: int
    approximate_blocks: int
    #: distinct hashes in each layer's mask dict
    distinct_hashes: int
    events_applied: int
    events_ignored: int
    gaps: int
    resets: int
    overflow_evictions: int
    pending_events: int


class UnknownWorker(KeyError):
    """An operation named a worker that is not registered."""


def _bits(mask: int) -> Iterator[int]:
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


def leading_depths(
    layers: Sequence[dict[BlockHash, int]], hashes: Sequence[BlockHash]
) -> dict[int, int]:
    """Slot -> number of leading `hashes` present in the union of `layers` (only slots > 0).

    All per-block work happens in C (see module docstring); the Python part is one `bisect`
    per distinct drop-out depth, at most one per worker.
    """
    if not layers or not hashes:
        return {}
    masks: Iterator[int] = map(layers[0].get, hashes, repeat(0))
    for layer in layers[1:]:
        masks = map(or_, masks, map(layer.get, hashes, repeat(0)))
    acc = list(takewhile(bool, accumulate(masks, and_)))
    out: dict[int, int] = {}
    n = len(acc)
    pos = 0
    while pos < n:
        value = acc[pos]
        # `acc` only loses bits, so it is non-increasing as integers: the first index where it
        # drops below `value` is where the workers in `value` but not in the next mask stop.
        nxt = bisect_right(acc, -value, lo=pos, key=neg)
        after = acc[nxt] if nxt < n else 0
        for slot in _bits(value & ~after):
            out[slot] = nxt
        pos = nxt
    return out


def deep_sizeof(obj: object) -> int:
    """`sys.getsizeof` summed over everything reachable through containers, `__dict__` and
    `__slots__`, each object once. Types and callables are not followed."""
    seen: set[int] = set()
    total = 0
    stack = [obj]
    while stack:
        o = stack.pop()
        if id(o) in seen or isinstance(o, type) or callable(o):
            continue
        seen.add(id(o))
        total += sys.getsizeof(o)
        if isinstance(o, dict):
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, list | tuple | set | frozenset | deque):
            stack.extend(o)
        elif not isinstance(o, str | bytes | int | float | bool):
            d = getattr(o, "__dict__", None)
            if d is not None:
                stack.append(d)
            for cls in type(o).__mro__:
                for name in getattr(cls, "__slots__", ()):
                    if hasattr(o, name):
                        stack.append(getattr(o, name))
    return total


class _TtlLayer:
    """Blocks marked per worker slot with a touch time; expire `ttl_s` after the last touch.

    Per slot the entries stay in touch order (a re-touch moves to the end), so with a constant
    TTL and non-decreasing `now` the front is always the next to expire and the LRU victim.
    """

    __slots__ = ("_next_expiry", "entries", "masks", "ttl_s")

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self.masks: dict[BlockHash, int] = {}
        self.entries: dict[int, OrderedDict[BlockHash, float]] = {}
        self._next_expiry = math.inf

    def size(self, slot: int) -> int:
        od = self.entries.get(slot)
        return len(od) if od is not None else 0

    def total(self) -> int:
        return sum(len(od) for od in self.entries.values())

    def touched_at(self, slot: int, block: BlockHash) -> float | None:
        od = self.entries.get(slot)
        return None if od is None else od.get(block)

    def insert(
        self,
        slot: int,
        hashes: Iterable[BlockHash],
        now: float,
        cap: int,
        skip: OrderedDict[BlockHash, None] | None = None,
    ) -> None:
        bit = 1 << slot
        od = self.entries.get(slot)
        if od is None:
            od = self.entries[slot] = OrderedDict()
        masks = self.masks
        for h in hashes:
            if skip is not None and h in skip:
                continue
            if h in od:
                od.move_to_end(h)
                od[h] = now
            else:
                od[h] = now
                masks[h] = masks.get(h, 0) | bit
        while len(od) > cap:
            self._drop(od.popitem(last=False)[0], bit)
        if od:
            front = next(iter(od.values())) + self.ttl_s
            if front < self._next_expiry:
                self._next_expiry = front
        else:
            del self.entries[slot]

    def discard(self, slot: int, hashes: Iterable[BlockHash]) -> None:
        od = self.entries.get(slot)
        if not od:
            return
        bit = 1 << slot
        for h in hashes:
            if od.pop(h, None) is not None:
                self._drop(h, bit)
        if not od:
            del self.entries[slot]

    def clear_slot(self, slot: int) -> None:
        od = self.entries.pop(slot, None)
        if od:
            bit = 1 << slot
            for h in od:
                self._drop(h, bit)

    def expire(self, now: float) -> None:
        if now < self._next_expiry:
            return
        horizon = now - self.ttl_s
        nxt = math.inf
        for slot in list(self.entries):
            od = self.entries[slot]
            bit = 1 << slot
            while od:
                h, touched = next(iter(od.items()))
                if touched > horizon:
                    nxt = min(nxt, touched + self.ttl_s)
                    break
                od.popitem(last=False)
                self._drop(h, bit)
            if not od:
                del self.entries[slot]
        self._next_expiry = nxt

    def _drop(self, h: BlockHash, bit: int) -> None:
        mask = self.masks[h] & ~bit
        if mask:
            self.masks[h] = mask
        else:
            del self.masks[h]


class _Worker:
    __slots__ = (
        "capacity",
        "confirmed",
        "gap_since",
        "last_seq",
        "name",
        "pending",
        "publishes_events",
        "requested_upto",
        "slot",
    )

    def __init__(
        self, name: str, slot: int, capacity: int, publishes_events: bool, next_seq: int | None
    ) -> None:
        self.name = name
        self.slot = slot
        self.capacity = capacity
        self.publishes_events = publishes_events
        #: None: accept the next event, whatever its number, as the new baseline
        self.last_seq: int | None = None if next_seq is None else next_seq - 1
        self.confirmed: OrderedDict[BlockHash, None] = OrderedDict()
        #: events that arrived after a gap, by sequence number, applied once it is filled
        self.pending: dict[int, tuple[KvEvent, ...]] = {}
        self.gap_since: float | None = None
        #: highest missing sequence number already reported, so a gap is reported once
        self.requested_upto = -1


class BlockIndex:
    """Global prefix index over chained block hashes for a set of workers (see module doc)."""

    def __init__(
        self,
        *,
        predicted_ttl_s: float = 5.0,
        approximate_ttl_s: float = 120.0,
        max_pending_events: int = 4096,
        gap_timeout_s: float = 30.0,
    ) -> None:
        """`max_pending_events` / `gap_timeout_s` bound how long events after a gap are held
        waiting for a replay; past either, the worker's view is reset and re-learnt from them."""
        self._workers: dict[str, _Worker] = {}
        self._by_slot: dict[int, _Worker] = {}
        self._confirmed: dict[BlockHash, int] = {}
        self._predicted = _TtlLayer(predicted_ttl_s)
        self._approximate = _TtlLayer(approximate_ttl_s)
        self.max_pending_events = max_pending_events
        self.gap_timeout_s = gap_timeout_s
        self._applied = 0
        self._ignored = 0
        self._gaps = 0
        self._resets = 0
        self._overflow = 0

    # ---------------------------------------------------------------- workers

    def add_worker(
        self,
        worker: str,
        capacity_blocks: int,
        *,
        publishes_events: bool = True,
        slot: int | None = None,
        next_seq: int | None = 0,
    ) -> int:
        """Register `worker` and return its slot (bit position; lowest free one by default).

        `next_seq` is the first event number expected (vLLM starts at 0); `None` accepts any
        first number, for a router that joins a running worker and will not replay.
        """
        if worker in self._workers:
            raise ValueError(f"worker {worker!r} is already registered")
        if capacity_blocks <= 0:
            raise ValueError(f"capacity_blocks must be > 0, got {capacity_blocks}")
        if slot is None:
            slot = next(s for s in range(len(self._by_slot) + 1) if s not in self._by_slot)
        elif slot < 0 or slot in self._by_slot:
            raise ValueError(f"slot {slot} is negative or taken")
        w = _Worker(worker, slot, capacity_blocks, publishes_events, next_seq)
        self._workers[worker] = w
        self._by_slot[slot] = w
        return slot

    def remove_worker(self, worker: str) -> None:
        """Forget `worker` entirely: its blocks in every layer, pending events, its slot."""
        w = self._get(worker)
        self._clear_confirmed(w)
        self._predicted.clear_slot(w.slot)
        self._approximate.clear_slot(w.slot)
        del self._workers[worker]
        del self._by_slot[w.slot]

    def workers(self) -> list[str]:
        return list(self._workers)

    def slot(self, worker: str) -> int:
        return self._get(worker).slot

    def capacity(self, worker: str) -> int:
        return self._get(worker).capacity

    def publishes_events(self, worker: str) -> bool:
        return self._get(worker).publishes_events

    def last_seq(self, worker: str) -> int | None:
        return self._get(worker).last_seq

    def cached_blocks(self, worker: str) -> int:
        """Blocks the router believes `worker` holds, all layers (Dynamo's tree-size tie-break)."""
        w = self._get(worker)
        return len(w.confirmed) + self._predicted.size(w.slot) + self._approximate.size(w.slot)

    def _get(self, worker: str) -> _Worker:
        try:
            return self._workers[worker]
        except KeyError:
            raise UnknownWorker(worker) from None

    # ---------------------------------------------------------------- events

    def apply(
        self, worker: str, seq: int, event: KvEvent | Sequence[KvEvent], now: float
    ) -> Gap | None:
        """Apply one event (or one vLLM batch of events sharing `seq`) from `worker`.

        Returns a `Gap` the first time numbers are found missing; the caller should request
        them from the worker's replay endpoint and feed them back here, or call
        `reset_worker` if that is impossible. Duplicates and stale numbers are ignored.
        """
        w = self._get(worker)
        events: tuple[KvEvent, ...] = (
            (event,)
            if isinstance(event, BlockStored | BlockRemoved | AllBlocksCleared)
            else tuple(event)
        )
        if w.last_seq is None:
            w.last_seq = seq
            self._apply_events(w, events)
            return None
        if seq <= w.last_seq or seq in w.pending:
            self._ignored += 1
            return None
        if seq == w.last_seq + 1:
            w.last_seq = seq
            self._apply_events(w, events)
            self._drain(w)
            return None
        w.pending[seq] = events
        if w.gap_since is None:
            w.gap_since = now
        if len(w.pending) > self.max_pending_events or now - w.gap_since > self.gap_timeout_s:
            self._resync(w, None)
            return None
        return self._report_gap(w)

    def pending_gap(self, worker: str) -> Gap | None:
        """The whole span still missing for `worker`, reported or not (None: no gap)."""
        w = self._get(worker)
        if not w.pending or w.last_seq is None:
            return None
        return Gap(worker, w.last_seq + 1, self._last_missing(w))

    def reset_worker(self, worker: str, *, next_seq: int | None = None) -> None:
        """Drop the router's confirmed view of `worker` (replay impossible, or engine restart).

        Without `next_seq`, events held after a gap are applied to the emptied view and the
        stream continues after them (or the next event becomes the baseline). With it (a
        restarted engine numbers from 0 again), held events are discarded and `next_seq` is
        the next number expected.
        """
        self._resync(self._get(worker), next_seq)

    def load_snapshot(self, worker: str, blocks: Sequence[BlockHash], next_seq: int) -> None:
        """Replace `worker`'s confirmed view with a snapshot of its cache taken just before
        event `next_seq` (a router that starts or restarts next to running workers).

        Held events numbered `next_seq` or later are applied on top; older ones are already
        in the snapshot. Blocks beyond the worker's capacity are dropped oldest first.
        """
        w = self._get(worker)
        self._clear_confirmed(w)
        self._store(w, blocks)
        pending, w.pending = w.pending, {}
        w.gap_since = None
        w.requested_upto = -1
        w.last_seq = next_seq - 1
        for seq in sorted(s for s in pending if s >= next_seq):
            self.apply(worker, seq, pending[seq], 0.0)

    def _report_gap(self, w: _Worker) -> Gap | None:
        assert w.last_seq is not None
        last_missing = self._last_missing(w)
        if last_missing <= w.requested_upto:
            return None
        w.requested_upto = last_missing
        self._gaps += 1
        return Gap(w.name, w.last_seq + 1, last_missing)

    @staticmethod
    def _last_missing(w: _Worker) -> int:
        seq = max(w.pending) - 1
        while seq in w.pending:
            seq -= 1
        return seq

    def _drain(self, w: _Worker) -> None:
        pending = w.pending
        if not pending:
            return
        assert w.last_seq is not None
        while (nxt := w.last_seq + 1) in pending:
            w.last_seq = nxt
            self._apply_events(w, pending.pop(nxt))
        if not pending:
            w.gap_since = None

    def _resync(self, w: _Worker, next_seq: int | None) -> None:
        self._resets += 1
        self._clear_confirmed(w)
        pending, w.pending = w.pending, {}
        w.gap_since = None
        w.requested_upto = -1
        if next_seq is not None:
            w.last_seq = next_seq - 1
            return
        for seq in sorted(pending):
            self._apply_events(w, pending[seq])
            w.last_seq = seq
        if not pending:
            w.last_seq = None

    def _apply_events(self, w: _Worker, events: Sequence[KvEvent]) -> None:
        for ev in events:
            self._applied += 1
            if isinstance(ev, BlockStored):
                self._store(w, ev.block_hashes)
            elif isinstance(ev, BlockRemoved):
                self._remove(w, ev.block_hashes)
            else:
                self._clear_confirmed(w)
                self._predicted.clear_slot(w.slot)

    def _store(self, w: _Worker, hashes: Sequence[BlockHash]) -> None:
        od = w.confirmed
        masks = self._confirmed
        bit = 1 << w.slot
        for h in hashes:
            if h in od:
                od.move_to_end(h)
            else:
                od[h] = None
                masks[h] = masks.get(h, 0) | bit
        if self._predicted.size(w.slot):
            self._predicted.discard(w.slot, hashes)
        if len(od) > w.capacity:
            self._overflow += len(od) - w.capacity
            while len(od) > w.capacity:
                self._unset(od.popitem(last=False)[0], bit)

    def _remove(self, w: _Worker, hashes: Sequence[BlockHash]) -> None:
        od = w.confirmed
        bit = 1 << w.slot
        for h in hashes:
            if h in od:
                del od[h]
                self._unset(h, bit)

    def _clear_confirmed(self, w: _Worker) -> None:
        bit = 1 << w.slot
        for h in w.confirmed:
            self._unset(h, bit)
        w.confirmed.clear()

    def _unset(self, h: BlockHash, bit: int) -> None:
        mask = self._confirmed[h] & ~bit
        if mask:
            self._confirmed[h] = mask
        else:
            del self._confirmed[h]

    # ---------------------------------------------------------------- routing

    def record_route(self, worker: str, block_hashes: Sequence[BlockHash], now: float) -> None:
        """Note that a request with these blocks was sent to `worker`.

        Event-publishing worker: unconfirmed blocks enter the predicted layer (short TTL) and
        confirmed ones are touched in the LRU, as the engine touches them on a hit. Silent
        worker: all blocks enter (or refresh in) the approximate layer.
        """
        w = self._get(worker)
        if w.publishes_events:
            od = w.confirmed
            for h in block_hashes:
                if h in od:
                    od.move_to_end(h)
            self._predicted.insert(w.slot, block_hashes, now, w.capacity, skip=od)
        else:
            self._approximate.insert(w.slot, block_hashes, now, w.capacity)

    def expire(self, now: float) -> None:
        """Drop predicted/approximate entries whose TTL has passed (lookups do this too)."""
        self._predicted.expire(now)
        self._approximate.expire(now)
        for w in self._workers.values():
            if w.gap_since is not None and now - w.gap_since > self.gap_timeout_s:
                self._resync(w, None)

    def overlaps(self, block_hashes: Sequence[BlockHash], now: float) -> dict[str, int]:
        """Worker -> number of LEADING `block_hashes` resident there (union of layers).

        Workers with no match are absent from the result.
        """
        self._predicted.expire(now)
        self._approximate.expire(now)
        layers = [d for d in (self._confirmed, self._predicted.masks, self._approximate.masks) if d]
        by_slot = self._by_slot
        return {by_slot[s].name: d for s, d in leading_depths(layers, block_hashes).items()}

    def overlaps_by_layer(
        self, block_hashes: Sequence[BlockHash], now: float
    ) -> dict[str, Overlap]:
        """Like `overlaps`, with each layer's own leading depth (for observability)."""
        self._predicted.expire(now)
        self._approximate.expire(now)
        conf, pred, appr = self._confirmed, self._predicted.masks, self._approximate.masks
        union = leading_depths([d for d in (conf, pred, appr) if d], block_hashes)
        per = [leading_depths([d], block_hashes) if d else {} for d in (conf, pred, appr)]
        return {
            self._by_slot[s].name: Overlap(
                blocks=depth,
                confirmed=per[0].get(s, 0),
                predicted=per[1].get(s, 0),
                approximate=per[2].get(s, 0),
            )
            for s, depth in union.items()
        }

    def last_touched(self, worker: str, block: BlockHash) -> float | None:
        """When `block` was last routed to silent `worker` (approximate layer), else None."""
        return self._approximate.touched_at(self._get(worker).slot, block)

    # ---------------------------------------------------------------- introspection

    def stats(self) -> IndexStats:
        return IndexStats(
            workers=len(self._workers),
            confirmed_blocks=sum(len(w.confirmed) for w in self._workers.values()),
            predicted_blocks=self._predicted.total(),
            approximate_blocks=self._approximate.total(),
            distinct_hashes=len(self._confirmed)
            + len(self._predicted.masks)
            + len(self._approximate.masks),
            events_applied=self._applied,
            events_ignored=self._ignored,
            gaps=self._gaps,
            resets=self._resets,
            overflow_evictions=self._overflow,
            pending_events=sum(len(w.pending) for w in self._workers.values()),
        )

    def memory_bytes(self) -> int:
        """Bytes the index holds (containers, keys, values, per-worker state), walked once.

        O(blocks): for reports after a run (the replay benchmark's `index_bytes`), not for a hot
        path. Objects shared with the caller (a hash tuple's ints) are counted once."""
        return deep_sizeof(self)

    def internal_sizes(self) -> dict[str, int]:
        """Entry counts of every internal container (tests assert these reach 0: no leaks)."""
        return {
            "confirmed_masks": len(self._confirmed),
            "predicted_masks": len(self._predicted.masks),
            "approximate_masks": len(self._approximate.masks),
            "predicted_slots": len(self._predicted.entries),
            "approximate_slots": len(self._approximate.entries),
            "confirmed_entries": sum(len(w.confirmed) for w in self._workers.values()),
            "pending_events": sum(len(w.pending) for w in self._workers.values()),
            "workers": len(self._workers),
        }
