"""Block index: event ordering, gaps, resets, memory bounds, the three layers, leading matches."""

from __future__ import annotations

import random

import pytest

from agentctl.serving.router.index import BlockIndex, Gap, UnknownWorker, leading_depths
from agentctl.serving.types import AllBlocksCleared, BlockRemoved, BlockStored

P = tuple(range(1000, 1020))  # one prompt's chained block hashes


def stored(*hashes: int) -> BlockStored:
    return BlockStored(block_hashes=tuple(hashes), parent_block_hash=None)


def removed(*hashes: int) -> BlockRemoved:
    return BlockRemoved(block_hashes=tuple(hashes))


def make(*workers: str, capacity: int = 1000, **kw: float) -> BlockIndex:
    idx = BlockIndex(**kw)  # type: ignore[arg-type]
    for w in workers:
        idx.add_worker(w, capacity)
    return idx


def assert_empty(idx: BlockIndex, workers: int) -> None:
    sizes = idx.internal_sizes()
    assert sizes.pop("workers") == workers
    assert all(v == 0 for v in sizes.values()), sizes


# ---------------------------------------------------------------------------- ordering


def test_events_in_order_build_leading_overlaps() -> None:
    idx = make("a", "b")
    assert idx.apply("a", 0, stored(*P[:10]), now=0.0) is None
    assert idx.apply("b", 0, stored(*P[:4]), now=0.0) is None
    assert idx.apply("a", 1, stored(*P[10:15]), now=0.1) is None
    assert idx.overlaps(P, now=0.2) == {"a": 15, "b": 4}
    assert idx.overlaps(P[:3], now=0.2) == {"a": 3, "b": 3}
    assert idx.overlaps((7, *P), now=0.2) == {}  # the first block decides
    assert idx.overlaps((), now=0.2) == {}
    assert idx.cached_blocks("a") == 15 and idx.cached_blocks("b") == 4


def test_a_hole_breaks_the_prefix() -> None:
    idx = make("a")
    idx.apply("a", 0, stored(*P[:10]), now=0.0)
    idx.apply("a", 1, removed(P[4]), now=0.0)
    assert idx.overlaps(P, now=0.0) == {"a": 4}
    # blocks after the hole are still held but useless to this prompt
    assert idx.cached_blocks("a") == 9
    assert idx.overlaps(P[5:], now=0.0) == {"a": 5}


def test_duplicate_and_stale_sequence_numbers_are_ignored() -> None:
    idx = make("a")
    idx.apply("a", 0, stored(P[0], P[1]), now=0.0)
    idx.apply("a", 1, removed(P[1]), now=0.0)
    # a replayed/duplicated Stored must not resurrect the removed block
    assert idx.apply("a", 0, stored(P[0], P[1]), now=0.0) is None
    assert idx.apply("a", 1, removed(P[1]), now=0.0) is None
    assert idx.overlaps(P, now=0.0) == {"a": 1}
    assert idx.stats().events_ignored == 2


def test_out_of_order_events_wait_for_the_gap_and_apply_in_order() -> None:
    idx = make("a")
    idx.apply("a", 0, stored(P[0]), now=0.0)
    # seq 2 (remove) overtakes seq 1 (store): applying it first would leave P[1] resident
    gap = idx.apply("a", 2, removed(P[1]), now=0.0)
    assert gap == Gap("a", 1, 1)
    assert idx.pending_gap("a") == Gap("a", 1, 1)
    assert idx.stats().pending_events == 1
    assert idx.apply("a", 1, stored(P[1]), now=0.0) is None
    assert idx.last_seq("a") == 2
    assert idx.overlaps(P, now=0.0) == {"a": 1}
    assert idx.pending_gap("a") is None
    assert idx.stats().pending_events == 0


def test_gap_reported_once_with_the_right_range_then_extended() -> None:
    idx = make("a")
    idx.apply("a", 0, stored(P[0]), now=0.0)
    assert idx.apply("a", 5, stored(P[5]), now=0.0) == Gap("a", 1, 4)
    # more events after the same hole: already asked for, not reported again
    assert idx.apply("a", 6, stored(P[6]), now=0.0) is None
    assert idx.apply("a", 3, stored(P[3]), now=0.0) is None  # narrows the hole, no new ask
    # a new hole beyond what was asked for is reported: 7 missing, 8 arrived
    assert idx.apply("a", 8, stored(P[8]), now=0.0) == Gap("a", 1, 7)
    assert idx.stats().gaps == 2
    for seq in (1, 2, 4, 7):  # the replay
        idx.apply("a", seq, stored(P[seq]), now=0.0)
    assert idx.last_seq("a") == 8
    assert idx.overlaps(P, now=0.0) == {"a": 9}


def test_batch_of_events_shares_one_sequence_number() -> None:
    idx = make("a")
    idx.apply("a", 0, [stored(*P[:5]), removed(P[4]), stored(P[4], P[5])], now=0.0)
    assert idx.overlaps(P, now=0.0) == {"a": 6}
    assert idx.stats().events_applied == 3


def test_reset_when_replay_is_impossible_drops_the_view_and_keeps_later_events() -> None:
    idx = make("a", "b")
    idx.apply("a", 0, stored(*P[:8]), now=0.0)
    idx.apply("b", 0, stored(*P[:8]), now=0.0)
    assert idx.apply("a", 3, stored(100, 101), now=1.0) == Gap("a", 1, 2)
    idx.reset_worker("a")
    # what a held before the gap is forgotten; what came after is applied; b is untouched
    assert idx.overlaps(P, now=1.0) == {"b": 8}
    assert idx.overlaps((100, 101), now=1.0) == {"a": 2}
    assert idx.last_seq("a") == 3
    assert idx.apply("a", 4, stored(102), now=1.0) is None
    assert idx.overlaps((100, 101, 102), now=1.0) == {"a": 3}
    assert idx.stats().resets == 1


def test_reset_without_pending_takes_the_next_event_as_baseline() -> None:
    idx = make("a")
    idx.apply("a", 0, stored(P[0]), now=0.0)
    idx.reset_worker("a")
    assert idx.overlaps(P, now=0.0) == {}
    assert idx.apply("a", 57, stored(P[0]), now=0.0) is None
    assert idx.apply("a", 58, stored(P[1]), now=0.0) is None
    assert idx.overlaps(P, now=0.0) == {"a": 2}


def test_too_many_held_events_or_too_old_a_gap_resets_on_its_own() -> None:
    idx = make("a", max_pending_events=3, gap_timeout_s=10.0)
    idx.apply("a", 0, stored(P[0]), now=0.0)
    for seq in (2, 3, 4):
        idx.apply("a", seq, stored(P[seq]), now=0.0)
    assert idx.stats().resets == 0
    idx.apply("a", 5, stored(P[5]), now=0.0)  # a fourth held event: give up, re-learn
    assert idx.stats().resets == 1
    assert idx.last_seq("a") == 5
    assert idx.overlaps(P[2:], now=0.0) == {"a": 4}
    assert idx.overlaps(P, now=0.0) == {}

    idx.apply("a", 7, stored(P[7]), now=1.0)
    idx.expire(now=5.0)
    assert idx.stats().resets == 1
    idx.expire(now=11.5)  # the gap at 6 is older than gap_timeout_s
    assert idx.stats().resets == 2
    assert idx.last_seq("a") == 7 and idx.pending_gap("a") is None


def test_a_router_joining_late_asks_for_everything_it_missed() -> None:
    idx = BlockIndex()
    idx.add_worker("a", 100)
    assert idx.apply("a", 40, stored(P[0]), now=0.0) == Gap("a", 0, 39)
    idx.add_worker("b", 100, next_seq=None)  # no replay possible: start from what comes
    assert idx.apply("b", 40, stored(P[0]), now=0.0) is None
    assert idx.overlaps(P, now=0.0) == {"b": 1}


def test_engine_restart_all_blocks_cleared_then_new_events() -> None:
    idx = make("a", "b")
    idx.apply("a", 0, stored(*P[:6]), now=0.0)
    idx.apply("b", 0, stored(*P[:6]), now=0.0)
    idx.record_route("a", P[:10], now=0.0)
    idx.apply("a", 1, AllBlocksCleared(), now=0.5)
    assert idx.overlaps(P, now=0.5) == {"b": 6}
    assert idx.cached_blocks("a") == 0
    idx.apply("a", 2, stored(*P[:2]), now=0.6)
    assert idx.overlaps(P, now=0.6) == {"a": 2, "b": 6}
    # a restarted process numbering from 0 again: the caller resets with next_seq=0
    idx.reset_worker("a", next_seq=0)
    assert idx.overlaps(P, now=0.7) == {"b": 6}
    assert idx.apply("a", 0, stored(*P[:3]), now=0.7) is None
    assert idx.overlaps(P, now=0.7) == {"a": 3, "b": 6}


# ---------------------------------------------------------------------------- memory


def test_removing_every_block_leaves_no_entries_behind() -> None:
    idx = make("a", "b")
    idx.apply("a", 0, stored(*P), now=0.0)
    idx.apply("b", 0, stored(*P[:10]), now=0.0)
    idx.apply("a", 1, removed(*P), now=0.0)
    idx.apply("b", 1, removed(*P[:10], 99999), now=0.0)  # unknown hash: ignored
    assert idx.overlaps(P, now=0.0) == {}
    assert_empty(idx, workers=2)


def test_remove_worker_frees_all_its_memory_and_its_slot() -> None:
    idx = make("a", "b", "silent-placeholder")
    idx.remove_worker("silent-placeholder")
    idx.add_worker("c", 1000, publishes_events=False)
    idx.apply("a", 0, stored(*P), now=0.0)
    idx.apply("a", 2, stored(5, 6), now=0.0)  # held after a gap
    idx.record_route("a", (*P, 7, 8), now=0.0)  # predicted beyond the confirmed blocks
    idx.apply("b", 0, stored(*P[:5]), now=0.0)
    idx.record_route("c", P[:12], now=0.0)
    slot_a = idx.slot("a")
    idx.remove_worker("a")
    assert idx.overlaps(P, now=0.1) == {"b": 5, "c": 12}
    assert "a" not in idx.overlaps_by_layer(P, now=0.1)
    with pytest.raises(UnknownWorker):
        idx.apply("a", 3, stored(1), now=0.1)
    assert idx.add_worker("a2", 10) == slot_a  # the slot is reused, with no stale bits
    assert idx.overlaps(P, now=0.1) == {"b": 5, "c": 12}
    idx.remove_worker("b")
    idx.remove_worker("c")
    idx.remove_worker("a2")
    assert_empty(idx, workers=0)


def test_memory_is_capped_at_capacity_by_evicting_the_routers_view_lru() -> None:
    idx = BlockIndex()
    idx.add_worker("a", 8)
    idx.apply("a", 0, stored(*P[:8]), now=0.0)
    idx.record_route("a", P[:2], now=0.0)  # a hit touches blocks 0-1, as the engine would
    idx.apply("a", 1, stored(*P[8:12]), now=0.0)  # silent evictions: no BlockRemoved came
    stats = idx.stats()
    assert stats.confirmed_blocks == 8 and stats.overflow_evictions == 4
    # blocks 2-5 (least recently used) went: the prefix now stops after block 1
    assert idx.overlaps(P, now=0.0) == {"a": 2}
    assert idx.overlaps(P[6:], now=0.0) == {"a": 6}
    assert idx.internal_sizes()["confirmed_masks"] == 8


def test_add_worker_validates() -> None:
    idx = make("a")
    with pytest.raises(ValueError, match="already"):
        idx.add_worker("a", 10)
    with pytest.raises(ValueError, match="capacity"):
        idx.add_worker("b", 0)
    with pytest.raises(ValueError, match="slot"):
        idx.add_worker("b", 10, slot=idx.slot("a"))
    assert idx.add_worker("b", 10, slot=70) == 70  # any bit position: Python ints are unbounded
    idx.apply("b", 0, stored(*P[:3]), now=0.0)
    assert idx.overlaps(P, now=0.0) == {"b": 3}


# ---------------------------------------------------------------------------- layers


def test_predicted_layer_covers_a_sibling_burst_then_expires() -> None:
    idx = make("a", "b", predicted_ttl_s=5.0)
    idx.record_route("a", P, now=10.0)
    assert idx.overlaps(P, now=10.0) == {"a": 20}
    layers = idx.overlaps_by_layer(P, now=12.0)["a"]
    assert (layers.blocks, layers.confirmed, layers.predicted) == (20, 0, 20)
    assert layers.layer == "predicted"
    assert idx.overlaps(P, now=14.9) == {"a": 20}
    assert idx.overlaps(P, now=15.0) == {}
    assert_empty(idx, workers=2)


def test_rerouting_refreshes_the_prediction() -> None:
    idx = make("a", predicted_ttl_s=5.0)
    idx.record_route("a", P[:10], now=0.0)
    idx.record_route("a", P[:4], now=4.0)
    assert idx.overlaps(P, now=6.0) == {"a": 4}
    assert idx.overlaps(P, now=9.5) == {}


def test_confirmation_replaces_the_prediction_and_the_union_spans_both() -> None:
    idx = make("a", predicted_ttl_s=5.0)
    idx.record_route("a", P, now=0.0)
    # the engine confirms the prefill chunk by chunk: first 12 blocks so far
    idx.apply("a", 0, stored(*P[:12]), now=1.0)
    ov = idx.overlaps_by_layer(P, now=1.0)["a"]
    assert (ov.blocks, ov.confirmed, ov.predicted) == (20, 12, 0)
    assert idx.stats().predicted_blocks == 8  # the confirmed ones left the predicted layer
    idx.apply("a", 1, stored(*P[12:]), now=2.0)
    ov = idx.overlaps_by_layer(P, now=2.0)["a"]
    assert (ov.blocks, ov.confirmed, ov.layer) == (20, 20, "confirmed")
    assert idx.stats().predicted_blocks == 0
    # routing again over confirmed blocks predicts nothing new
    idx.record_route("a", P, now=3.0)
    assert idx.stats().predicted_blocks == 0
    assert idx.overlaps(P, now=100.0) == {"a": 20}


def test_approximate_layer_for_workers_without_events() -> None:
    idx = BlockIndex(approximate_ttl_s=120.0)
    idx.add_worker("s", 12, publishes_events=False)
    idx.add_worker("e", 100)
    idx.record_route("s", P[:10], now=0.0)
    ov = idx.overlaps_by_layer(P, now=60.0)["s"]
    assert (ov.blocks, ov.approximate, ov.layer) == (10, 10, "approximate")
    assert idx.last_touched("s", P[0]) == 0.0
    idx.record_route("s", P[:3], now=100.0)  # a hit refreshes
    # LRU cap at capacity (12): blocks 3..9 are the oldest and go first
    idx.record_route("s", (500, 501, 502, 503, 504), now=101.0)
    assert idx.cached_blocks("s") == 12
    assert idx.overlaps(P, now=101.0) == {"s": 3}
    assert idx.overlaps(P, now=219.0) == {"s": 3}
    assert idx.overlaps(P, now=220.0) == {}
    assert idx.overlaps((500, 501), now=220.0) == {"s": 2}
    assert idx.overlaps((500, 501), now=221.0) == {}
    assert_empty(idx, workers=2)


def test_layers_combine_across_workers() -> None:
    idx = BlockIndex()
    idx.add_worker("e", 100)
    idx.add_worker("s", 100, publishes_events=False)
    idx.apply("e", 0, stored(*P[:5]), now=0.0)
    idx.record_route("e", P[:8], now=0.0)
    idx.record_route("s", P[:3], now=0.0)
    got = idx.overlaps_by_layer(P, now=1.0)
    assert {w: o.blocks for w, o in got.items()} == {"e": 8, "s": 3}
    assert (got["e"].confirmed, got["e"].predicted, got["s"].approximate) == (5, 0, 3)


# ---------------------------------------------------------------------------- the walk


def naive_depths(layers: list[dict[int, int]], hashes: list[int]) -> dict[int, int]:
    slots = {s for layer in layers for m in layer.values() for s in range(m.bit_length())}
    out = {}
    for s in slots:
        depth = 0
        for h in hashes:
            if not any(layer.get(h, 0) >> s & 1 for layer in layers):
                break
            depth += 1
        if depth:
            out[s] = depth
    return out


@pytest.mark.parametrize("seed", range(25))
def test_leading_depths_matches_a_naive_walk(seed: int) -> None:
    rng = random.Random(seed)
    universe = list(range(60))
    layers = []
    for _ in range(rng.randint(1, 3)):
        layer = {}
        for h in universe:
            mask = 0
            for s in range(rng.randint(1, 9)):
                if rng.random() < 0.85:
                    mask |= 1 << s
            if mask:
                layer[h] = mask
        layers.append(layer)
    for _ in range(20):
        hashes = rng.sample(universe, rng.randint(0, 40))
        assert leading_depths(layers, hashes) == naive_depths(layers, hashes)


def test_memory_bytes_follows_what_the_index_holds() -> None:
    import tracemalloc

    idx = BlockIndex()
    idx.add_worker("w0", 100_000)
    empty = idx.memory_bytes()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    idx.apply("w0", 0, [BlockStored(tuple(range(1, 20_001)), None)], 0.0)
    traced = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    full = idx.memory_bytes()
    # the walk counts what tracemalloc saw being allocated, within the ints' sharing
    assert 0.5 * traced < full - empty < 2.0 * traced
    idx.apply("w0", 1, [BlockRemoved(tuple(range(1, 20_001)))], 0.0)
    # emptied hash tables keep their size (CPython never shrinks a dict in place): what is
    # left is well under the full index, keys and values gone
    assert idx.memory_bytes() < empty + 0.75 * (full - empty)
    assert idx.stats().pending_events == 0
