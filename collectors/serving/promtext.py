"""The Prometheus text exposition format, parsed into typed samples, and the arithmetic a
collector needs on it: counter deltas with reset detection, histogram bucket deltas, and
`histogram_quantile` exactly as PromQL computes it.

Parsing is `prometheus_client.parser.text_string_to_metric_families` (no hand-written parser);
this module only types its output. Everything here is pure: no I/O, no clocks.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

__all__ = [
    "Exposition",
    "Histogram",
    "MetricFamily",
    "PromTextError",
    "Sample",
    "counter_delta",
    "histogram_delta",
    "histogram_quantile",
    "parse",
]

Labels = tuple[tuple[str, str], ...]


class PromTextError(ValueError):
    """Text that is not valid Prometheus exposition format."""


@dataclass(frozen=True)
class Sample:
    """One line: the full sample name (`..._total`, `..._bucket`, ...), labels, value."""

    name: str
    labels: Labels
    value: float

    def label(self, key: str) -> str | None:
        return dict(self.labels).get(key)

    def matches(self, selector: Mapping[str, str]) -> bool:
        have = dict(self.labels)
        return all(have.get(k) == v for k, v in selector.items())


@dataclass(frozen=True)
class MetricFamily:
    """A family as the parser names it (a counter's family drops `_total`)."""

    name: str
    type: str
    help: str
    samples: tuple[Sample, ...]


@dataclass(frozen=True)
class Histogram:
    """Cumulative buckets `(upper bound, count)` sorted by bound (the last is +Inf in a
    well-formed histogram), plus the `_count` and `_sum` series."""

    buckets: tuple[tuple[float, float], ...]
    count: float
    sum: float


class Exposition:
    """One scrape's families, with lookups by sample name summed over matching label sets."""

    def __init__(self, families: Iterable[MetricFamily]) -> None:
        self.families: dict[str, MetricFamily] = {f.name: f for f in families}
        self._by_sample: dict[str, list[Sample]] = {}
        for fam in self.families.values():
            for s in fam.samples:
                self._by_sample.setdefault(s.name, []).append(s)

    def samples(self, name: str, selector: Mapping[str, str] | None = None) -> list[Sample]:
        """Samples with this exact sample name whose labels include `selector`."""
        return [s for s in self._by_sample.get(name, ()) if s.matches(selector or {})]

    def value(self, name: str, selector: Mapping[str, str] | None = None) -> float | None:
        """The sum over matching series, or None when no series matches."""
        found = self.samples(name, selector)
        return math.fsum(s.value for s in found) if found else None

    def histogram(self, name: str, selector: Mapping[str, str] | None = None) -> Histogram | None:
        """Family `name`'s histogram, buckets summed over matching series (as PromQL's
        `sum by (le)`), or None when it has no matching `_bucket` series."""
        per_le: dict[float, float] = {}
        for s in self.samples(name + "_bucket", selector):
            le = s.label("le")
            if le is None:
                continue
            bound = float(le)
            per_le[bound] = per_le.get(bound, 0.0) + s.value
        if not per_le:
            return None
        return Histogram(
            buckets=tuple(sorted(per_le.items())),
            count=self.value(name + "_count", selector) or 0.0,
            sum=self.value(name + "_sum", selector) or 0.0,
        )


def parse(text: str) -> Exposition:
    """Parse exposition text; raises `PromTextError` on malformed input."""
    try:
        families = [
            MetricFamily(
                name=fam.name,
                type=fam.type,
                help=fam.documentation,
                samples=tuple(
                    Sample(s.name, tuple(sorted(s.labels.items())), float(s.value))
                    for s in fam.samples
                ),
            )
            for fam in text_string_to_metric_families(text)
        ]
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise PromTextError(f"not Prometheus text format: {exc}") from exc
    return Exposition(families)


def counter_delta(previous: float | None, current: float) -> float:
    """The increase of a counter between two scrapes. A counter that went down was reset (the
    process restarted): the increase since the reset is the new value. No previous scrape:
    everything since the process started."""
    if previous is None or current < previous:
        return current
    return current - previous


def histogram_delta(previous: Histogram | None, current: Histogram) -> Histogram:
    """The observations between two scrapes, bucket by bucket. A reset (the count or any
    bucket went down, or the bucket layout changed) gives the current histogram whole."""
    if previous is None or _histogram_reset(previous, current):
        return current
    return Histogram(
        buckets=tuple(
            (bound, now - before)
            for (bound, now), (_, before) in zip(current.buckets, previous.buckets, strict=True)
        ),
        count=current.count - previous.count,
        sum=current.sum - previous.sum,
    )


def _histogram_reset(previous: Histogram, current: Histogram) -> bool:
    if current.count < previous.count:
        return True
    if [b for b, _ in previous.buckets] != [b for b, _ in current.buckets]:
        return True
    pairs = zip(current.buckets, previous.buckets, strict=True)
    return any(now < before for (_, now), (_, before) in pairs)


def histogram_quantile(buckets: Sequence[tuple[float, float]], q: float) -> float:
    """PromQL's `histogram_quantile(q, ...)` over classic cumulative buckets
    `(upper bound, count)`, as Prometheus's `bucketQuantile` computes it:

    NaN for q NaN, fewer than two buckets, no +Inf bucket or no observations; -Inf for q < 0,
    +Inf for q > 1. Buckets are sorted, equal bounds merged, counts forced monotonic. The
    rank `q * total` falls in the first bucket whose count reaches it, and the result is
    interpolated linearly inside that bucket (the first bucket starts at 0, unless its bound is
    <= 0, which is then returned); a rank in the +Inf bucket returns the highest finite bound.
    """
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    merged: list[list[float]] = []
    for bound, count in sorted(buckets, key=lambda b: b[0]):
        if merged and merged[-1][0] == bound:
            merged[-1][1] += count
        else:
            merged.append([bound, count])
    if not merged or not math.isinf(merged[-1][0]) or merged[-1][0] < 0:
        return math.nan
    highest = merged[0][1]
    for bucket in merged[1:]:  # ensureMonotonic
        if bucket[1] < highest:
            bucket[1] = highest
        else:
            highest = bucket[1]
    if len(merged) < 2:
        return math.nan
    observations = merged[-1][1]
    if observations == 0 or math.isnan(observations):
        return math.nan
    rank = q * observations
    # sort.Search over all but the +Inf bucket: the first bucket whose count reaches the rank
    b = next((i for i in range(len(merged) - 1) if merged[i][1] >= rank), len(merged) - 1)
    if b == len(merged) - 1:
        return merged[-2][0]
    if b == 0 and merged[0][0] <= 0:
        return merged[0][0]
    bucket_start = 0.0
    bucket_end, count = merged[b]
    if b > 0:
        bucket_start = merged[b - 1][0]
        count -= merged[b - 1][1]
        rank -= merged[b - 1][1]
    if count == 0:  # only with rank 0 (q = 0, empty first bucket): Go's 0/0 is NaN
        return math.nan
    return bucket_start + (bucket_end - bucket_start) * (rank / count)
