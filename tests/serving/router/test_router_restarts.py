"""Engine restarts are told by the worker's instance id, never by racing sequence numbers;
a cache snapshot replaces a worker's view and the events after it apply on top."""

from __future__ import annotations

from agentctl.serving.router.policies import make_policy
from agentctl.serving.router.registry import Registry, _parse_snapshot
from agentctl.serving.router.router_metrics import RouterMetrics
from agentctl.serving.types import BlockStored


def _registry() -> Registry:
    reg = Registry(make_policy("kv"), block_size=16, metrics=RouterMetrics())
    reg.add("w0", "http://127.0.0.1:9", capacity_blocks=64, events="ipc:///nonexistent")
    return reg


def _store(reg: Registry, seq: int, hashes: list[int]) -> None:
    reg.index.apply("w0", seq, [BlockStored(tuple(hashes), None, 16)], 0.0)


def test_same_instance_with_any_sequence_is_not_a_restart() -> None:
    reg = _registry()
    w = reg.workers["w0"]
    reg._note_instance(w, "aaaa")
    _store(reg, 0, [1, 2, 3])
    # a /health body computed before event 0 was published says next_seq 0: no reset
    reg._note_instance(w, "aaaa")
    assert w.resets == 0 and reg.index.cached_blocks("w0") == 3


def test_a_new_instance_resets_the_view() -> None:
    reg = _registry()
    w = reg.workers["w0"]
    reg._note_instance(w, "aaaa")
    _store(reg, 0, [1, 2, 3])
    reg._note_instance(w, "bbbb")
    assert w.resets == 1 and w.instance_id == "bbbb"
    assert reg.index.cached_blocks("w0") == 0
    _store(reg, 0, [7])  # the new engine numbers from 0 again
    assert reg.index.cached_blocks("w0") == 1
    reg._note_instance(w, None)  # an engine that sends none (vLLM) changes nothing
    assert w.resets == 1


def test_snapshot_replaces_the_view_and_later_events_apply_on_top() -> None:
    reg = _registry()
    _store(reg, 0, [99])
    reg.index.apply("w0", 12, [BlockStored((5,), None, 16)], 0.0)  # held: after a gap
    reg.index.load_snapshot("w0", [1, 2, 3], next_seq=12)
    assert reg.index.cached_blocks("w0") == 4  # 1, 2, 3 and event 12's block 5
    assert reg.index.overlaps([1, 2, 3], 0.0) == {"w0": 3}
    assert reg.index.overlaps([99], 0.0) == {}
    assert reg.index.last_seq("w0") == 12


def test_snapshot_bodies_are_validated() -> None:
    assert _parse_snapshot({"next_seq": 3, "blocks": [[1, None], [2, 1]], "instance_id": "x"}) == (
        [1, 2],
        3,
        "x",
    )
    assert _parse_snapshot({"next_seq": 0, "blocks": [-1]}) == ([(1 << 64) - 1], 0, None)
    for bad in (
        [],
        {"blocks": []},
        {"next_seq": -1, "blocks": []},
        {"next_seq": True, "blocks": []},
        {"next_seq": 1, "blocks": "x"},
        {"next_seq": 1, "blocks": [["h"]]},
    ):
        assert _parse_snapshot(bad) is None, bad
