"""Replay results: per-request records in, the issue's result fields out. Pure functions.

Definitions (fixed here so that every policy, mode and run is scored the same way):

- percentiles use the **nearest-rank** method: the p-th percentile of n sorted values is the value
  at 1-based rank `ceil(p/100 * n)` (rank 1 for p = 0). It is always an observed value, has no
  interpolation choices, and p100 is the maximum.
- `hit_rate` is token-weighted and measured by the engines: prompt tokens found cached at a
  request's first admission over prompt tokens admitted (vLLM's `prefix_cache_hits /
  prefix_cache_queries`; a re-admission after preemption finds its own blocks and is not
  counted). Without engine counters, the records' `cached_tokens` over completed requests.
- `oracle_hit_rate` is the hit rate of one infinite cache that sees every issued request in arrival
  order, prefix match on the engine's block hashes (`OracleCache`), capped like the engine's at
  prompt - 1 tokens; no router, worker count or capacity can beat it, because a hit anywhere
  means the block was seen before.
- `ttft_ms` is first token time minus arrival (router receive) time; `e2e_ms` is finish minus
  arrival; `itl_ms` is, per request with at least two output tokens, (finish - first token) /
  (output tokens - 1), and the reported p50 is over requests.
- `throughput_tok_s` is output tokens of completed requests over the span from the first arrival to
  the last finish.
- `timeline` is the run in windows of trace time, per worker and fleet-wide (requests, hit rate
  from the records, TTFT p50/p90): `timeline.py` defines it.
- per-worker prefill tokens are the tokens each worker actually computed (the engine's counter,
  recomputation after preemption included; else prompt - cached from the records);
  `imbalance` is their max over their mean across all workers (1.0 = perfectly even).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import TYPE_CHECKING

from agentctl.serving.types import BlockHash

if TYPE_CHECKING:  # timeline.py imports this module (percentile, RequestRecord)
    from agentctl.serving.bench.timeline import Timeline


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of `values` (need not be sorted); NaN for no values."""
    if not 0.0 <= p <= 100.0:
        raise ValueError(f"percentile must be within [0, 100], got {p}")
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100.0 * len(ordered)))
    return float(ordered[rank - 1])


@dataclass(slots=True)
class RequestRecord:
    """What happened to one request; filled in by the simulator (or the live driver) as it goes."""

    request_id: str
    arrival_s: float
    prompt_tokens: int
    #: output tokens asked for (the simulated engine generates exactly this many)
    output_tokens: int
    session_id: str | None = None
    worker: str | None = None
    #: prompt tokens the engine found cached when it admitted the request
    cached_tokens: int = 0
    first_token_s: float | None = None
    finish_s: float | None = None
    rejected: bool = False
    #: a short reason when rejected (e.g. the prompt cannot fit in any worker)
    reject_reason: str = ""

    @property
    def completed(self) -> bool:
        return not self.rejected and self.finish_s is not None


@dataclass(frozen=True, slots=True)
class LatencySummary:
    p50: float
    p90: float
    p99: float
    mean: float

    @staticmethod
    def of(values: Sequence[float]) -> LatencySummary:
        if not values:
            return LatencySummary(math.nan, math.nan, math.nan, math.nan)
        return LatencySummary(
            p50=percentile(values, 50),
            p90=percentile(values, 90),
            p99=percentile(values, 99),
            mean=math.fsum(values) / len(values),
        )


@dataclass(frozen=True, slots=True)
class WorkerTotals:
    """An engine's own counters at the end of a run (vLLM's prefix-cache metric names)."""

    #: prompt tokens looked up at first admission (vllm:prefix_cache_queries)
    prefix_cache_queries: int
    #: of those, tokens found cached (vllm:prefix_cache_hits)
    prefix_cache_hits: int
    #: tokens actually prefilled, recomputation after preemption included
    prefill_tokens: int
    preemptions: int = 0


@dataclass(frozen=True)
class PolicyResult:
    """The issue's per-policy result fields, plus a few diagnostics under `extra`."""

    policy: str
    workers: int
    completed: int
    rejected: int
    hit_rate: float
    oracle_hit_rate: float
    ttft_ms: LatencySummary
    itl_ms_p50: float
    e2e_ms_p50: float
    throughput_tok_s: float
    prefill_tokens: dict[str, int]
    imbalance: float
    #: virtual seconds from the first arrival to the last finish
    span_s: float
    prompt_tokens: int
    cached_tokens: int
    output_tokens: int
    extra: dict[str, float] = field(default_factory=dict)
    #: host seconds the run took (not part of equality: runs are otherwise deterministic)
    wall_s: float = field(default=0.0, compare=False)
    #: CPU seconds of this process during the run (a fairer speed figure on a shared host)
    cpu_s: float = field(default=0.0, compare=False)
    #: host-dependent measurements (bytes held by the index): reported, not compared
    measured: dict[str, float] = field(default_factory=dict, compare=False)
    #: the run in windows of trace time (`timeline.py`); deterministic like the rest
    timeline: Timeline | None = None
    #: the per-request records, when the caller asked to keep them (never in JSON)
    records: list[RequestRecord] = field(default_factory=list, compare=False, repr=False)

    @property
    def captured(self) -> float:
        """Share of the oracle's hit rate this policy captured."""
        return self.hit_rate / self.oracle_hit_rate if self.oracle_hit_rate > 0 else math.nan

    def to_json(self) -> dict[str, object]:
        """The issue's field names (`itl_ms.p50`, `e2e_ms.p50`), records left out."""
        out: dict[str, object] = {
            f.name: getattr(self, f.name) for f in fields(self) if f.name != "records"
        }
        out["ttft_ms"] = asdict(self.ttft_ms)
        out["itl_ms"] = {"p50": out.pop("itl_ms_p50")}
        out["e2e_ms"] = {"p50": out.pop("e2e_ms_p50")}
        out["prefill_tokens"] = dict(self.prefill_tokens)
        out["extra"] = dict(self.extra)
        out["measured"] = dict(self.measured)
        out["captured"] = self.captured
        out["timeline"] = self.timeline.to_json() if self.timeline is not None else None
        return out


def summarize(
    policy: str,
    records: Iterable[RequestRecord],
    *,
    workers: Sequence[str],
    oracle_hit_rate: float,
    totals: Mapping[str, WorkerTotals] | None = None,
    extra: Mapping[str, float] | None = None,
    wall_s: float = 0.0,
    cpu_s: float = 0.0,
    keep_records: bool = False,
    measured: Mapping[str, float] | None = None,
) -> PolicyResult:
    """Fold the records of one run into its `PolicyResult` (definitions in the module doc).

    With the engines' `totals`, the hit rate and per-worker prefill tokens are the engines' own
    counters: a request preempted mid-prefill and re-admitted then counts its first admission's
    hits only (its re-admission finds its own blocks cached), and recomputation counts as work.
    Without them both are derived from the records. The timeline always is."""
    from agentctl.serving.bench.timeline import build_timeline  # a cycle at module level

    done: list[RequestRecord] = []
    rejected = 0
    records = list(records)
    for rec in records:
        if rec.rejected:
            rejected += 1
        elif rec.completed:
            done.append(rec)
    prompt = sum(r.prompt_tokens for r in done)
    cached = sum(r.cached_tokens for r in done)
    out_tokens = sum(r.output_tokens for r in done)
    ttft = [1000.0 * (r.first_token_s - r.arrival_s) for r in done if r.first_token_s is not None]
    e2e = [1000.0 * (r.finish_s - r.arrival_s) for r in done if r.finish_s is not None]
    itl = [
        1000.0 * (r.finish_s - r.first_token_s) / (r.output_tokens - 1)
        for r in done
        if r.output_tokens > 1 and r.finish_s is not None and r.first_token_s is not None
    ]
    prefill = {w: 0 for w in workers}
    hit_rate = cached / prompt if prompt else 0.0
    if totals is not None:
        queries = sum(t.prefix_cache_queries for t in totals.values())
        hits = sum(t.prefix_cache_hits for t in totals.values())
        hit_rate = hits / queries if queries else 0.0
        for w, t in totals.items():
            prefill[w] = t.prefill_tokens
    else:
        for r in done:
            if r.worker is not None:
                prefill[r.worker] = prefill.get(r.worker, 0) + r.prompt_tokens - r.cached_tokens
    span = 0.0
    if done:
        span = max(r.finish_s or 0.0 for r in done) - min(r.arrival_s for r in done)
    return PolicyResult(
        policy=policy,
        workers=len(workers),
        completed=len(done),
        rejected=rejected,
        hit_rate=hit_rate,
        oracle_hit_rate=oracle_hit_rate,
        ttft_ms=LatencySummary.of(ttft),
        itl_ms_p50=percentile(itl, 50),
        e2e_ms_p50=percentile(e2e, 50),
        throughput_tok_s=out_tokens / span if span > 0 else 0.0,
        prefill_tokens=prefill,
        imbalance=imbalance(list(prefill.values())),
        span_s=span,
        prompt_tokens=prompt,
        cached_tokens=cached,
        output_tokens=out_tokens,
        extra=dict(extra or {}),
        wall_s=wall_s,
        cpu_s=cpu_s,
        measured=dict(measured or {}),
        timeline=build_timeline(records, workers=workers),
        records=records if keep_records else [],
    )


def imbalance(loads: Sequence[float]) -> float:
    """max / mean over all workers; 1.0 when perfectly even or when nothing was done at all."""
    if not loads:
        return 1.0
    mean = math.fsum(loads) / len(loads)
    return max(loads) / mean if mean > 0 else 1.0


class OracleCache:
    """One infinite prefix cache over chained block hashes: the upper bound on any hit rate.

    With chained hashes, block i being present implies blocks 0..i-1 are, so the hit length is
    found by binary search (O(log n) lookups instead of O(n)): that keeps the oracle cheap on the
    WEKA replay's ~94M blocks.

    By default a hit is capped at `prompt_tokens - 1`, as the engine caps it (at least one token
    is computed to produce logits, as in vLLM), so that with one worker and no eviction the
    engine's measured hit rate equals the oracle; `compute_last_token=False` gives the research
    note's cap at `prompt_tokens` (they differ only for fully cached, block-aligned prompts).
    """

    __slots__ = ("block_size", "hit_tokens", "prompt_tokens", "reserve", "seen")

    def __init__(self, block_size: int, *, compute_last_token: bool = True) -> None:
        self.block_size = block_size
        self.reserve = 1 if compute_last_token else 0
        self.seen: set[BlockHash] = set()
        self.hit_tokens = 0
        self.prompt_tokens = 0

    def observe(self, block_hashes: Sequence[BlockHash], prompt_tokens: int) -> int:
        """Account one arriving request; return its hit tokens, then remember its blocks."""
        seen = self.seen
        lo, hi = 0, len(block_hashes)  # invariant: first lo blocks hit; blocks >= hi miss
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if block_hashes[mid - 1] in seen:
                lo = mid
            else:
                hi = mid - 1
        hit = max(0, min(lo * self.block_size, prompt_tokens - self.reserve))
        if lo < len(block_hashes):
            seen.update(block_hashes[lo:])
        self.hit_tokens += hit
        self.prompt_tokens += prompt_tokens
        return hit

    @property
    def hit_rate(self) -> float:
        return self.hit_tokens / self.prompt_tokens if self.prompt_tokens else 0.0


def oracle_hit_rate(
    requests: Iterable[tuple[Sequence[BlockHash], int]],
    block_size: int,
    *,
    compute_last_token: bool = True,
) -> float:
    """Oracle hit rate of (block hashes, prompt tokens) pairs taken in the order given."""
    cache = OracleCache(block_size, compute_last_token=compute_last_token)
    for hashes, prompt in requests:
        cache.observe(hashes, prompt)
    return cache.hit_rate
