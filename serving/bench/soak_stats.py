"""The soak suite's pure parts: how a stream ended, counts per outcome, histogram quantiles.

Kept apart from the I/O (`soak.py`) so the rules that decide pass or fail are unit-tested
without a cluster: a stream the router starts must end with `data: [DONE]` or an error event;
one that ends with neither is *truncated*, which the issue counts separately from a *failure*
(an HTTP error status or an error event). A 429/503 carrying `Retry-After` is load *shed* on
purpose, counted apart from both.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from prometheus_client.parser import text_string_to_metric_families

from agentctl.serving.bench.metrics import percentile
from agentctl.serving.bench.prom import Histogram, parse_histogram

__all__ = [
    "MIGRATED_HEADER",
    "Outcome",
    "OutcomeCounts",
    "StreamResult",
    "classify_http",
    "classify_sse",
    "has_content",
    "histogram_buckets",
    "histogram_delta",
    "histogram_quantile",
    "metric_value",
    "migrated_count",
    "percentile",
]

#: response header a migrating router sets to the number of times it moved the stream
MIGRATED_HEADER = "x-agentctl-migrated"


class Outcome(StrEnum):
    OK = "ok"
    FAILED = "failed"
    TRUNCATED = "truncated"
    SHED = "shed"


@dataclass(slots=True)
class StreamResult:
    """What one client request saw. `ttft_s` is from sending to the first content chunk."""

    outcome: Outcome
    reason: str = ""
    status: int | None = None
    ttft_s: float | None = None
    migrated: int = 0
    worker: str | None = None


def classify_http(status: int, headers: Mapping[str, str]) -> tuple[Outcome, str] | None:
    """The outcome decided by the status line alone, or None for a 200 (read the stream).

    `headers` must be case-insensitive (httpx's are) or have lower-case keys."""
    if status == 200:
        return None
    if status in (429, 503) and headers.get("retry-after") is not None:
        return Outcome.SHED, f"HTTP {status} Retry-After {headers.get('retry-after')}"
    return Outcome.FAILED, f"HTTP {status}"


def classify_sse(data_lines: Iterable[str]) -> tuple[Outcome, str]:
    """How a 200 stream ended, from its `data:` payloads in order (without the `data: `
    prefix). An error event fails the stream even when `[DONE]` follows it (the router and
    the workers send both); `[DONE]` without an error is ok; neither is truncated."""
    for data in data_lines:
        if data == "[DONE]":
            return Outcome.OK, ""
        if '"error"' in data:
            try:
                obj = json.loads(data)
            except ValueError:
                continue
            if isinstance(obj, dict) and "error" in obj:
                err = obj["error"]
                msg = err.get("message") if isinstance(err, dict) else err
                return Outcome.FAILED, "error event: " + str(msg)[:160]
    return Outcome.TRUNCATED, "ended without [DONE] or an error event"


def has_content(data: str) -> bool:
    """Whether an SSE payload carries generated text (a chat delta's `content` or a
    completion's `text`, non-empty): the first such chunk is the time to first token."""
    if '"content"' not in data and '"text"' not in data:
        return False
    try:
        obj = json.loads(data)
        choice = obj["choices"][0]
    except (ValueError, KeyError, IndexError, TypeError):
        return False
    if not isinstance(choice, dict):
        return False
    delta = choice.get("delta")
    text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
    return isinstance(text, str) and text != ""


def migrated_count(headers: Mapping[str, str]) -> int:
    """The router's `X-Agentctl-Migrated` header as an int (0 when absent or malformed)."""
    raw = headers.get(MIGRATED_HEADER)
    try:
        return max(0, int(raw)) if raw is not None else 0
    except ValueError:
        return 0


@dataclass
class OutcomeCounts:
    """Counts per outcome over a set of results, plus the commonest reasons."""

    ok: int = 0
    failed: int = 0
    truncated: int = 0
    shed: int = 0
    migrated: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.ok + self.failed + self.truncated + self.shed

    @classmethod
    def of(cls, results: Iterable[StreamResult], top_reasons: int = 5) -> OutcomeCounts:
        c = cls()
        reasons: Counter[str] = Counter()
        for r in results:
            setattr(c, r.outcome.value, getattr(c, r.outcome.value) + 1)
            if r.migrated > 0:
                c.migrated += 1
            if r.outcome is not Outcome.OK and r.reason:
                reasons[r.reason] += 1
        c.reasons = dict(reasons.most_common(top_reasons))
        return c

    def to_json(self) -> dict[str, object]:
        return {
            "total": self.total,
            "ok": self.ok,
            "failed": self.failed,
            "truncated": self.truncated,
            "shed": self.shed,
            "migrated": self.migrated,
            "reasons": self.reasons,
        }


# ---- Prometheus text ------------------------------------------------------------------------


def metric_value(text: str, name: str, labels: Mapping[str, str] | None = None) -> float | None:
    """The sum of the samples of counter/gauge `name` (matching `labels`) in exposition
    `text`; None when no sample has that name (the metric does not exist yet)."""
    total: float | None = None
    want = dict(labels or {})
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name not in (name, name + "_total") and fam.name != name:
                continue
            if s.name.endswith(("_created", "_bucket", "_count", "_sum")):
                continue
            if all(s.labels.get(k) == v for k, v in want.items()):
                total = (total or 0.0) + float(s.value)
    return total


def histogram_buckets(text: str, name: str) -> dict[float, float]:
    """Cumulative bucket counts `{upper bound: count}` of histogram `name` in `text`, summed
    over every label set (e.g. all workers' scrapes concatenated); `prom.parse_histogram`."""
    return dict(parse_histogram(text, name).buckets)


def histogram_delta(
    after: Mapping[float, float], before: Mapping[float, float]
) -> dict[float, float]:
    """The observations made between two scrapes of one cumulative histogram."""
    return {le: after[le] - before.get(le, 0.0) for le in after}


def histogram_quantile(buckets: Mapping[float, float], q: float) -> float:
    """Prometheus's `histogram_quantile` over `{upper bound: cumulative count}`, the one
    implementation in `prom.Histogram.quantile`."""
    return Histogram(tuple(sorted(buckets.items()))).quantile(q)
