"""Typed per-GPU samples in which every field is a value or an explicit reason for its absence.

GB10 reports memory, power limit, ECC and PCIe as not supported; an idle H100 runs its link at
Gen 1. Consumers must be able to tell those apart from a failed call, hence `Reading`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Generic, NamedTuple, TypeVar

T = TypeVar("T")


class Status(StrEnum):
    """Why a reading holds (or lacks) a value."""

    OK = "ok"
    NOT_SUPPORTED = "not_supported"  # the GPU or driver has no such counter: not a fault
    NO_PERMISSION = "no_permission"
    ERROR = "error"  # the call failed; `detail` says how
    NOT_COLLECTED = "not_collected"  # this source does not ask for the field at all


@dataclass(frozen=True, slots=True)
class Reading(Generic[T]):
    """One field: `value` is set only when `status` is OK."""

    status: Status
    value: T | None = None
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": str(self.status)}
        if self.ok:
            v = self.value
            out["value"] = v._asdict() if isinstance(v, tuple) and hasattr(v, "_asdict") else v
        if self.detail:
            out["detail"] = self.detail
        return out


_TUPLES: dict[str, Any] = {}  # field name -> NamedTuple type, filled below


def reading_from_json(d: Any, field_name: str = "") -> Reading[Any]:
    """The inverse of `Reading.to_json`; anything malformed reads as an error, never raises."""
    if not isinstance(d, dict):
        return error("malformed reading")
    try:
        status = Status(str(d.get("status")))
    except ValueError:
        return error(f"unknown status {str(d.get('status'))[:40]!r}")
    detail = str(d.get("detail", ""))[:500]
    if status is not Status.OK:
        return Reading(status, None, detail)
    value = d.get("value")
    kind = _TUPLES.get(field_name)
    if kind is not None:
        if not isinstance(value, dict):
            return error("malformed value")
        try:
            value = kind(**value)
        except (TypeError, ValueError):
            return error("malformed value")
    return Reading(status, value, detail)


def ok(value: T) -> Reading[T]:
    return Reading(Status.OK, value)


def not_supported(detail: str = "") -> Reading[Any]:
    return Reading(Status.NOT_SUPPORTED, None, detail)


def no_permission(detail: str = "") -> Reading[Any]:
    return Reading(Status.NO_PERMISSION, None, detail)


def error(detail: str) -> Reading[Any]:
    return Reading(Status.ERROR, None, detail)


def not_collected() -> Reading[Any]:
    return Reading(Status.NOT_COLLECTED)


class RemappedRows(NamedTuple):
    """`nvmlDeviceGetRemappedRows`: Ampere and later replace retired pages with row remapping."""

    correctable: int
    uncorrectable: int
    pending: bool
    failure: bool


class NvLinks(NamedTuple):
    up: int
    total: int


# Bits of nvmlDeviceGetCurrentClocksEventReasons (same values as the older ThrottleReasons).
CLOCK_EVENT_REASONS: tuple[tuple[int, str], ...] = (
    (0x1, "gpu_idle"),
    (0x2, "applications_clocks_setting"),
    (0x4, "sw_power_cap"),
    (0x8, "hw_slowdown"),
    (0x10, "sync_boost"),
    (0x20, "sw_thermal_slowdown"),
    (0x40, "hw_thermal_slowdown"),
    (0x80, "hw_power_brake_slowdown"),
    (0x100, "display_clock_setting"),
)


def decode_clock_reasons(mask: int) -> tuple[str, ...]:
    """Names of the set bits; unknown bits are kept as `unknown_0x..` rather than dropped."""
    names = [name for bit, name in CLOCK_EVENT_REASONS if mask & bit]
    rest = mask & ~sum(bit for bit, _ in CLOCK_EVENT_REASONS)
    if rest:
        names.append(f"unknown_{rest:#x}")
    return tuple(names)


# Frozen, so one shared instance is a safe dataclass default.
_NC: Reading[Any] = Reading(Status.NOT_COLLECTED)


@dataclass(slots=True)
class GpuSample:
    """One GPU at one moment. Fields a source does not ask for stay `not_collected`."""

    index: int
    uuid: Reading[str] = _NC
    name: Reading[str] = _NC
    pci_bus_id: Reading[str] = _NC
    utilization_gpu_pct: Reading[int] = _NC
    utilization_memory_pct: Reading[int] = _NC
    memory_used_bytes: Reading[int] = _NC
    memory_total_bytes: Reading[int] = _NC
    temperature_c: Reading[int] = _NC
    power_draw_w: Reading[float] = _NC
    power_limit_w: Reading[float] = _NC
    sm_clock_mhz: Reading[int] = _NC
    mem_clock_mhz: Reading[int] = _NC
    clock_event_reasons: Reading[int] = _NC
    ecc_uncorrected_volatile: Reading[int] = _NC
    ecc_uncorrected_aggregate: Reading[int] = _NC
    ecc_corrected_volatile: Reading[int] = _NC
    ecc_corrected_aggregate: Reading[int] = _NC
    remapped_rows: Reading[RemappedRows] = _NC
    retired_pages: Reading[int] = _NC
    retired_pages_pending: Reading[bool] = _NC
    pcie_gen_current: Reading[int] = _NC
    pcie_gen_max: Reading[int] = _NC
    pcie_width_current: Reading[int] = _NC
    pcie_width_max: Reading[int] = _NC
    pcie_replay_counter: Reading[int] = _NC
    fan_speed_pct: Reading[int] = _NC
    nvlinks: Reading[NvLinks] = _NC

    @property
    def clock_event_reason_names(self) -> Reading[tuple[str, ...]]:
        r = self.clock_event_reasons
        if r.value is not None and r.ok:
            return ok(decode_clock_reasons(r.value))
        return Reading(r.status, None, r.detail)

    def readings(self) -> dict[str, Reading[Any]]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "index"}

    def problems(self) -> dict[str, Reading[Any]]:
        """Fields that were asked for and gave no value (not supported, denied or failed)."""
        skip = (Status.OK, Status.NOT_COLLECTED)
        return {k: r for k, r in self.readings().items() if r.status not in skip}

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index}
        out.update({k: r.to_json() for k, r in self.readings().items()})
        out["clock_event_reason_names"] = self.clock_event_reason_names.to_json()
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> GpuSample:
        """What a node-side sampler printed; unknown keys are ignored (a newer node)."""
        g = cls(index=int(d.get("index", 0)))
        for f in fields(cls):
            if f.name != "index" and f.name in d:
                setattr(g, f.name, reading_from_json(d[f.name], f.name))
        return g


@dataclass(slots=True)
class NodeGpuSample:
    """All GPUs of one node from one source, with the node-wide versions."""

    source: str  # "nvml" | "nvidia-smi" | "nvidia-smi -q"
    timestamp: datetime
    driver_version: Reading[str] = field(default_factory=not_collected)
    cuda_driver_version: Reading[str] = field(default_factory=not_collected)
    gpus: list[GpuSample] = field(default_factory=list)
    node_problems: dict[str, Reading[Any]] = field(default_factory=dict)

    @property
    def problems(self) -> dict[str, Reading[Any]]:
        """`gpu<index>.<field>` (and node-level names) for everything that gave no value."""
        out = dict(self.node_problems)
        for name in ("driver_version", "cuda_driver_version"):
            r: Reading[str] = getattr(self, name)
            if r.status not in (Status.OK, Status.NOT_COLLECTED):
                out[name] = r
        for g in self.gpus:
            out.update({f"gpu{g.index}.{k}": r for k, r in g.problems().items()})
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "timestamp": self.timestamp.isoformat(),
            "driver_version": self.driver_version.to_json(),
            "cuda_driver_version": self.cuda_driver_version.to_json(),
            "gpus": [g.to_json() for g in self.gpus],
            "problems": {k: r.to_json() for k, r in self.problems.items()},
        }


def node_sample_from_json(d: dict[str, Any]) -> NodeGpuSample:
    """The inverse of `NodeGpuSample.to_json` (problems are recomputed, not read)."""
    try:
        ts = datetime.fromisoformat(str(d.get("timestamp")))
    except ValueError:
        ts = datetime.now(UTC)
    gpus = d.get("gpus")
    return NodeGpuSample(
        source=str(d.get("source", "nvml"))[:40],
        timestamp=ts,
        driver_version=reading_from_json(d.get("driver_version")),
        cuda_driver_version=reading_from_json(d.get("cuda_driver_version")),
        gpus=[GpuSample.from_json(g) for g in gpus if isinstance(g, dict)]
        if isinstance(gpus, list)
        else [],
    )


_TUPLES.update(remapped_rows=RemappedRows, nvlinks=NvLinks)


def cuda_version_text(v: int) -> str:
    """NVML's int CUDA driver version: 12040 means 12.4."""
    return f"{v // 1000}.{(v % 1000) // 10}"
