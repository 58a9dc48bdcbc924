"""Filtering and sorting of fleet rows, kept apart from the widgets so the rules are plain
functions: `/` text matches name, roles or health; `s` picks the next sort column.

A missing value (never sampled, never checked) always sorts last, whatever the direction:
reversing the order must not bring the nodes with no data to the top.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import cast

from agentctl.dashboard.readmodel import NodeRow

#: worst first, so ascending "health" puts failing nodes on top
HEALTH_RANK = {"fail": 0, "warn": 1, "skip": 2, "pass": 3}


@dataclass(frozen=True)
class SortKey:
    column: str  # the fleet table's column key
    label: str
    value: Callable[[NodeRow], float | str | None]
    descending: bool  # the natural direction: busiest, hottest, most alerts first


SORT_KEYS: tuple[SortKey, ...] = (
    SortKey("node", "name", lambda r: r.name, False),
    SortKey("health", "health", lambda r: HEALTH_RANK.get(r.health or ""), False),
    SortKey("util", "utilisation", lambda r: r.util_pct, True),
    SortKey("mem", "memory", lambda r: r.mem_used_pct, True),
    SortKey("temp", "temperature", lambda r: r.temp_c, True),
    SortKey("power", "power", lambda r: r.power_w, True),
    SortKey("kv", "KV hit rate", lambda r: r.kv_hit_rate, False),
    SortKey("ttft99", "TTFT p99", lambda r: r.ttft_p99_s, True),
    SortKey("alerts", "alerts", lambda r: r.open_alerts, True),
    SortKey("cpu", "host CPU", lambda r: r.cpu_pct, True),
)


def matches(row: NodeRow, text: str) -> bool:
    """Case-insensitive substring of the name, a role or the health verdict."""
    needle = text.strip().lower()
    if not needle:
        return True
    hay = [row.name, *row.roles, row.health or "unknown"]
    return any(needle in h.lower() for h in hay)


def order(rows: Iterable[NodeRow], key: SortKey, reverse: bool = False) -> list[NodeRow]:
    """Rows by `key` in its natural direction (flipped by `reverse`), name breaking ties,
    rows without a value last."""
    by_name = sorted(rows, key=lambda r: r.name)
    known = [r for r in by_name if key.value(r) is not None]
    unknown = [r for r in by_name if key.value(r) is None]
    known.sort(key=lambda r: cast(float | str, key.value(r)), reverse=key.descending != reverse)
    return known + unknown
