"""Tables and ratios for a set of `PolicyResult`s of one run (same workload, cluster and seed).

Ratios are "x better than the baseline": baseline / policy for latencies (2.0 = half the
latency), policy / baseline for hit rate and throughput. Only results of one `compare` call are
comparable; DEVELOPERS.md asks for ratios against round-robin run in the same process.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from agentctl.serving.bench.metrics import PolicyResult

BASELINE = "round-robin"


def _div(a: float, b: float) -> float:
    if b == 0 or math.isnan(a) or math.isnan(b):
        return math.nan
    return a / b


def ratios(result: PolicyResult, base: PolicyResult) -> dict[str, float]:
    """How much better `result` is than `base`, metric by metric (see module docstring)."""
    return {
        "ttft_p50": _div(base.ttft_ms.p50, result.ttft_ms.p50),
        "ttft_p90": _div(base.ttft_ms.p90, result.ttft_ms.p90),
        "ttft_p99": _div(base.ttft_ms.p99, result.ttft_ms.p99),
        "e2e_p50": _div(base.e2e_ms_p50, result.e2e_ms_p50),
        "itl_p50": _div(base.itl_ms_p50, result.itl_ms_p50),
        "hit_rate": _div(result.hit_rate, base.hit_rate),
        "throughput": _div(result.throughput_tok_s, base.throughput_tok_s),
    }


def ratios_vs(
    results: Sequence[PolicyResult], baseline: str = BASELINE
) -> dict[str, dict[str, float]]:
    """Per policy, its ratios against `baseline` (empty when the baseline did not run)."""
    base = next((r for r in results if r.policy == baseline), None)
    if base is None:
        return {}
    return {r.policy: ratios(r, base) for r in results}


def to_json(results: Sequence[PolicyResult], baseline: str = BASELINE) -> dict[str, object]:
    """The `--json` envelope body: per policy its fields plus ratios against the baseline."""
    rat = ratios_vs(results, baseline)
    return {
        "baseline": baseline,
        "policies": [{**r.to_json(), f"vs_{baseline}": rat.get(r.policy, {})} for r in results],
    }


def _fmt(x: float, digits: int = 1) -> str:
    if math.isnan(x):
        return "-"
    if abs(x) >= 100_000:
        return f"{x:.3g}"
    return f"{x:,.{digits}f}"


def format_table(results: Sequence[PolicyResult], baseline: str = BASELINE) -> str:
    """A fixed-width table, one row per policy, with ratios against the baseline."""
    rat = ratios_vs(results, baseline)
    head = (
        "policy",
        "done",
        "rej",
        "hit%",
        "oracle%",
        "capt%",
        "ttft p50",
        "p90",
        "p99",
        "itl p50",
        "e2e p50",
        "tok/s",
        "imbal",
        "x p50",
        "x p99",
    )
    rows: list[tuple[str, ...]] = [head]
    for r in results:
        x = rat.get(r.policy, {})
        rows.append(
            (
                r.policy,
                str(r.completed),
                str(r.rejected),
                _fmt(100 * r.hit_rate),
                _fmt(100 * r.oracle_hit_rate),
                _fmt(100 * r.captured),
                _fmt(r.ttft_ms.p50),
                _fmt(r.ttft_ms.p90),
                _fmt(r.ttft_ms.p99),
                _fmt(r.itl_ms_p50, 2),
                _fmt(r.e2e_ms_p50),
                _fmt(r.throughput_tok_s),
                _fmt(r.imbalance, 2),
                _fmt(x.get("ttft_p50", math.nan), 2),
                _fmt(x.get("ttft_p99", math.nan), 2),
            )
        )
    widths = [max(len(row[c]) for row in rows) for c in range(len(head))]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            v.rjust(w) for v, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("  ".join(cells))
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append(f"latencies in ms; 'x p50'/'x p99': TTFT {baseline} / policy (higher is better)")
    return "\n".join(lines)
