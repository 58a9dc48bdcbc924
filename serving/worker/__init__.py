"""The simulated engine worker: `EngineCore` behind an OpenAI-compatible HTTP API, paced in wall
clock time, publishing vLLM-format KV events and vLLM-named Prometheus metrics, so a router
cannot tell it from a real vLLM (and a real vLLM can replace it)."""

from __future__ import annotations

from agentctl.serving.worker.app import create_app
from agentctl.serving.worker.runner import EngineRunner, RequestHandle

__all__ = ["EngineRunner", "RequestHandle", "create_app"]
