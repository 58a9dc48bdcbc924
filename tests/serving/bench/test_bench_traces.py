"""Trace readers on the committed fixture slices, and clear errors on malformed lines."""

from __future__ import annotations

import json
import lzma
from pathlib import Path

import pytest

from agentctl.serving.bench.traces import (
    TraceFormatError,
    detect_format,
    read_mooncake,
    read_weka,
)

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "traces"
CONV = FIX / "mooncake_conversation_head1500.jsonl"
SYN = FIX / "mooncake_synthetic_head400.jsonl"
WEKA = FIX / "weka_cc_sample6.jsonl.xz"


def test_mooncake_rows_counts_and_fields() -> None:
    rows = list(read_mooncake(CONV))
    assert len(rows) == 1500
    first = rows[0]
    assert (first.line_no, first.timestamp_ms, first.input_length, first.output_length) == (
        1,
        0.0,
        6758,
        500,
    )
    assert first.hash_ids == tuple(range(14))
    assert len(list(read_mooncake(SYN))) == 400
    assert len(list(read_mooncake(CONV, limit=7))) == 7
    # timestamps are an open-loop schedule: non-decreasing
    ts = [r.timestamp_ms for r in rows]
    assert ts == sorted(ts)


@pytest.mark.parametrize("path", [CONV, SYN])
def test_mooncake_last_block_is_partial_property(path: Path) -> None:
    """The research note's trace property: the last 512-token id covers a (maybe) partial block."""
    for r in read_mooncake(path):
        assert (len(r.hash_ids) - 1) * 512 < r.input_length <= len(r.hash_ids) * 512


def test_weka_conversations_requests_and_subagents() -> None:
    convs = list(read_weka(WEKA))
    assert [c.conv_id for c in convs] == [
        "trace_0291",
        "trace_0277",
        "trace_0086",
        "trace_0019",
        "trace_0228",
        "trace_0624",
    ]
    by_id = {c.conv_id: c for c in convs}
    assert all(c.block_size == 64 and c.hash_id_scope == "local" for c in convs)
    c291 = by_id["trace_0291"]
    assert len(c291.requests) == 20
    assert [s.agent_id for s in c291.subagents] == ["agent_001", "agent_002"]
    assert [s.after for s in c291.subagents] == [16, 16]  # both after the parent's 16th call
    assert [len(s.requests) for s in c291.subagents] == [5, 7]
    assert c291.subagents[0].t == pytest.approx(1148.013)
    c277 = by_id["trace_0277"]
    assert len(c277.subagents) == 4 and [s.after for s in c277.subagents] == [1, 1, 1, 7]
    assert sum(c.num_requests() for c in convs) == 178
    # streaming type "s" requests have no api_time sometimes: None, not a crash
    assert any(r.api_time is None for r in by_id["trace_0086"].requests)
    for c in convs:
        subs = [r for s in c.subagents for r in s.requests]
        for r in (*c.requests, *subs):
            assert len(r.hash_ids) == r.input_tokens // 64  # full blocks only
            assert r.kind in ("n", "s") and r.think_time >= 0


def test_weka_selection_limit_skip_ids() -> None:
    assert [c.conv_id for c in read_weka(WEKA, limit=2)] == ["trace_0291", "trace_0277"]
    assert [c.conv_id for c in read_weka(WEKA, skip=4)] == ["trace_0228", "trace_0624"]
    assert [c.conv_id for c in read_weka(WEKA, ids={"trace_0019", "nope"})] == ["trace_0019"]


def test_detect_format() -> None:
    assert detect_format(CONV) == "mooncake"
    assert detect_format(WEKA) == "weka"


def _write(tmp_path: Path, name: str, lines: list[str]) -> Path:
    p = tmp_path / name
    p.write_text("\n".join(lines) + "\n")
    return p


def test_mooncake_malformed_line_names_its_number(tmp_path: Path) -> None:
    good = json.dumps({"timestamp": 0, "input_length": 10, "output_length": 1, "hash_ids": [1]})
    p = _write(tmp_path, "m.jsonl", [good, good, '{"timestamp": 5, "input_length": 3'])
    with pytest.raises(TraceFormatError, match=r"m\.jsonl: line 3: invalid JSON") as exc:
        list(read_mooncake(p))
    assert exc.value.line_no == 3
    p = _write(tmp_path, "m2.jsonl", [good, '{"timestamp": 1, "output_length": 1, "hash_ids": []}'])
    with pytest.raises(TraceFormatError, match="line 2: missing field 'input_length'"):
        list(read_mooncake(p))
    bad_ids = json.dumps({"timestamp": 0, "input_length": 1, "output_length": 1, "hash_ids": [1.5]})
    with pytest.raises(TraceFormatError, match="line 1: field 'hash_ids'"):
        list(read_mooncake(_write(tmp_path, "m3.jsonl", [bad_ids])))
    too_long = json.dumps(
        {"timestamp": 0, "input_length": 600, "output_length": 1, "hash_ids": [1]}
    )
    with pytest.raises(TraceFormatError, match="line 1: input_length 600 exceeds 1 blocks"):
        list(read_mooncake(_write(tmp_path, "m4.jsonl", [too_long])))


def test_weka_malformed_line_names_its_number_and_request(tmp_path: Path) -> None:
    ok = {"id": "a", "block_size": 64, "requests": [{"t": 0, "in": 64, "out": 1, "hash_ids": [1]}]}
    bad = {"id": "b", "requests": [ok["requests"][0], {"t": 3, "type": "n", "out": 2}]}
    p = tmp_path / "w.jsonl.xz"
    with lzma.open(p, "wt") as fh:
        fh.write(json.dumps(ok) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(TraceFormatError, match=r"line 2: requests\[1\]: missing field 'in'"):
        list(read_weka(p))
    # the first conversation streams out before the bad line is reached
    assert [c.conv_id for c in read_weka(p, limit=1)] == ["a"]
    p2 = _write(tmp_path, "w2.jsonl", [json.dumps(ok), "[1, 2]"])
    with pytest.raises(TraceFormatError, match="line 2: expected a JSON object"):
        list(read_weka(p2))


def test_weka_optional_fields(tmp_path: Path) -> None:
    """Type "s" without hash_ids is still a request of its length; think_time falls back to the
    recorded gap minus the previous call's server time."""
    conv = {
        "id": "c",
        "block_size": 64,
        "hash_id_scope": "global",
        "requests": [
            {"t": 0.0, "type": "s", "in": 300, "out": 5, "api_time": 2.0},
            {"t": 10.0, "type": "s", "in": 400, "out": 5},
        ],
    }
    (c,) = read_weka(_write(tmp_path, "w.jsonl", [json.dumps(conv)]))
    assert c.hash_id_scope == "global"
    assert [r.hash_ids for r in c.requests] == [(), ()]
    assert [r.input_tokens for r in c.requests] == [300, 400]
    assert [r.think_time for r in c.requests] == [0.0, 8.0]
