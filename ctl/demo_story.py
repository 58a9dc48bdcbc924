"""What `agentctl demo` stores and says so that its dashboards tell the story: the trace replay
as a stored comparison, collection passes spaced like a schedule, and the sentences that explain
the numbers. Pure helpers plus two small I/O functions; `ctl/cli/demo_run.py` calls them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from agentctl.collectors.store import Store
from agentctl.ctl.collect import Collector, HostCollection, store_task
from agentctl.ctl.connector import Connector
from agentctl.ctl.fanout import FanOut, Recap
from agentctl.ctl.inventory import Host

REPLAY_KIND = "serving_replay"  # dashboard/readmodel.py reads this kind
#: policy fields kept in the store (the bench's whole per-policy document, minus host noise)
_DROP = ("measured", "cpu_s", "wall_s")
#: the stored timeline's bounds (the bench caps it already; a stored document stays small
#: whatever produced it) and the per-window series it keeps
TIMELINE_WINDOWS = 40
TIMELINE_WORKERS = 16
_LINE_KEYS = ("requests", "prompt_tokens", "cached_tokens", "hit_rate", "ttft_ms_p50",
              "ttft_ms_p90")  # fmt: skip
#: the demo's replayed GPUs: the last worker node carries the recorded Xid, the others none
REPLAY_SETS = ("h100", "h100-xid48")


def replay_sets(workers: Sequence[str]) -> dict[str, str]:
    """Worker node -> replay set: every worker gets a replayed H100; the last one also the
    recorded kernel log with Xid 48 (an L1 failure and a critical event to look at)."""
    out = {name: REPLAY_SETS[0] for name in workers}
    if workers:
        out[workers[-1]] = REPLAY_SETS[1]
    return out


def replay_document(
    bench: Mapping[str, Any], *, trace: str, fleet_time_scale: float | None
) -> tuple[str, dict[str, Any]]:
    """(title, data) to store for a `bench replay --json` answer's `data`."""
    policies = [
        {k: v for k, v in p.items() if k not in _DROP}
        for p in bench.get("policies") or []
        if isinstance(p, Mapping)
    ]
    for p in policies:
        p["timeline"] = bounded_timeline(p.get("timeline"))
    scale = next(
        (
            p.get("extra", {}).get("time_scale")
            for p in policies
            if isinstance(p.get("extra"), dict)
        ),
        None,
    )
    names = " against ".join(str(p.get("policy")) for p in reversed(policies))
    title = f"Claude Code traces replayed live: {names}"
    data = {
        "trace": Path(trace).name,
        "mode": bench.get("mode", "live"),
        "workers": bench.get("workers"),
        "seed": bench.get("seed"),
        "time_scale": scale,
        "fleet_time_scale": fleet_time_scale,
        "policies": policies,
    }
    return title, data


def _line(raw: Any, windows: int) -> dict[str, list[float | None]] | None:
    if not isinstance(raw, Mapping):
        return None
    out: dict[str, list[float | None]] = {}
    for key in _LINE_KEYS:
        vals = raw.get(key)
        vals = vals[:windows] if isinstance(vals, list) else []
        out[key] = [_number(v) for v in vals] + [None] * (windows - len(vals))
    return out


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float) or v != v:
        return None
    return v if isinstance(v, int) else round(v, 4)


def bounded_timeline(raw: Any) -> dict[str, Any] | None:
    """A bench result's `timeline` as stored: at most `TIMELINE_WINDOWS` windows and
    `TIMELINE_WORKERS` workers, known series only, numbers rounded, None where it is missing
    or malformed (an older bench without one)."""
    if not isinstance(raw, Mapping) or not isinstance(raw.get("fleet"), Mapping):
        return None
    t0, width = raw.get("t0_s"), raw.get("window_s")
    if not isinstance(t0, int | float) or not isinstance(width, int | float) or width <= 0:
        return None
    fleet = raw["fleet"]
    n = min(TIMELINE_WINDOWS, len(fleet.get("requests") or []))
    got = raw.get("workers")
    workers = list(got.items()) if isinstance(got, Mapping) else []
    lines = {str(w): _line(v, n) for w, v in workers[:TIMELINE_WORKERS]}
    omitted = raw.get("workers_omitted")
    return {
        "basis": str(raw.get("basis") or "first token"),
        "t0_s": float(t0),
        "window_s": float(width),
        "windows": n,
        "fleet": _line(fleet, n),
        "workers": {w: line for w, line in lines.items() if line is not None},
        "workers_omitted": (int(omitted) if isinstance(omitted, int) else 0)
        + max(0, len(workers) - TIMELINE_WORKERS),
    }


def store_replay(
    store: Store, bench: Mapping[str, Any], *, trace: str, fleet_time_scale: float | None
) -> int:
    title, data = replay_document(bench, trace=trace, fleet_time_scale=fleet_time_scale)
    return store.save_bench(REPLAY_KIND, title=title, data=data)


def concentration(
    requests: Mapping[str, float], *, threshold: float = 0.75
) -> tuple[str, float, float] | None:
    """(busiest worker, its requests, all requests) when one worker got `threshold` or more
    of at least 4 requests over 2 or more workers; else None."""
    total = sum(requests.values())
    if len(requests) < 2 or total < 4:
        return None
    worker, top = max(requests.items(), key=lambda kv: kv[1])
    return (worker, top, total) if top / total >= threshold else None


CONCENTRATION_NOTE = (
    "{top:.0f} of {total:.0f} agent requests went to {worker}: the sessions share one system "
    "prompt, and at light load the KV-aware router keeps them where that prefix is cached "
    "(round-robin would prefill it on every worker)."
)


def collect_passes(
    connect: Callable[[Host], Connector],
    collector: Collector,
    store: Store,
    hosts: Sequence[Host],
    *,
    passes: int,
    gap_s: float,
) -> tuple[bool, dict[str, list[HostCollection]]]:
    """`passes` collection passes `gap_s` apart (a schedule, so the collector records the
    interval and the charts have a line, not a dot); returns (all ok, what each host gave)."""
    got: dict[str, HostCollection] = {}
    task = store_task(collector, store, got)
    seen: dict[str, list[HostCollection]] = {}
    ok = True
    for i in range(passes):
        if i:
            time.sleep(gap_s)
        got.clear()
        recap: Recap = FanOut(connect, task, name_of=lambda h: h.name).run(list(hosts))
        ok = ok and recap.ok
        for name, hc in got.items():
            seen.setdefault(name, []).append(hc)
    return ok, seen


class BackgroundCollection:
    """Collection every `interval_s` in a thread until `stop()`: for `demo --keep`, so the
    dashboard it serves stays current (nodes would otherwise turn stale once the demo's own
    passes end). Errors of a pass are kept in `errors`, never raised into the demo."""

    def __init__(
        self,
        connect: Callable[[Host], Connector],
        store: Store,
        hosts: Sequence[Host],
        *,
        interval_s: float = 10.0,
        collector: Collector | None = None,
    ) -> None:
        self.connect, self.store, self.hosts = connect, store, list(hosts)
        self.interval_s = interval_s
        self.collector = collector or Collector(store=store, interval_s=interval_s)
        self.errors: list[str] = []
        self.passes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-collect", daemon=True)

    def start(self) -> BackgroundCollection:
        self._thread.start()
        return self

    def _run(self) -> None:
        from datetime import UTC, datetime

        while not self._stop.wait(self.interval_s):
            try:
                collect_passes(self.connect, self.collector, self.store, self.hosts,
                               passes=1, gap_s=0)  # fmt: skip
                self.store.rollup(datetime.now(UTC))
                self.passes += 1
            except Exception as exc:  # keep collecting; the demo shows what failed
                self.errors.append(f"{type(exc).__name__}: {exc}"[:300])

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
