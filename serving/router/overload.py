"""Overload detection for the router's own event loop (Envoy's overload manager, for asyncio).

A proxy on an event loop fails in a particular way when its machine is saturated: its timers
fire late, so a connect or health-check timeout "expires" although the worker answered in
time, and the router blames healthy workers for its own lag (the cascade of issue 14: every
worker fenced at 1,000 concurrent streams). This monitor measures that lag directly (how late a
short sleep wakes up) and keeps a decaying peak of it. The router uses it twice:

- while `overloaded`, new requests are shed with 503 and `Retry-After` (in-flight ones go on),
  so load above what the machine can carry turns into quick, retryable refusals;
- a timeout seen while the loop lags is the router's own fault and is not counted against
  the worker (neither by outlier detection nor by the health check).
"""

from __future__ import annotations

import asyncio
import contextlib
import time

__all__ = ["LoopLagMonitor"]


class LoopLagMonitor:
    """Samples the loop's lag every `interval_s`; `lag_s` is a peak that halves every
    `half_life_s`, so one stall is remembered for a moment and then forgotten."""

    def __init__(
        self,
        *,
        interval_s: float = 0.05,
        threshold_s: float = 0.5,
        half_life_s: float = 1.0,
    ) -> None:
        self.interval_s = interval_s
        self.threshold_s = threshold_s
        self.half_life_s = half_life_s
        self._peak = 0.0
        self._peak_at = time.monotonic()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="router-loop-lag")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def observe(self, lag_s: float, now: float) -> None:
        """Record one lag sample taken at `now`."""
        current = self.lag_at(now)
        if lag_s >= current:
            self._peak, self._peak_at = lag_s, now

    def lag_at(self, now: float) -> float:
        age = max(0.0, now - self._peak_at)
        return float(self._peak * 0.5 ** (age / self.half_life_s))

    @property
    def lag_s(self) -> float:
        return self.lag_at(time.monotonic())

    @property
    def overloaded(self) -> bool:
        return self.lag_s > self.threshold_s

    async def _run(self) -> None:
        while True:
            t0 = time.monotonic()
            await asyncio.sleep(self.interval_s)
            now = time.monotonic()
            self.observe(max(0.0, now - t0 - self.interval_s), now)
