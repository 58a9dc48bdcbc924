"""A replay over time: fixed windows of trace time, per worker and fleet-wide. Pure functions.

The per-policy summary says *how much* a policy hit the cache over a whole run; the timeline
says *when*: a KV-aware router warms up and then keeps hitting, round-robin keeps missing on
every worker it has not yet sent a conversation to. Definitions:

- a completed request belongs to the window that holds its **first token** (the moment its TTFT
  and its cache hit are known, as a metrics scrape would see them); rejected and unfinished
  requests are not counted, as in the summary;
- the windows are `window_s` long, aligned to multiples of it, from the first arrival to the
  last first token, in trace seconds (the virtual clock in sim mode; wall time divided by the
  time scale in live mode). `window_s` is a 1-2-5 step (round numbers on the axis) giving
  about `PER_WINDOW` requests to a window but at least `MIN_WINDOWS` windows (so that a small
  run is a line, not a few dots, and a big one not mostly gaps) and at most `max_windows`;
- per window `hit_rate` is token-weighted: the records' cached prompt tokens over their prompt
  tokens (the per-request figure the engine reports, `usage.prompt_tokens_details.cached_tokens`;
  the summary's `hit_rate` comes from the engines' counters, which differ only for requests
  preempted before their first token); None for a window without requests;
- `ttft_ms_p50` / `ttft_ms_p90` are nearest-rank percentiles (`metrics.percentile`) of the
  window's requests, in trace milliseconds; None for a window without requests.

Bounded: at most `max_windows` windows and `max_workers` per-worker lines (the busiest, in
their given order; `workers_omitted` counts the rest); the fleet line always covers everyone.
Deterministic: the same records give the same timeline.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from agentctl.serving.bench.metrics import RequestRecord, percentile

MAX_WINDOWS = 30
MAX_WORKERS = 16
#: a window should hold about this many requests (fleet-wide) before the run gets more windows
PER_WINDOW = 5
#: the fewest windows a run with requests gets
MIN_WINDOWS = 8


@dataclass(frozen=True)
class Line:
    """One line over the windows (a worker's or the fleet's), one value per window."""

    requests: tuple[int, ...]
    prompt_tokens: tuple[int, ...]
    cached_tokens: tuple[int, ...]
    hit_rate: tuple[float | None, ...]
    ttft_ms_p50: tuple[float | None, ...]
    ttft_ms_p90: tuple[float | None, ...]

    def to_json(self) -> dict[str, list[int] | list[float | None]]:
        return {
            "requests": list(self.requests),
            "prompt_tokens": list(self.prompt_tokens),
            "cached_tokens": list(self.cached_tokens),
            "hit_rate": list(self.hit_rate),
            "ttft_ms_p50": list(self.ttft_ms_p50),
            "ttft_ms_p90": list(self.ttft_ms_p90),
        }


@dataclass(frozen=True)
class Timeline:
    """A run in windows: window i covers trace seconds [t0_s + i * window_s, + window_s)."""

    t0_s: float
    window_s: float
    fleet: Line
    workers: dict[str, Line]
    workers_omitted: int = 0

    @property
    def windows(self) -> int:
        return len(self.fleet.requests)

    def to_json(self) -> dict[str, object]:
        return {
            "basis": "first token",
            "t0_s": self.t0_s,
            "window_s": self.window_s,
            "windows": self.windows,
            "fleet": self.fleet.to_json(),
            "workers": {w: line.to_json() for w, line in self.workers.items()},
            "workers_omitted": self.workers_omitted,
        }


def window_length(span_s: float, windows: int) -> float:
    """The largest 1-2-5 step (…, 0.5, 1, 2, 5, 10, …) that cuts `span_s` into at least
    `windows` windows (round numbers on the axis; at most 2.5x as many windows)."""
    if not span_s > 0 or windows < 1:
        return 1.0
    raw = span_s / windows
    mag = 10.0 ** math.floor(math.log10(raw))
    for m in (5.0, 2.0, 1.0):
        if m * mag <= raw * (1 + 1e-12):
            return m * mag
    return mag  # pragma: no cover (mag <= raw always)


def _next_step(width: float) -> float:
    """The 1-2-5 step after `width`."""
    mag = 10.0 ** math.floor(math.log10(width) + 1e-12)
    for m in (1.0, 2.0, 5.0, 10.0):
        if m * mag > width * (1 + 1e-12):
            return m * mag
    return 10.0 * mag  # pragma: no cover


def _line(groups: Sequence[list[RequestRecord]]) -> Line:
    req, prompt, cached, rate, p50, p90 = [], [], [], [], [], []
    for recs in groups:
        p = sum(r.prompt_tokens for r in recs)
        c = sum(r.cached_tokens for r in recs)
        ttft = [
            1000.0 * (r.first_token_s - r.arrival_s) for r in recs if r.first_token_s is not None
        ]
        req.append(len(recs))
        prompt.append(p)
        cached.append(c)
        rate.append(c / p if p else None)
        p50.append(percentile(ttft, 50) if ttft else None)
        p90.append(percentile(ttft, 90) if ttft else None)
    return Line(tuple(req), tuple(prompt), tuple(cached), tuple(rate), tuple(p50), tuple(p90))


def build_timeline(
    records: Iterable[RequestRecord],
    *,
    workers: Sequence[str] = (),
    max_windows: int = MAX_WINDOWS,
    max_workers: int = MAX_WORKERS,
) -> Timeline:
    """The timeline of one run's records (definitions in the module doc). `workers` names every
    worker of the cluster in display order, so that an idle one still gets a (zero) line;
    a worker seen only in the records is added after them, sorted."""
    if max_windows < 1 or max_workers < 0:
        raise ValueError("max_windows must be >= 1 and max_workers >= 0")
    done = [r for r in records if r.completed and r.first_token_s is not None]
    names = list(dict.fromkeys(workers))
    names += sorted({r.worker for r in done if r.worker is not None} - set(names))
    if not done:
        empty = _line([])
        return Timeline(0.0, 1.0, empty, dict.fromkeys(names[:max_workers], empty),
                        max(0, len(names) - max_workers))  # fmt: skip
    start = min(r.arrival_s for r in done)
    end = max(r.first_token_s or 0.0 for r in done)
    count = min(max_windows, max(MIN_WINDOWS, math.ceil(len(done) / PER_WINDOW)))
    width = window_length(end - start, count)
    while True:  # aligning t0 down can add a window: then the next step up
        t0 = math.floor(start / width) * width
        n = math.floor((end - t0) / width) + 1
        if n <= max_windows:
            break
        width = _next_step(width)

    def slot(r: RequestRecord) -> int:
        return min(n - 1, max(0, math.floor(((r.first_token_s or 0.0) - t0) / width)))

    fleet: list[list[RequestRecord]] = [[] for _ in range(n)]
    per: dict[str, list[list[RequestRecord]]] = {w: [[] for _ in range(n)] for w in names}
    for r in done:
        i = slot(r)
        fleet[i].append(r)
        if r.worker is not None:
            per[r.worker][i].append(r)
    busy = sorted(names, key=lambda w: -sum(len(g) for g in per[w]))[:max_workers]
    kept = [w for w in names if w in set(busy)]
    return Timeline(
        t0_s=t0,
        window_s=width,
        fleet=_line(fleet),
        workers={w: _line(per[w]) for w in kept},
        workers_omitted=len(names) - len(kept),
    )
