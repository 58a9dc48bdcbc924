"""The cost model reproduces Dynamo mocker's fitted polynomials and scales every duration."""

from __future__ import annotations

import pytest

from agentctl.serving.costmodel import CostModel


def test_prefill_matches_the_mocker_polynomial() -> None:
    cost = CostModel()
    assert cost.prefill_ms(0) == 0.0
    assert cost.prefill_ms(512) == pytest.approx(24.0, abs=0.5)
    assert cost.prefill_ms(8192) == pytest.approx(169.1, abs=0.5)
    assert cost.prefill_ms(32768) == pytest.approx(966.1, abs=0.5)
    t = 3000
    assert cost.prefill_ms(t) == pytest.approx(4.209989e-7 * t * t + 1.518344e-2 * t + 16.50142)


def test_decode_matches_the_mocker_polynomial() -> None:
    cost = CostModel()
    assert cost.decode_ms(0.0) == pytest.approx(5.74)
    assert cost.decode_ms(0.5) == pytest.approx(26.31, abs=0.05)
    assert cost.decode_ms(1.0) == pytest.approx(34.01, abs=0.05)
    # clamped to [0, 1], and floored at decode_min_ms
    assert cost.decode_ms(-3.0) == cost.decode_ms(0.0)
    assert cost.decode_ms(7.0) == cost.decode_ms(1.0)
    assert CostModel(decode_c=-100.0).decode_ms(0.0) == 1.0


def test_time_scale_multiplies_every_duration() -> None:
    base, fast = CostModel(), CostModel(time_scale=0.001)
    assert fast.prefill_ms(512) == pytest.approx(base.prefill_ms(512) * 0.001)
    assert fast.decode_ms(0.3) == pytest.approx(base.decode_ms(0.3) * 0.001)
    assert fast.prefill_s(512) == pytest.approx(base.prefill_ms(512) / 1e6)
    assert fast.step_s(100, True, 0.2) == pytest.approx(
        (base.prefill_ms(100) + base.decode_ms(0.2)) / 1e6
    )
    assert base.step_s(0, False, 0.9) == 0.0
    with pytest.raises(ValueError):
        CostModel(time_scale=0)


def test_configurable_coefficients_and_chunked_estimate() -> None:
    linear = CostModel(prefill_a=0.0, prefill_b=1.0, prefill_c=0.0)
    assert linear.prefill_ms(100) == 100.0
    cost = CostModel()
    expected = (2 * cost.prefill_ms(8192) + cost.prefill_ms(1000)) / 1000
    assert cost.prefill_chunked_s(2 * 8192 + 1000, 8192) == pytest.approx(expected)
    assert cost.prefill_chunked_s(0, 8192) == 0.0
