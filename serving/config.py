"""The simulated worker's configuration: a file (YAML or JSON) with CLI flags on top.

A file may hold the worker's settings at top level or under a `worker:` key, so one deployment
file can also carry a router's section. Every field has a default, so no file is needed::

    host: 0.0.0.0
    port: 8001
    model: sim-coder
    engine: {block_size: 64, capacity_blocks: 16384, max_num_batched_tokens: 8192}
    cost: {time_scale: 1.0}
    events: {endpoint: "tcp://*:5557", replay_endpoint: "tcp://*:5558"}
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentctl.serving.costmodel import CostModel
from agentctl.serving.engine import EngineConfig
from agentctl.serving.protocol import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_TOKENS,
    DEFAULT_MAX_TOKENS_CAP,
)

__all__ = [
    "ConfigError",
    "CostSettings",
    "EngineSettings",
    "EventsSettings",
    "RouterConfig",
    "RouterWorkerSettings",
    "WorkerConfig",
    "load_router_config",
    "load_worker_config",
]


class ConfigError(ValueError):
    """An unreadable or invalid configuration file or override."""


class _Strict(BaseModel):
    # a typo in a config file must fail loudly, not silently fall back to a default
    model_config = ConfigDict(extra="forbid")


class EngineSettings(_Strict):
    """`EngineConfig` fields (defaults: Dynamo mocker's, a vLLM-like engine)."""

    block_size: int = Field(default=64, gt=0)
    capacity_blocks: int = Field(default=16384, gt=0)
    max_num_batched_tokens: int = Field(default=8192, gt=0)
    max_num_seqs: int = Field(default=256, gt=0)
    enable_chunked_prefill: bool = True
    watermark: float = Field(default=0.01, ge=0.0, lt=1.0)
    max_pinned_fraction: float = Field(default=0.25, ge=0.0, le=1.0)


class CostSettings(_Strict):
    """`CostModel` coefficients (prefill ms = a*T^2 + b*T + c; decode ms = max(min, a*p^2 +
    b*p + c)) and `time_scale`, the factor on every step time (tests: 0.01)."""

    prefill_a: float = 4.209989e-7
    prefill_b: float = 1.518344e-2
    prefill_c: float = 16.50142
    decode_a: float = -25.74
    decode_b: float = 54.01
    decode_c: float = 5.74
    decode_min_ms: float = 1.0
    time_scale: float = Field(default=1.0, gt=0.0)


class EventsSettings(_Strict):
    """Where KV events go (vLLM's `--kv-events-config`); no endpoint: no events."""

    endpoint: str | None = None
    replay_endpoint: str | None = None
    topic: str = ""
    buffer_steps: int = Field(default=10_000, gt=0)
    #: append the worker's boot nonce to every batch (a 4th array element, which vLLM's
    #: msgspec decoder skips); off: exactly vLLM's 3-element batch, for a consumer that
    #: rejects longer arrays (a serde tuple decoder such as Dynamo's)
    send_instance_id: bool = True


class WorkerConfig(_Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    model: str = "agentctl-sim"
    #: path to a HuggingFace tokenizer.json; None: the built-in deterministic tokenizer
    tokenizer: str | None = None
    #: max_tokens when a request gives none
    default_max_tokens: int = Field(default=DEFAULT_MAX_TOKENS, gt=0)
    #: requests asking for more tokens are refused with a 400 (reported in /v1/models)
    max_tokens_cap: int = Field(default=DEFAULT_MAX_TOKENS_CAP, gt=0)
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, gt=0)
    log_level: str = "info"
    #: a connection must send a request's headers within this (slowloris), see serving/server.py
    header_timeout_s: float = Field(default=10.0, gt=0.0)
    #: idle keep-alive connections are closed after this; above the clients' own expiry
    keepalive_timeout_s: float = Field(default=30.0, gt=0.0)
    #: connections one peer address may hold (0: no cap); the router is one address and
    #: pools thousands of connections to each worker, hence a high default
    max_connections_per_ip: int = Field(default=8192, ge=0)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    cost: CostSettings = Field(default_factory=CostSettings)
    events: EventsSettings = Field(default_factory=EventsSettings)

    def engine_config(self) -> EngineConfig:
        return EngineConfig(**self.engine.model_dump())

    def cost_model(self) -> CostModel:
        return CostModel(**self.cost.model_dump())

    def with_overrides(self, overrides: Mapping[str, Any]) -> WorkerConfig:
        """A copy with dotted keys (`"engine.block_size"`, `"port"`) replaced; None values are
        skipped (an unset CLI flag). Raises `ConfigError` if the result is invalid."""
        data = self.model_dump()
        for key, value in overrides.items():
            if value is None:
                continue
            node = data
            *parents, leaf = key.split(".")
            for p in parents:
                node = node[p]
            node[leaf] = value
        try:
            return WorkerConfig.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(str(exc)) from None


def load_worker_config(path: str | Path | None) -> WorkerConfig:
    """Read a YAML or JSON file (JSON is YAML); None: all defaults."""
    if path is None:
        return WorkerConfig()
    section = _read_section(path, "worker")
    try:
        return WorkerConfig.model_validate(section)
    except ValidationError as exc:
        raise ConfigError(f"config {path}: {exc}") from None


# ---- router -------------------------------------------------------------------------------

_M = TypeVar("_M", bound=BaseModel)


def _apply_overrides(model: _M, overrides: Mapping[str, Any]) -> _M:
    data = model.model_dump()
    for key, value in overrides.items():
        if value is None:
            continue
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    try:
        return type(model).model_validate(data)
    except ValidationError as exc:
        raise ConfigError(str(exc)) from None


def _read_section(path: str | Path, key: str) -> dict[str, Any]:
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config {p}: {exc}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config {p} is not valid YAML/JSON: {exc}") from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config {p}: expected a mapping at top level")
    section = raw.get(key, raw)
    if not isinstance(section, dict):
        raise ConfigError(f"config {p}: {key!r} must be a mapping")
    return section


class RouterWorkerSettings(_Strict):
    """One worker behind the router: its HTTP base URL and, if it publishes KV events, the ZMQ
    endpoints to connect to (vLLM's PUB and ROUTER replay sockets)."""

    #: stable name (metrics labels, admin paths); default `w<position>`
    id: str | None = Field(default=None, min_length=1, max_length=128, pattern=r"^[\w.\-:]+$")
    url: str = Field(min_length=1)
    events: str | None = None
    replay: str | None = None
    topic: str = ""
    capacity_blocks: int = Field(default=16384, gt=0)
    #: the engine's max_num_batched_tokens (chunked prefill budget)
    token_budget: int | None = Field(default=None, gt=0)


class RouterConfig(_Strict):
    """The KV-aware router. A deployment file may hold it under a `router:` key::

    router:
      port: 8080
      policy: kv
      policy_options: {decode_weight: 0.02}
      block_size: 64
      workers:
        - {id: w0, url: "http://10.0.0.1:8001", events: "tcp://10.0.0.1:5557",
           replay: "tcp://10.0.0.1:5558", capacity_blocks: 16384}
    """

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    policy: str = "kv"
    policy_options: dict[str, Any] = Field(default_factory=dict)
    #: must equal the workers' engine block size (the same block hashes)
    block_size: int = Field(default=64, gt=0)
    #: the workers' tokenizer.json; None: the built-in tokenizer
    tokenizer: str | None = None
    default_max_tokens: int = Field(default=DEFAULT_MAX_TOKENS, gt=0)
    #: requests asking for more tokens are refused with a 400 (reported in /v1/models)
    max_tokens_cap: int = Field(default=DEFAULT_MAX_TOKENS_CAP, gt=0)
    max_body_bytes: int = Field(default=DEFAULT_MAX_BODY_BYTES, gt=0)
    #: seconds between /health polls of each worker, and each poll's timeout
    health_interval_s: float = Field(default=1.0, gt=0.0)
    health_timeout_s: float = Field(default=1.0, gt=0.0)
    #: generous: a short one fires spuriously when the router's machine is saturated (a dead
    #: worker is found by its refused port or the health check long before this)
    connect_timeout_s: float = Field(default=10.0, gt=0.0)
    #: longest a worker may stay silent on a request (between chunks) before it fails
    read_timeout_s: float = Field(default=600.0, gt=0.0)
    #: seconds to wait for a KV event replay before resetting that worker's view
    replay_timeout_s: float = Field(default=2.0, gt=0.0)
    #: longest a worker's cache snapshot may take when the router (re)starts or a worker joins
    snapshot_timeout_s: float = Field(default=5.0, gt=0.0)
    #: consecutive failed /health polls before a worker is down (a refused port: at once)
    unhealthy_threshold: int = Field(default=3, ge=1)
    #: a down worker's in-flight request that got nothing for this long is migrated
    stall_s: float = Field(default=3.0, gt=0.0)
    #: consecutive request failures that eject a worker from rotation (outlier detection)
    eject_after: int = Field(default=5, ge=1)
    #: first ejection's length; each later one doubles, up to eject_max_s
    eject_base_s: float = Field(default=5.0, gt=0.0)
    eject_max_s: float = Field(default=60.0, gt=0.0)
    #: never eject more than this share of the workers at once
    max_ejection_percent: float = Field(default=50.0, ge=0.0, le=100.0)
    #: requests in flight past which new ones are shed with 503 + Retry-After
    max_in_flight: int = Field(default=4096, gt=0)
    #: the router's own event-loop lag (s) past which it sheds new requests
    overload_lag_s: float = Field(default=1.0, gt=0.0)
    #: tries to reach a worker before answering (connect failures, 5xx)
    max_attempts: int = Field(default=3, ge=1)
    #: times one request may move to another worker after its worker failed
    max_migrations: int = Field(default=3, ge=0)
    #: predicted-layer TTL of the block index (routed, not yet confirmed by events)
    predicted_ttl_s: float = Field(default=5.0, gt=0.0)
    approximate_ttl_s: float = Field(default=120.0, gt=0.0)
    #: the workers' cost-model time scale: the `kv` policy predicts in wall-clock ms, and the
    #: router measures queue progress on the wall clock, so both must run at the same speed
    time_scale: float = Field(default=1.0, gt=0.0)
    log_level: str = "info"
    #: a connection must send a request's headers within this (slowloris), see serving/server.py
    header_timeout_s: float = Field(default=10.0, gt=0.0)
    #: idle keep-alive connections are closed after this; above the clients' own expiry
    keepalive_timeout_s: float = Field(default=30.0, gt=0.0)
    #: connections one client address may hold (0: no cap); generous, because agents often
    #: reach the router through one gateway or NAT address: admission (max_in_flight) and the
    #: header timeout are what bound the load, this only stops one address taking everything
    max_connections_per_ip: int = Field(default=4096, ge=0)
    #: a file holding the bearer token `/admin/*` requires (None: admin open, for loopback use)
    admin_token_file: str | None = None
    #: where the router keeps which workers are drained, so a drain survives a restart
    state_file: str | None = None
    workers: list[RouterWorkerSettings] = Field(default_factory=list)

    def with_overrides(self, overrides: Mapping[str, Any]) -> RouterConfig:
        """A copy with dotted keys replaced (None values skipped); `ConfigError` if invalid."""
        return _apply_overrides(self, overrides)


def load_router_config(path: str | Path | None) -> RouterConfig:
    """Read the router's section (`router:` or top level) of a YAML/JSON file; None: defaults."""
    if path is None:
        return RouterConfig()
    section = _read_section(path, "router")
    try:
        return RouterConfig.model_validate(section)
    except ValidationError as exc:
        raise ConfigError(f"config {path}: {exc}") from None
