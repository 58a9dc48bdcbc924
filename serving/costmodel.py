"""Step-time cost model of a simulated engine: Dynamo mocker's fitted polynomials by default.

Units: token counts in, **milliseconds** out for `prefill_ms` / `decode_ms` (the units the
coefficients were fitted in) and **seconds** for the `*_s` helpers the virtual clock uses. Every
duration is multiplied by `time_scale`, so a test can run the same schedule 1000x faster
(`time_scale=0.001`) and a capacity study can model a slower GPU (`time_scale=2`).

Defaults (github ai-dynamo/dynamo `lib/mocker/src/common/perf_model.rs`, "Polynomial"):

- prefill of one forward pass, T = new (uncached) tokens in the whole batch:
  `4.209989e-7*T^2 + 1.518344e-2*T + 16.50142` ms, 0 when T == 0;
- decode step, p = active KV blocks / KV capacity: `max(1, -25.74*p^2 + 54.01*p + 5.74)` ms.

The router's `kv` policy uses the same object to predict time to first token, which is why the
chunked estimate `prefill_chunked_s` lives here rather than in the engine.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CostModel:
    """Engine forward-pass times as a function of batch shape (see module docstring for units)."""

    #: prefill quadratic coefficient, ms per token^2
    prefill_a: float = 4.209989e-7
    #: prefill linear coefficient, ms per token
    prefill_b: float = 1.518344e-2
    #: prefill fixed cost per forward pass that prefills anything, ms
    prefill_c: float = 16.50142
    #: decode quadratic coefficient, ms per (KV fraction)^2
    decode_a: float = -25.74
    #: decode linear coefficient, ms per KV fraction
    decode_b: float = 54.01
    #: decode time with an empty KV cache, ms
    decode_c: float = 5.74
    #: floor of one decode step, ms
    decode_min_ms: float = 1.0
    #: multiplier applied to every duration (tests use e.g. 0.001)
    time_scale: float = 1.0

    def __post_init__(self) -> None:
        if not self.time_scale > 0:
            raise ValueError(f"time_scale must be > 0, got {self.time_scale}")

    def prefill_ms(self, new_tokens: int) -> float:
        """Scaled ms of one forward pass that prefills `new_tokens` uncached tokens in total."""
        if new_tokens <= 0:
            return 0.0
        t = float(new_tokens)
        return (self.prefill_a * t * t + self.prefill_b * t + self.prefill_c) * self.time_scale

    def decode_ms(self, kv_fraction: float) -> float:
        """Scaled ms of one decode step at KV usage `kv_fraction` (clamped to [0, 1])."""
        p = min(1.0, max(0.0, kv_fraction))
        raw = self.decode_a * p * p + self.decode_b * p + self.decode_c
        return max(self.decode_min_ms, raw) * self.time_scale

    def prefill_s(self, new_tokens: int) -> float:
        return self.prefill_ms(new_tokens) / 1000.0

    def decode_s(self, kv_fraction: float) -> float:
        return self.decode_ms(kv_fraction) / 1000.0

    def step_s(self, prefill_tokens: int, decoded: bool, kv_fraction: float) -> float:
        """Seconds of one mixed forward pass: the engine's step duration."""
        ms = self.prefill_ms(prefill_tokens)
        if decoded:
            ms += self.decode_ms(kv_fraction)
        return ms / 1000.0

    def prefill_chunked_s(self, new_tokens: int, max_num_batched_tokens: int) -> float:
        """Seconds to prefill `new_tokens` alone on an idle engine that chunks at the token budget.

        This is the engine's own time to first token for a lone request (see `EngineCore`).
        """
        if new_tokens <= 0:
            return 0.0
        budget = max(1, max_num_batched_tokens)
        full, rest = divmod(new_tokens, budget)
        return (full * self.prefill_ms(budget) + self.prefill_ms(rest)) / 1000.0
