"""What `bench live` reads from the workers' `/metrics`: prefix-cache counters and the TTFT
histogram, under vLLM's names, so the same code would read real vLLM engines.

Pure: text in, numbers out (the exposition is parsed by `prometheus_client`'s own parser).
A benchmark takes one sample before the client starts and one after it ends and uses the
difference (`EngineSample.minus`), so anything sent before (a router's start-up probe) does not
count. Quantiles follow Prometheus's `histogram_quantile`: linear inside the bucket that holds
the rank, so a figure is only as fine as the buckets around it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

__all__ = ["EngineSample", "Histogram", "parse_engine_metrics"]

HITS = "vllm:prefix_cache_hits"
QUERIES = "vllm:prefix_cache_queries"
TTFT = "vllm:time_to_first_token_seconds"


@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts by upper bound (`le`), ascending, the last one `+Inf`."""

    buckets: tuple[tuple[float, float], ...] = ()

    @property
    def count(self) -> float:
        return self.buckets[-1][1] if self.buckets else 0.0

    def plus(self, other: Histogram) -> Histogram:
        if not self.buckets:
            return other
        if not other.buckets:
            return self
        mine, theirs = dict(self.buckets), dict(other.buckets)
        if mine.keys() != theirs.keys():
            raise ValueError("histograms with different buckets cannot be added")
        return Histogram(tuple((le, mine[le] + theirs[le]) for le in sorted(mine)))

    def minus(self, earlier: Histogram) -> Histogram:
        if not earlier.buckets:
            return self
        before = dict(earlier.buckets)
        return Histogram(tuple((le, c - before.get(le, 0.0)) for le, c in self.buckets))

    def quantile(self, q: float) -> float:
        """`histogram_quantile(q, ...)`; NaN when empty. A rank in the `+Inf` bucket gives the
        highest finite bound, as Prometheus does."""
        if not 0.0 <= q <= 1.0:
            raise ValueError("q must be in [0, 1]")
        total = self.count
        if total <= 0:
            return math.nan
        rank = q * total
        lower, below = 0.0, 0.0
        for le, cumulative in self.buckets:
            if cumulative >= rank:
                if math.isinf(le):
                    return lower
                in_bucket = cumulative - below
                if in_bucket <= 0:
                    return le
                return lower + (le - lower) * (rank - below) / in_bucket
            lower, below = le, cumulative
        return lower


@dataclass(frozen=True)
class EngineSample:
    """One scrape of one or more engines (summed): token counters and the TTFT histogram."""

    prefix_cache_hits: float = 0.0
    prefix_cache_queries: float = 0.0
    ttft: Histogram = Histogram()

    @property
    def hit_rate(self) -> float:
        """Cached prompt tokens over prompt tokens queried; NaN before any query."""
        if self.prefix_cache_queries <= 0:
            return math.nan
        return self.prefix_cache_hits / self.prefix_cache_queries

    def plus(self, other: EngineSample) -> EngineSample:
        return EngineSample(
            self.prefix_cache_hits + other.prefix_cache_hits,
            self.prefix_cache_queries + other.prefix_cache_queries,
            self.ttft.plus(other.ttft),
        )

    def minus(self, earlier: EngineSample) -> EngineSample:
        return EngineSample(
            self.prefix_cache_hits - earlier.prefix_cache_hits,
            self.prefix_cache_queries - earlier.prefix_cache_queries,
            self.ttft.minus(earlier.ttft),
        )

    @staticmethod
    def total(samples: Iterable[EngineSample]) -> EngineSample:
        out = EngineSample()
        for s in samples:
            out = out.plus(s)
        return out


def parse_engine_metrics(text: str) -> EngineSample:
    """The prefix-cache counters and TTFT histogram of a Prometheus text exposition, summed over
    label sets (one engine, or several behind one endpoint). Missing metrics count as zero.
    Raises `ValueError` for text that is not an exposition."""
    hits = queries = 0.0
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == HITS:
            hits += sum(s.value for s in family.samples if s.name == HITS + "_total")
        elif family.name == QUERIES:
            queries += sum(s.value for s in family.samples if s.name == QUERIES + "_total")
        elif family.name == TTFT:
            for s in family.samples:
                if s.name == TTFT + "_bucket":
                    le = float(s.labels["le"])
                    buckets[le] = buckets.get(le, 0.0) + s.value
    return EngineSample(hits, queries, Histogram(tuple(sorted(buckets.items()))))


def parse_histogram(text: str, name: str) -> Histogram:
    """Histogram `name` of a Prometheus text exposition, summed over label sets (empty when
    it is absent)."""
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for s in family.samples:
            if s.name == name + "_bucket":
                le = float(s.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + s.value
    return Histogram(tuple(sorted(buckets.items())))
