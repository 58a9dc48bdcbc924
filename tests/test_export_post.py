"""`--post` against a real HTTP collector on 127.0.0.1 (Splunk HEC and Elastic `_bulk` endpoints)
that fails for a while: nothing lost, nothing duplicated (Elastic: exactly once by `_id`; HEC:
exactly once when failures are refusals, at least once, counted and de-duplicable by
`fields.agentctl_id`, when an outcome is unknown), and delivery resumes after the delivering
process is killed."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import children
import pytest

from agentctl.ctl.errors import UsageError, VerificationError
from agentctl.ctl.export import Backoff, SpoolError, deliver, detect_target, spool_name
from agentctl.ctl.export.bounds import json_line
from agentctl.ctl.export.senders import bulk_source, doc_id
from agentctl.ctl.export.spool import Spool
from agentctl.ctl.export.writer import FramedWriter

TOKEN = "collector-token-0d1f"  # a test credential
FAST = Backoff(initial=0.01, factor=2.0, max_delay=0.05, max_total=5.0, jitter=0.0)
T0 = datetime(2026, 11, 20, 3, 0, tzinfo=UTC)


@dataclass
class State:
    """What the collector does next and what it accepted."""

    fail_next: int = 0  # requests answered 503 before any is accepted
    fail_always: bool = False
    stall_next: int = 0  # requests accepted, then answered too late for the client
    stall_s: float = 0.0
    bulk_item_429: int = 0  # bulk items answered 429 (retry) before items are accepted
    hec_bad_marker: str | None = None  # an event holding this text is refused (400)
    ack: bool = False
    ack_after_polls: int = 2
    requests: int = 0
    refused: int = 0
    hec_events: list[dict[str, Any]] = field(default_factory=list)
    bulk_docs: dict[str, dict[str, Any]] = field(default_factory=dict)
    bulk_conflicts: int = 0
    acks: dict[int, int] = field(default_factory=dict)  # ack id -> polls seen
    lock: threading.Lock = field(default_factory=threading.Lock)


def _hec_events(body: str) -> list[dict[str, Any]]:
    decoder, out, pos = json.JSONDecoder(), [], 0
    while pos < len(body):
        while pos < len(body) and body[pos].isspace():
            pos += 1
        if pos < len(body):
            doc, pos = decoder.raw_decode(body, pos)
            out.append(doc)
    return out


class Handler(BaseHTTPRequestHandler):
    state: State

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def _reply(self, status: int, doc: dict[str, Any]) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
        st = self.state
        if self.path == "/services/collector/ack":
            ack_id = json.loads(body)["acks"][0]
            with st.lock:
                st.acks[ack_id] = st.acks.get(ack_id, 0) + 1
                done = st.acks[ack_id] > st.ack_after_polls
            return self._reply(200, {"acks": {str(ack_id): done}})
        hec = self.path == "/services/collector/event"
        expected = f"Splunk {TOKEN}" if hec else f"ApiKey {TOKEN}"
        if self.headers.get("Authorization") != expected:
            return self._reply(401, {"text": "Invalid authorization", "code": 3})
        with st.lock:
            st.requests += 1
            if st.fail_always or st.fail_next > 0:
                st.fail_next = max(0, st.fail_next - 1)
                st.refused += 1
                refuse = True
            else:
                refuse = False
            stall = not refuse and st.stall_next > 0
            st.stall_next -= stall
        if refuse:
            return self._reply(503, {"text": "Server is busy", "code": 9})
        reply = self._hec(body) if hec else self._bulk(body)
        if stall:
            time.sleep(st.stall_s)  # accepted, but the client gives up before the answer
        self._reply(*reply)

    def _hec(self, body: str) -> tuple[int, dict[str, Any]]:
        st = self.state
        events = _hec_events(body)
        with st.lock:
            for n, ev in enumerate(events):
                if st.hec_bad_marker and st.hec_bad_marker in json.dumps(ev):
                    return 400, {
                        "text": "Invalid data format",
                        "code": 6,
                        "invalid-event-number": n,
                    }
                st.hec_events.append(ev)
            ack_id = len(st.acks)
            if st.ack:
                st.acks[ack_id] = 0
        return 200, {"text": "Success", "code": 0, **({"ackId": ack_id} if st.ack else {})}

    def _bulk(self, body: str) -> tuple[int, dict[str, Any]]:
        st = self.state
        lines = body.splitlines()
        items = []
        with st.lock:
            for action_line, source in zip(lines[::2], lines[1::2], strict=True):
                doc_id_ = json.loads(action_line)["create"]["_id"]
                if st.bulk_item_429 > 0:
                    st.bulk_item_429 -= 1
                    items.append({"create": {"_id": doc_id_, "status": 429}})
                elif doc_id_ in st.bulk_docs:
                    st.bulk_conflicts += 1
                    items.append({"create": {"_id": doc_id_, "status": 409}})
                else:
                    st.bulk_docs[doc_id_] = json.loads(source)
                    items.append({"create": {"_id": doc_id_, "status": 201}})
        return 200, {"errors": any(i["create"]["status"] != 201 for i in items), "items": items}


class Collector:
    def __init__(self, port: int = 0) -> None:
        self.state = State()
        handler = type("H", (Handler,), {"state": self.state})
        self.server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    @property
    def hec(self) -> str:
        return f"http://127.0.0.1:{self.port}/services/collector/event"

    @property
    def bulk(self) -> str:
        return f"http://127.0.0.1:{self.port}/_bulk"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def collector() -> Iterator[Collector]:
    c = Collector()
    yield c
    c.stop()


def _record(i: int) -> dict[str, Any]:
    return {
        "@timestamp": (T0 + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "ecs": {"version": "8.17.0"},
        "event": {"kind": "alert", "category": ["host"], "type": ["info"], "id": f"e{i}"},
        "host": {"name": f"gpu-{i % 4:02d}"},
        "message": f"record {i}",
        "agentctl": {"schema": "agentctl.export/1", "kind": "events"},
    }


def _export_file(path: Path, n: int, start: int = 0) -> list[str]:
    with path.open("w", encoding="utf-8") as fh:
        w = FramedWriter(fh, fmt="ecs", kind="events", since=None, created_at=T0)
        for i in range(start, start + n):
            w.write(_record(i))
        w.close()
    return [json_line(_record(i)) for i in range(start, start + n)]


def _messages(events: list[dict[str, Any]]) -> list[str]:
    return [e["event"]["message"] for e in events]


# -- Elastic -----------------------------------------------------------------------------


def test_bulk_collector_failing_for_a_while_gets_everything_exactly_once(
    collector: Collector, tmp_path: Path
) -> None:
    lines = _export_file(tmp_path / "e.jsonl", 120)
    collector.state.fail_next = 3
    collector.state.bulk_item_429 = 5  # then five items answered 429 inside a 200
    report = deliver(
        tmp_path / "e.jsonl",
        collector.bulk,
        TOKEN,
        tmp_path / "spool",
        batch_records=25,
        backoff=FAST,
    )
    assert report.status == "complete", report
    assert (report.spooled, report.delivered, report.pending) == (120, 120, 0)
    assert report.retries == 4
    expected = {doc_id(bulk_source(line)): json.loads(line) for line in lines}
    assert collector.state.bulk_docs == expected  # complete, no extra, ids from content
    assert report.total_delivered == 120


def test_bulk_resend_after_an_unknown_outcome_is_deduplicated_by_id(
    collector: Collector, tmp_path: Path
) -> None:
    _export_file(tmp_path / "e.jsonl", 60)
    collector.state.stall_next, collector.state.stall_s = 1, 0.6
    report = deliver(
        tmp_path / "e.jsonl",
        collector.bulk,
        TOKEN,
        tmp_path / "spool",
        batch_records=20,
        timeout=0.3,
        backoff=FAST,
    )
    assert report.status == "complete"
    assert len(collector.state.bulk_docs) == 60
    assert collector.state.bulk_conflicts == report.duplicates_ignored == 20
    assert report.delivered == 40 and report.total_delivered == 60


# -- Splunk HEC --------------------------------------------------------------------------


def test_hec_refusals_then_success_deliver_exactly_once(
    collector: Collector, tmp_path: Path
) -> None:
    lines = _export_file(tmp_path / "e.jsonl", 100)
    collector.state.fail_next = 4
    report = deliver(
        tmp_path / "e.jsonl",
        collector.hec,
        TOKEN,
        tmp_path / "spool",
        batch_records=30,
        backoff=FAST,
    )
    assert report.status == "complete" and report.uncertain_batches == 0
    events = collector.state.hec_events
    assert [e["event"] for e in events] == [json.loads(line) for line in lines]  # ECS unchanged
    assert all(e["sourcetype"] == "agentctl:ecs" and e["host"].startswith("gpu-") for e in events)
    assert len({e["fields"]["agentctl_id"] for e in events}) == 100


def test_hec_unknown_outcome_is_at_least_once_reported_and_deduplicable(
    collector: Collector, tmp_path: Path
) -> None:
    """HEC cannot de-duplicate: a batch the collector took but never confirmed (the client
    timed out) is sent again. Guaranteed: nothing lost, copies only of that batch, the report
    counts it, and `fields.agentctl_id` tells the copies apart."""
    _export_file(tmp_path / "e.jsonl", 50)
    collector.state.stall_next, collector.state.stall_s = 1, 0.6
    report = deliver(
        tmp_path / "e.jsonl",
        collector.hec,
        TOKEN,
        tmp_path / "spool",
        batch_records=20,
        timeout=0.3,
        backoff=FAST,
    )
    assert report.status == "complete"
    assert report.uncertain_batches == 1 and report.notes
    messages = _messages(collector.state.hec_events)
    assert set(messages) == {f"record {i}" for i in range(50)}  # nothing lost
    copies = sorted(m for m in set(messages) if messages.count(m) > 1)
    assert copies == sorted(f"record {i}" for i in range(20))  # only the uncertain batch
    ids = {e["fields"]["agentctl_id"] for e in collector.state.hec_events}
    assert len(ids) == 50


def test_hec_ack_holds_the_cursor_until_indexed(collector: Collector, tmp_path: Path) -> None:
    _export_file(tmp_path / "e.jsonl", 10)
    collector.state.ack, collector.state.ack_after_polls = True, 2
    report = deliver(
        tmp_path / "e.jsonl",
        collector.hec,
        TOKEN,
        tmp_path / "spool",
        hec_ack=True,
        ack_timeout=5.0,
        backoff=FAST,
    )
    assert report.status == "complete" and report.delivered == 10
    assert collector.state.acks == {0: 3}  # polled until the collector said indexed


def test_hec_ack_that_never_comes_resends(collector: Collector, tmp_path: Path) -> None:
    _export_file(tmp_path / "e.jsonl", 5)
    collector.state.ack, collector.state.ack_after_polls = True, 10**6
    report = deliver(
        tmp_path / "e.jsonl",
        collector.hec,
        TOKEN,
        tmp_path / "spool",
        hec_ack=True,
        ack_timeout=0.2,
        backoff=Backoff(initial=0.01, max_total=0.05, jitter=0),
    )
    assert report.status == "pending" and report.pending == 5
    assert report.uncertain_batches >= 1


def test_hec_invalid_event_is_kept_and_the_rest_delivered(
    collector: Collector, tmp_path: Path
) -> None:
    _export_file(tmp_path / "e.jsonl", 10)
    collector.state.hec_bad_marker = "record 3"
    report = deliver(tmp_path / "e.jsonl", collector.hec, TOKEN, tmp_path / "spool", backoff=FAST)
    assert report.status == "complete"
    assert (report.delivered, report.rejected) == (9, 1)
    assert _messages(collector.state.hec_events) == [f"record {i}" for i in range(10) if i != 3]
    (kept,) = (tmp_path / "spool" / "rejected.jsonl").read_text().splitlines()
    assert json.loads(json.loads(kept)["record"])["message"] == "record 3"


# -- spool, resume, crash ----------------------------------------------------------------


@pytest.mark.parametrize("target", ["hec", "bulk"])
def test_collector_down_keeps_records_and_a_later_run_resumes(
    collector: Collector, tmp_path: Path, target: str
) -> None:
    _export_file(tmp_path / "e.jsonl", 40)
    spool = tmp_path / "spool"
    url = getattr(collector, target)
    port = collector.port
    collector.stop()  # connection refused
    down = Backoff(initial=0.01, max_total=0.05, jitter=0)
    report = deliver(tmp_path / "e.jsonl", url, TOKEN, spool, batch_records=15, backoff=down)
    assert (report.status, report.spooled, report.delivered, report.pending) == (
        "pending",
        40,
        0,
        40,
    )
    again = Collector(port)  # back on the same port
    try:
        again.state.fail_next = 1
        report = deliver(None, url, TOKEN, spool, batch_records=15, backoff=FAST)
        assert report.status == "complete" and report.delivered == 40
        got = _messages(again.state.hec_events) or [
            d["message"] for d in again.state.bulk_docs.values()
        ]
        assert sorted(got) == sorted(f"record {i}" for i in range(40))
        assert (spool / "spool.jsonl").stat().st_size == 0  # emptied once all was delivered
    finally:
        again.stop()


def test_the_same_export_is_spooled_once(collector: Collector, tmp_path: Path) -> None:
    _export_file(tmp_path / "e.jsonl", 8)
    first = deliver(tmp_path / "e.jsonl", collector.hec, TOKEN, tmp_path / "s", backoff=FAST)
    second = deliver(tmp_path / "e.jsonl", collector.hec, TOKEN, tmp_path / "s", backoff=FAST)
    assert (first.spooled, second.spooled, second.source_already_spooled) == (8, 0, True)
    assert len(collector.state.hec_events) == 8
    _export_file(tmp_path / "f.jsonl", 3, start=8)  # a new export is spooled
    third = deliver(tmp_path / "f.jsonl", collector.hec, TOKEN, tmp_path / "s", backoff=FAST)
    assert third.delivered == 3 and third.total_delivered == 11


def test_a_crash_while_spooling_is_rolled_back(collector: Collector, tmp_path: Path) -> None:
    destination = f"elastic http://127.0.0.1:{collector.port}/_bulk"

    def dying() -> Iterator[str]:
        yield json_line(_record(0))
        yield json_line(_record(1))
        raise KeyboardInterrupt  # the process dies half way through the append

    with Spool(tmp_path / "s", destination) as spool, pytest.raises(KeyboardInterrupt):
        spool.append(dying())
    with (tmp_path / "s" / "spool.jsonl").open("ab") as fh:
        fh.write(b'{"torn": tr')  # and left a torn line
    lines = [json_line(_record(i)) for i in range(5)]
    report = deliver(lines, collector.bulk, TOKEN, tmp_path / "s", backoff=FAST)
    assert report.delivered == 5 and len(collector.state.bulk_docs) == 5


_CHILD = """
import sys
from agentctl.ctl.export import Backoff, deliver
deliver(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], batch_records=10,
        backoff=Backoff(initial=0.3, factor=1, max_total=120, jitter=0))
"""


@pytest.mark.parametrize("target", ["hec", "bulk"])
def test_a_killed_delivery_resumes_without_loss_or_duplicates(
    collector: Collector, tmp_path: Path, target: str
) -> None:
    _export_file(tmp_path / "e.jsonl", 55)
    spool, url = tmp_path / "spool", getattr(collector, target)
    st = collector.state
    child = children.start(
        [sys.executable, "-c", _CHILD, str(tmp_path / "e.jsonl"), url, TOKEN, str(spool)],
        env=dict(os.environ),
    )
    try:
        deadline = time.monotonic() + 60  # a wait, not a measurement: generous for a busy CI
        while time.monotonic() < deadline:
            with st.lock:
                taken = len(st.hec_events) + len(st.bulk_docs)
                if taken >= 20:
                    st.fail_always = True  # the collector goes down after two batches
                refused = st.refused
            path = spool / "cursor.json"
            cursor = json.loads(path.read_text()) if path.exists() else {"inflight": 0}
            if refused >= 2 and cursor["inflight"] is None:
                break  # the refusal is settled: the child sleeps before its next try
            time.sleep(0.01)
        else:
            pytest.fail("the delivery never reached the failing collector")
        child.send_signal(signal.SIGKILL)  # dies while backing off
        assert child.wait(10) == -signal.SIGKILL  # it did not get to finish
    finally:
        children.stop(child)
    delivered_before = len(st.hec_events) + len(st.bulk_docs)
    assert 20 <= delivered_before < 55
    st.fail_always = False
    report = deliver(None, url, TOKEN, spool, batch_records=10, backoff=FAST)
    assert report.status == "complete" and not report.recovered_inflight
    assert report.delivered == 55 - delivered_before
    got = (
        _messages(st.hec_events)
        if target == "hec"
        else [d["message"] for d in st.bulk_docs.values()]
    )
    assert sorted(got) == sorted(f"record {i}" for i in range(55))  # all, each once
    assert st.bulk_conflicts == 0


# -- refusals ------------------------------------------------------------------------------


def test_a_wrong_token_fails_without_losing_records(collector: Collector, tmp_path: Path) -> None:
    _export_file(tmp_path / "e.jsonl", 4)
    report = deliver(tmp_path / "e.jsonl", collector.hec, "wrong", tmp_path / "s", backoff=FAST)
    assert report.status == "failed" and "401" in (report.error or "")
    assert report.pending == 4
    assert "wrong" not in json.dumps(report.to_json()) and TOKEN not in json.dumps(report.to_json())
    retry = deliver(None, collector.hec, TOKEN, tmp_path / "s", backoff=FAST)
    assert retry.delivered == 4


def test_a_cut_off_export_is_refused_unless_partial_is_allowed(
    collector: Collector, tmp_path: Path
) -> None:
    _export_file(tmp_path / "e.jsonl", 10)
    data = (tmp_path / "e.jsonl").read_bytes()
    (tmp_path / "cut.jsonl").write_bytes(data[: len(data) // 2])
    with pytest.raises(VerificationError, match="no trailer"):
        deliver(tmp_path / "cut.jsonl", collector.bulk, TOKEN, tmp_path / "s", backoff=FAST)
    report = deliver(
        tmp_path / "cut.jsonl",
        collector.bulk,
        TOKEN,
        tmp_path / "s",
        backoff=FAST,
        allow_partial=True,
    )
    whole_lines = data[: len(data) // 2].count(b"\n") - 1  # minus the header
    assert report.delivered == len(collector.state.bulk_docs) == whole_lines


def test_one_spool_per_destination_and_one_delivery_at_a_time(
    collector: Collector, tmp_path: Path
) -> None:
    deliver([json_line(_record(0))], collector.bulk, TOKEN, tmp_path / "s", backoff=FAST)
    with pytest.raises(SpoolError, match="belongs to"):
        deliver(None, collector.hec, TOKEN, tmp_path / "s", backoff=FAST)
    held = Spool(tmp_path / "s", f"elastic http://127.0.0.1:{collector.port}/_bulk")
    with held, pytest.raises(SpoolError, match="another delivery"):
        deliver(None, collector.bulk, TOKEN, tmp_path / "s", backoff=FAST)


def test_the_target_comes_from_the_url() -> None:
    assert detect_target("https://splunk:8088/services/collector") == "hec"
    name = spool_name("https://user:pw@splunk.example:8088/services/collector/event")
    assert name.startswith("hec-splunk.example-") and "pw" not in name
    assert detect_target("https://es:9200/logs-agentctl-default/_bulk") == "elastic"
    assert detect_target("https://collector.example/ingest", "hec") == "hec"
    with pytest.raises(UsageError):
        detect_target("https://collector.example/ingest")


def test_bulk_ids_are_the_content_hash() -> None:
    line = json_line(_record(7))
    envelope = json_line({"time": 1.0, "host": "h", "sourcetype": "x", "event": _record(7)})
    assert bulk_source(envelope) == line  # an HEC export posts the same ECS document
    assert doc_id(line) == hashlib.sha256(line.encode()).hexdigest()
