"""Simulated engine worker core: a paged KV cache and a continuous-batching scheduler on a
virtual clock. Pure (no I/O, no asyncio), so the discrete-event benchmark and the HTTP worker
drive the same code."""

from __future__ import annotations

from agentctl.serving.costmodel import CostModel
from agentctl.serving.engine.kvcache import CacheStats, KVCache
from agentctl.serving.engine.scheduler import EngineConfig, EngineCore, RequestTooLarge, StepResult

__all__ = [
    "CacheStats",
    "CostModel",
    "EngineConfig",
    "EngineCore",
    "KVCache",
    "RequestTooLarge",
    "StepResult",
]
