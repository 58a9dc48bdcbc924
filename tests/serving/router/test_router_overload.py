"""The loop-lag monitor: a decaying peak, and a real stalled loop is seen."""

from __future__ import annotations

import asyncio
import time

from agentctl.serving.router.overload import LoopLagMonitor


def test_peak_decays_by_half_life() -> None:
    m = LoopLagMonitor(threshold_s=0.5, half_life_s=1.0)
    m.observe(2.0, now=100.0)
    assert m.lag_at(100.0) == 2.0
    assert abs(m.lag_at(101.0) - 1.0) < 1e-9
    m.observe(0.1, now=101.0)  # a smaller sample does not replace a larger decayed peak
    assert abs(m.lag_at(102.0) - 0.5) < 1e-9
    m.observe(0.9, now=102.0)
    assert m.lag_at(102.0) == 0.9


def test_a_blocked_loop_is_detected_then_forgotten() -> None:
    async def run() -> tuple[bool, bool]:
        m = LoopLagMonitor(interval_s=0.01, threshold_s=0.2, half_life_s=0.05)
        m.start()
        await asyncio.sleep(0.05)
        time.sleep(0.5)  # block the loop as a CPU-bound request would
        await asyncio.sleep(0.03)
        seen = m.overloaded
        await asyncio.sleep(0.6)
        later = m.overloaded
        await m.stop()
        return seen, later

    seen, later = asyncio.run(run())
    assert seen and not later
