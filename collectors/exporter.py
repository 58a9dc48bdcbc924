"""Prometheus exposition of the fleet's latest stored values (`agentctl metrics serve|show`).

Pure: it turns `Store.fleet_now()` rows (`LatestValue`) into Prometheus text format, so a
Grafana dashboard built for dcgm-exporter and vLLM works on agentctl's store unchanged.

Series naming in the store (the `metric_series.key` of each node's series):

* ``gpu<i>.<field>``: one GPU field, `<i>` the NVML index and `<field>` a `GpuSample`
  attribute name (collectors/gpu/sample.py), e.g. ``gpu0.utilization_gpu_pct``,
  ``gpu3.memory_used_bytes``. Units are those the attribute names: bytes, W, MHz, C, %.
* ``serving.<worker_id>.<field>``: one engine worker's `ServingSample` value
  (collectors/serving/scrape.py), `<field>` one of ``running``, ``waiting``, ``kv_usage``
  (fraction 0..1, as vLLM), ``kv_hit_rate`` (0..1), ``ttft_p50_s``/``ttft_p90_s``/``ttft_p99_s``
  and ``itl_p50_s``/``itl_p90_s``/``itl_p99_s`` (seconds). `<worker_id>` may itself contain
  dots: the field is the part after the last dot.

Exported names (`GPU_METRICS`, `SERVING_METRICS`):

* GPU fields keep dcgm-exporter's names and units (``DCGM_FI_DEV_FB_USED`` in MiB,
  ``DCGM_FI_DEV_POWER_USAGE`` in W, ...) and its default labels ``gpu``, ``UUID``, ``device``
  (``nvidia<i>``), ``modelName``, ``pci_bus_id`` (the last four when the node's latest `gpus`
  facts know them) and ``Hostname`` (the node name). ``DCGM_FI_DEV_FB_FREE`` is derived as total
  minus used (DCGM also subtracts the driver-reserved memory, which NVML folds into "used").
  Everything is a gauge, counters too (``DCGM_FI_DEV_PCIE_REPLAY_COUNTER``, ECC totals):
  prometheus_client would append ``_total`` to a counter's name and break the DCGM names.
* Worker gauges keep vLLM's names (``vllm:num_requests_running``, ``vllm:num_requests_waiting``,
  ``vllm:kv_cache_usage_perc``) with labels ``worker`` and ``node``. Interval-derived values
  have agentctl names: ``agentctl_kv_hit_rate`` and the latency quantiles
  ``agentctl_time_to_first_token_seconds{quantile=...}`` and
  ``agentctl_inter_token_latency_seconds{quantile=...}``, because vLLM's histograms cannot be
  rebuilt from stored quantiles (scrape the workers themselves for those).

A replayed GPU (a recording standing in for one, `agentctl_gpu_replay`; its series carry the
source label `replay:<set>`) keeps these names so the same dashboards show it, with one more
label, ``agentctl_source="replay:<set>"``, that no measured GPU has: a query can always tell
the two apart (``{agentctl_source=""}`` selects the measured ones).

Not exported: values older than `max_age` before `now` (stale), samples whose status is not
"ok" (not supported, error: no number is made up for them), and series this table does not
know.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agentctl.collectors.store.timeseries import LatestValue

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_MAX_AGE",
    "GPU_METRICS",
    "SERVING_METRICS",
    "GpuInfo",
    "MetricSpec",
    "gpu_info_from_facts",
    "render_exposition",
    "split_series",
]

#: values older than this are stale and not exported
DEFAULT_MAX_AGE: Final = timedelta(minutes=5)
#: the Content-Type of `render_exposition`'s text (Prometheus text format 0.0.4)
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

MIB: Final = 1024.0 * 1024.0


@dataclass(frozen=True)
class MetricSpec:
    """One exported metric: its name, the factor from the stored unit, and its help text.
    `quantile` (serving latencies) becomes a `quantile` label."""

    name: str
    help: str
    scale: float = 1.0
    quantile: str | None = None


#: `gpu<i>.<field>` -> metric (dcgm-exporter names and units)
GPU_METRICS: Final[Mapping[str, MetricSpec]] = {
    "utilization_gpu_pct": MetricSpec("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %)."),
    "utilization_memory_pct": MetricSpec("DCGM_FI_DEV_MEM_COPY_UTIL", "Memory utilization (in %)."),
    "memory_used_bytes": MetricSpec(
        "DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", 1 / MIB
    ),
    "temperature_c": MetricSpec("DCGM_FI_DEV_GPU_TEMP", "GPU temperature (in C)."),
    "power_draw_w": MetricSpec("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W)."),
    "power_limit_w": MetricSpec(
        "DCGM_FI_DEV_POWER_MGMT_LIMIT", "Enforced power management limit (in W)."
    ),
    "sm_clock_mhz": MetricSpec("DCGM_FI_DEV_SM_CLOCK", "SM clock frequency (in MHz)."),
    "mem_clock_mhz": MetricSpec("DCGM_FI_DEV_MEM_CLOCK", "Memory clock frequency (in MHz)."),
    "clock_event_reasons": MetricSpec(
        "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", "Current clock event (throttle) reasons bitmask."
    ),
    "pcie_replay_counter": MetricSpec(
        "DCGM_FI_DEV_PCIE_REPLAY_COUNTER", "Total number of PCIe retries."
    ),
    "pcie_gen_current": MetricSpec("DCGM_FI_DEV_PCIE_LINK_GEN", "Current PCIe link generation."),
    "pcie_width_current": MetricSpec("DCGM_FI_DEV_PCIE_LINK_WIDTH", "Current PCIe link width."),
    "ecc_uncorrected_volatile": MetricSpec(
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "Total number of double-bit volatile ECC errors."
    ),
    "ecc_corrected_volatile": MetricSpec(
        "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL", "Total number of single-bit volatile ECC errors."
    ),
    "ecc_uncorrected_aggregate": MetricSpec(
        "DCGM_FI_DEV_ECC_DBE_AGG_TOTAL", "Total number of double-bit persistent ECC errors."
    ),
    "ecc_corrected_aggregate": MetricSpec(
        "DCGM_FI_DEV_ECC_SBE_AGG_TOTAL", "Total number of single-bit persistent ECC errors."
    ),
    "fan_speed_pct": MetricSpec("DCGM_FI_DEV_FAN_SPEED", "Fan speed (in %)."),
    "retired_pages": MetricSpec("agentctl_gpu_retired_pages", "Retired memory pages (any cause)."),
}

#: derived from memory_total_bytes - memory_used_bytes of the same GPU
FB_FREE: Final = MetricSpec("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).", 1 / MIB)

_TTFT_HELP: Final = "Time to first token over the last scrape interval (quantiles, seconds)."
_ITL_HELP: Final = "Inter-token latency over the last scrape interval (quantiles, seconds)."

#: `serving.<worker>.<field>` -> metric (vLLM names where the value is vLLM's own)
SERVING_METRICS: Final[Mapping[str, MetricSpec]] = {
    "running": MetricSpec(
        "vllm:num_requests_running", "Number of requests in model execution batches."
    ),
    "waiting": MetricSpec(
        "vllm:num_requests_waiting", "Number of requests waiting to be processed."
    ),
    "kv_usage": MetricSpec(
        "vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage."
    ),
    "kv_hit_rate": MetricSpec(
        "agentctl_kv_hit_rate",
        "Prefix-cache hit rate (hit tokens / queried tokens) over the last scrape interval.",
    ),
    **{
        f"{kind}_p{q}_s": MetricSpec(name, help_, quantile=str(int(q) / 100))
        for kind, name, help_ in (
            ("ttft", "agentctl_time_to_first_token_seconds", _TTFT_HELP),
            ("itl", "agentctl_inter_token_latency_seconds", _ITL_HELP),
        )
        for q in ("50", "90", "99")
    },
}


@dataclass(frozen=True)
class GpuInfo:
    """What a node's `gpus` facts say about one GPU (for dcgm-exporter's labels)."""

    uuid: str = ""
    name: str = ""
    pci_bus_id: str = ""


def gpu_info_from_facts(facts: Mapping[str, Any] | None) -> dict[int, GpuInfo]:
    """GPU index -> info from a node's latest facts (`facts["gpus"]["gpus"]`); {} if none."""
    family = (facts or {}).get("gpus")
    items = family.get("gpus") if isinstance(family, Mapping) else None
    out: dict[int, GpuInfo] = {}
    if not isinstance(items, list):
        return out
    for position, item in enumerate(items):
        if not isinstance(item, Mapping):
            continue
        index = item.get("index")
        index = index if isinstance(index, int) and not isinstance(index, bool) else position

        def text(key: str, item: Mapping[str, Any] = item) -> str:
            value = item.get(key)
            return value if isinstance(value, str) else ""

        out[index] = GpuInfo(text("uuid"), text("name"), text("pci_bus_id"))
    return out


def split_series(series: str) -> tuple[str, str, str] | None:
    """("gpu", index, field) or ("serving", worker, field); None for other keys."""
    head, dot, rest = series.partition(".")
    if not dot or not rest:
        return None
    if head.startswith("gpu") and head[3:].isdigit() and "." not in rest:
        return ("gpu", str(int(head[3:])), rest)
    if head == "serving":
        worker, dot, field = rest.rpartition(".")
        if dot and worker and field:
            return ("serving", worker, field)
    return None


class _Families:
    """Gauge families in a fixed order, created on first use."""

    def __init__(self) -> None:
        self._by_name: dict[str, GaugeMetricFamily] = {}

    def add(
        self, spec: MetricSpec, labels: dict[str, str], value: float,
        extra: Mapping[str, str] | None = None,
    ) -> None:  # fmt: skip
        """One sample; `extra` labels are added to this sample only (the text format allows
        a family's samples different label sets)."""
        family = self._by_name.get(spec.name)
        if family is None:
            names = [*labels] + (["quantile"] if spec.quantile is not None else [])
            family = GaugeMetricFamily(spec.name, spec.help, labels=names)
            self._by_name[spec.name] = family
        values = [*labels.values()] + ([spec.quantile] if spec.quantile is not None else [])
        if extra:
            names = [*labels] + (["quantile"] if spec.quantile is not None else [])
            family.add_sample(spec.name, {**dict(zip(names, values, strict=True)), **extra},
                              value * spec.scale)  # fmt: skip
        else:
            family.add_metric(values, value * spec.scale)

    def __iter__(self) -> Iterator[GaugeMetricFamily]:
        return iter(self._by_name.values())


def _families(
    latest: Iterable[LatestValue],
    now: datetime,
    max_age: timedelta | None,
    gpu_info: Mapping[str, Mapping[int, GpuInfo]],
) -> _Families:
    cutoff = None if max_age is None else now - max_age
    gpu: dict[tuple[str, int], dict[str, float]] = {}
    sources: dict[tuple[str, int], str] = {}
    serving: dict[tuple[str, str], dict[str, float]] = {}
    for lv in latest:
        if lv.status != "ok" or lv.value is None or (cutoff is not None and lv.ts < cutoff):
            continue
        parts = split_series(lv.series)
        if parts is None:
            continue
        kind, who, field = parts
        if kind == "gpu":
            gpu.setdefault((lv.node, int(who)), {})[field] = float(lv.value)
            if lv.source:
                sources[(lv.node, int(who))] = lv.source
        else:
            serving.setdefault((lv.node, who), {})[field] = float(lv.value)

    out = _Families()
    gpu_keys = sorted(gpu)
    for field, spec in GPU_METRICS.items():
        for node, index in gpu_keys:
            value = gpu[(node, index)].get(field)
            if value is not None:
                out.add(spec, _gpu_labels(node, index, gpu_info), value,
                        _source_label(sources, node, index))  # fmt: skip
        if field == "memory_used_bytes":  # FB_FREE right after FB_USED
            for node, index in gpu_keys:
                fields = gpu[(node, index)]
                used, total = fields.get("memory_used_bytes"), fields.get("memory_total_bytes")
                if used is not None and total is not None:
                    out.add(FB_FREE, _gpu_labels(node, index, gpu_info), max(total - used, 0.0),
                            _source_label(sources, node, index))  # fmt: skip
    serving_keys = sorted(serving)
    for field, spec in SERVING_METRICS.items():
        for node, worker in serving_keys:
            value = serving[(node, worker)].get(field)
            if value is not None:
                out.add(spec, {"worker": worker, "node": node}, value)
    return out


def _source_label(
    sources: Mapping[tuple[str, int], str], node: str, index: int
) -> dict[str, str] | None:
    src = sources.get((node, index))
    return {"agentctl_source": src} if src else None


def _gpu_labels(
    node: str, index: int, gpu_info: Mapping[str, Mapping[int, GpuInfo]]
) -> dict[str, str]:
    info = gpu_info.get(node, {}).get(index, GpuInfo())
    return {
        "gpu": str(index),
        "UUID": info.uuid,
        "device": f"nvidia{index}",
        "modelName": info.name,
        "pci_bus_id": info.pci_bus_id,
        "Hostname": node,
    }


class _LatestCollector(Collector):
    def __init__(self, families: _Families) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return list(self._families)


def render_exposition(
    latest: Sequence[LatestValue],
    now: datetime,
    *,
    max_age: timedelta | None = DEFAULT_MAX_AGE,
    gpu_info: Mapping[str, Mapping[int, GpuInfo]] | None = None,
) -> str:
    """Prometheus text format (0.0.4) for `latest`, as of `now` (aware).

    `max_age` (None: no limit) drops stale values; `gpu_info` maps node -> GPU index -> info for
    the `UUID`/`modelName`/`pci_bus_id` labels (empty strings where unknown, as dcgm-exporter
    leaves unknown labels empty).
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_LatestCollector(_families(latest, now, max_age, gpu_info or {})))
    return generate_latest(registry).decode("utf-8")
