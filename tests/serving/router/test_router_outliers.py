"""Outlier detection in the registry: failures eject only in a row, within the cap."""

from __future__ import annotations

import time
from typing import Any

from agentctl.serving.router.policies import make_policy
from agentctl.serving.router.registry import Registry
from agentctl.serving.router.router_metrics import RouterMetrics
from agentctl.serving.types import RequestSpec


def _registry(n: int, **kw: Any) -> Registry:
    reg = Registry(make_policy("round-robin"), block_size=16, metrics=RouterMetrics(), **kw)
    for i in range(n):
        reg.add(f"w{i}", f"http://127.0.0.1:{9 + i}", capacity_blocks=64)
    return reg


def test_a_success_resets_the_streak() -> None:
    reg = _registry(2, eject_after=3)
    w = reg.workers["w0"]
    for _ in range(2):
        reg.report_failure(w, "connect")
    reg.report_success(w)
    for _ in range(2):
        reg.report_failure(w, "connect")
    assert not w.ejected(time.monotonic()) and w.healthy


def test_ejection_grows_and_is_capped_by_share_of_workers() -> None:
    reg = _registry(4, eject_after=2, eject_base_s=10.0, max_ejection_percent=50.0)
    now = time.monotonic()
    for wid in ("w0", "w1", "w2"):
        for _ in range(2):
            reg.report_failure(reg.workers[wid], "timeout")
    ejected = [w.id for w in reg.workers.values() if w.ejected(now + 1)]
    assert ejected == ["w0", "w1"], "at most half the workers are ejected"
    w0 = reg.workers["w0"]
    assert w0.healthy, "ejection is not the health check's verdict"
    first = w0.ejected_until
    w0.ejected_until = 0.0  # its time is up
    for _ in range(2):
        reg.report_failure(w0, "timeout")
    assert w0.ejected_until - time.monotonic() > first - now + 5, "the second one is longer"


def test_ejected_worker_gets_no_new_requests_but_stays_healthy_in_health() -> None:
    reg = _registry(2, eject_after=1)
    reg.report_failure(reg.workers["w0"], "connect")
    specs = [RequestSpec(f"r{i}", (), prompt_tokens=4, max_tokens=1) for i in range(4)]
    assert {reg.route(s).worker.id for s in specs} == {"w1"}
    assert reg.workers["w0"].describe()["ejected"] is True
    assert reg.workers["w0"].describe()["healthy"] is True


def test_timeouts_while_the_router_lags_are_not_counted() -> None:
    reg = _registry(2, eject_after=1)
    reg.lag.observe(5.0, time.monotonic())
    reg.report_failure(reg.workers["w0"], "timeout", timeout=True)
    assert reg.workers["w0"].request_failures == 0
    reg.report_failure(reg.workers["w0"], "connect refused")
    assert reg.workers["w0"].ejected(time.monotonic())
