"""Events (de-duplication window, cursors saved with their events) and diagnostic reports,
on a real SQLite file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from agentctl.collectors.store import EventRecord, Store

T0 = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)


def _ev(minutes: float, key: str = "xid:0000:06:00:79", node: str = "n1") -> EventRecord:
    return EventRecord(node=node, kind="xid", key=key, at=T0 + timedelta(minutes=minutes),
                       severity="critical", message=f"at {minutes}", code=79)  # fmt: skip


def test_repeats_inside_the_window_fold_into_one_row(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 'e.db'}") as store:
        added = store.record_events([_ev(0), _ev(4), _ev(9), _ev(30), _ev(5, key="other")])
        assert added == 3
        rows = store.list_events(node="n1")
        got = sorted((r.key, r.count, r.first_at, r.last_at) for r in rows)
        assert got == [
            ("other", 1, T0 + timedelta(minutes=5), T0 + timedelta(minutes=5)),
            ("xid:0000:06:00:79", 1, T0 + timedelta(minutes=30), T0 + timedelta(minutes=30)),
            ("xid:0000:06:00:79", 3, T0, T0 + timedelta(minutes=9)),
        ]
        # an event arriving later but dated inside a row's span joins it; the newest message wins
        store.record_events([_ev(2)], window=timedelta(minutes=1))
        burst = next(r for r in store.list_events(node="n1") if r.count > 1)
        assert (burst.count, burst.message) == (4, "at 9")
        # other nodes and severities filter
        store.record_events([_ev(0, node="n2")])
        assert {r.node for r in store.list_events()} == {"n1", "n2"}
        assert store.list_events(severities=["info"]) == []
        assert len(store.list_events(since=T0 + timedelta(minutes=20))) == 1


def test_the_cursor_is_saved_with_its_events_or_not_at_all(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 'c.db'}") as store:
        store.record_events([_ev(0)], cursor=("n1", "xid", "c1"))
        assert store.get_cursor("n1", "xid") == "c1"
        naive = EventRecord("n1", "xid", "k", datetime(2026, 1, 1), "info", "m")
        with pytest.raises(ValueError, match="timezone-aware"):
            store.record_events([_ev(1), naive], cursor=("n1", "xid", "c2"))
        assert store.get_cursor("n1", "xid") == "c1"
        assert sum(r.count for r in store.list_events()) == 1
        store.record_events([], cursor=("n1", "xid", "c3"))
        assert store.get_cursor("n1", "xid") == "c3"


def test_diag_reports_newest_per_node(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 'd.db'}") as store:
        for i, (node, verdict) in enumerate([("a", "pass"), ("b", "fail"), ("a", "warn")]):
            store.save_diag(node, "l1", verdict=verdict, summary=f"s{i}",
                            data={"checks": [{"name": "disk", "pass": 1}]},
                            created_at=T0 + timedelta(minutes=i))  # fmt: skip
        store.save_diag("a", "reboot_cause", verdict="kernel_panic", summary="x", data={})
        latest = store.latest_diag("l1")
        assert {k: v.verdict for k, v in latest.items()} == {"a": "warn", "b": "fail"}
        assert latest["a"].data == {"checks": [{"name": "disk", "pass": 1}]}
        assert [r.summary for r in store.list_diag(node="a", kind="l1")] == ["s2", "s0"]
        assert [r.kind for r in store.list_diag(node="a", limit=1)] == ["reboot_cause"]  # newest


def test_old_events_and_reports_are_purged_in_batches(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 'p.db'}") as store:
        store.record_events([_ev(0, key=f"k{i}") for i in range(5)] + [_ev(1000, key="new")])
        store.save_diag("n1", "l1", verdict="pass", summary="old", data={}, created_at=T0)
        store.save_diag("n1", "l1", verdict="pass", summary="new", data={},
                        created_at=T0 + timedelta(days=2))  # fmt: skip
        for day in (0, 2):
            store.save_bench("serving_replay", title=f"day {day}", data={},
                             created_at=T0 + timedelta(days=day))  # fmt: skip
        got = store.purge_events(T0 + timedelta(days=1), keep=timedelta(hours=12), batch=2)
        assert got == {"events": 5, "diag_reports": 1, "bench_results": 1}
        assert [b.title for b in store.list_bench("serving_replay")] == ["day 2"]
        assert [e.key for e in store.list_events()] == ["new"]
        assert [r.summary for r in store.list_diag()] == ["new"]


def test_benchmark_results_newest_first_and_bounded(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 'b.db'}") as store:
        assert store.latest_bench("serving_replay") is None
        for i in range(3):
            store.save_bench("serving_replay", title=f"run {i}",
                             created_at=T0 + timedelta(minutes=i),
                             data={"policies": {"kv": {"hit_rate": 0.5 + i / 10}}})  # fmt: skip
        store.save_bench("other", title="x" * 10_000, data={"nul": "a\x00b"})
        latest = store.latest_bench("serving_replay")
        assert latest is not None and latest.title == "run 2"
        assert latest.data == {"policies": {"kv": {"hit_rate": 0.7}}}
        assert [b.title for b in store.list_bench("serving_replay", 2)] == ["run 2", "run 1"]
        other = store.latest_bench("other")
        assert other is not None and len(other.title.encode()) <= 4096
        assert other.data == {"nul": "a\ufffdb"}
