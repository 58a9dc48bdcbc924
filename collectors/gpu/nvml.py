"""Reads a node's GPUs through NVML (`import pynvml`, package nvidia-ml-py).

The module is a parameter so that tests drive the same code with `replay.ReplayNvml`, which
raises pynvml's own exception classes. Calls and N/A cases follow
shared/research/diagnostics-anchors.md section 3.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from agentctl.collectors.gpu.sample import (
    GpuSample,
    NodeGpuSample,
    NvLinks,
    Reading,
    RemappedRows,
    cuda_version_text,
    error,
    no_permission,
    not_supported,
    ok,
)

T = TypeVar("T")


class NvmlSourceError(RuntimeError):
    """NVML could not start. `kind` is `driver_not_loaded`, `driver_library_mismatch` (the L1
    "driver/library mismatch" signal: the kernel module and libnvidia-ml differ, usually after
    a driver upgrade without a reboot), `library_not_found` or `init_failed`."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


def _load_pynvml() -> Any:
    return importlib.import_module("pynvml")


class NvmlSource:
    """One `sample()` is one nvmlInit ... nvmlShutdown session."""

    def __init__(self, nvml_module: Any = None) -> None:
        self.nvml: Any = _load_pynvml() if nvml_module is None else nvml_module

    # -- error mapping -------------------------------------------------------------------
    def _read(
        self, fn: str, *args: Any, optional: bool = False, fallback: str | None = None
    ) -> Reading[Any]:
        """Call `fn`; NotSupported (and FunctionNotFound for `optional` calls) mean the GPU
        or driver has no such counter, which is not a fault. A driver without `fn` at all
        (FunctionNotFound) is asked `fallback` instead, when given."""
        n = self.nvml
        try:
            return ok(getattr(n, fn)(*args))
        except n.NVMLError_NotSupported as e:
            return not_supported(f"{fn}: {e}")
        except n.NVMLError_FunctionNotFound as e:
            if fallback is not None:
                return self._read(fallback, *args, optional=True)
            return not_supported(f"{fn}: {e}") if optional else error(f"{fn}: {e}")
        except n.NVMLError_NoPermission as e:
            return no_permission(f"{fn}: {e}")
        except n.NVMLError as e:
            return error(f"{fn}: {type(e).__name__}: {e}")

    @staticmethod
    def _map(r: Reading[Any], f: Callable[[Any], T]) -> Reading[T]:
        return ok(f(r.value)) if r.ok else Reading(r.status, None, r.detail)

    # -- session -------------------------------------------------------------------------
    def _init(self) -> None:
        n = self.nvml
        try:
            n.nvmlInit()
        except n.NVMLError_DriverNotLoaded as e:
            raise NvmlSourceError("driver_not_loaded", str(e)) from e
        except n.NVMLError_LibRmVersionMismatch as e:
            raise NvmlSourceError("driver_library_mismatch", str(e)) from e
        except n.NVMLError_LibraryNotFound as e:
            raise NvmlSourceError("library_not_found", str(e)) from e
        except n.NVMLError as e:
            raise NvmlSourceError("init_failed", f"{type(e).__name__}: {e}") from e

    def sample(self, now: datetime | None = None) -> NodeGpuSample:
        """Raises NvmlSourceError when NVML cannot start; per-field failures stay in the sample."""
        self._init()
        try:
            node = NodeGpuSample(source="nvml", timestamp=now or datetime.now(UTC))
            node.driver_version = self._read("nvmlSystemGetDriverVersion")
            node.cuda_driver_version = self._map(
                self._read("nvmlSystemGetCudaDriverVersion"), cuda_version_text
            )
            count = self._read("nvmlDeviceGetCount")
            if not count.ok:
                node.node_problems["device_count"] = count
                return node
            for i in range(int(count.value or 0)):
                h = self._read("nvmlDeviceGetHandleByIndex", i)
                if not h.ok:
                    node.node_problems[f"gpu{i}.handle"] = h
                    continue
                node.gpus.append(self._gpu(i, h.value))
            return node
        finally:
            # A failed shutdown leaves nothing to release; the sample is already complete.
            with contextlib.suppress(self.nvml.NVMLError):
                self.nvml.nvmlShutdown()

    # -- one GPU -------------------------------------------------------------------------
    def _gpu(self, i: int, h: Any) -> GpuSample:
        n, r, m = self.nvml, self._read, self._map
        g = GpuSample(index=i)
        g.name = r("nvmlDeviceGetName", h)
        g.uuid = r("nvmlDeviceGetUUID", h)
        g.pci_bus_id = m(r("nvmlDeviceGetPciInfo", h), lambda p: _text(p.busId))
        util = r("nvmlDeviceGetUtilizationRates", h)
        g.utilization_gpu_pct = m(util, lambda u: int(u.gpu))
        g.utilization_memory_pct = m(util, lambda u: int(u.memory))
        mem = r("nvmlDeviceGetMemoryInfo", h)  # NotSupported on GB10 (unified memory)
        g.memory_used_bytes = m(mem, lambda v: int(v.used))
        g.memory_total_bytes = m(mem, lambda v: int(v.total))
        g.temperature_c = m(r("nvmlDeviceGetTemperature", h, n.NVML_TEMPERATURE_GPU), int)
        g.power_draw_w = m(r("nvmlDeviceGetPowerUsage", h), _mw_to_w)
        g.power_limit_w = m(r("nvmlDeviceGetEnforcedPowerLimit", h), _mw_to_w)
        g.sm_clock_mhz = m(r("nvmlDeviceGetClockInfo", h, n.NVML_CLOCK_SM), int)
        g.mem_clock_mhz = m(r("nvmlDeviceGetClockInfo", h, n.NVML_CLOCK_MEM), int)
        g.clock_event_reasons = m(self._clock_reasons(h), int)
        unc, cor = n.NVML_MEMORY_ERROR_TYPE_UNCORRECTED, n.NVML_MEMORY_ERROR_TYPE_CORRECTED
        vol, agg = n.NVML_VOLATILE_ECC, n.NVML_AGGREGATE_ECC
        g.ecc_uncorrected_volatile = m(r("nvmlDeviceGetTotalEccErrors", h, unc, vol), int)
        g.ecc_uncorrected_aggregate = m(r("nvmlDeviceGetTotalEccErrors", h, unc, agg), int)
        g.ecc_corrected_volatile = m(r("nvmlDeviceGetTotalEccErrors", h, cor, vol), int)
        g.ecc_corrected_aggregate = m(r("nvmlDeviceGetTotalEccErrors", h, cor, agg), int)
        g.remapped_rows = m(
            r("nvmlDeviceGetRemappedRows", h),
            lambda t: RemappedRows(int(t[0]), int(t[1]), bool(t[2]), bool(t[3])),
        )
        g.retired_pages = self._retired_pages(h)
        g.retired_pages_pending = m(
            r("nvmlDeviceGetRetiredPagesPendingStatus", h),
            lambda v: int(v) == n.NVML_FEATURE_ENABLED,
        )
        g.pcie_gen_current = m(r("nvmlDeviceGetCurrPcieLinkGeneration", h), int)
        g.pcie_gen_max = m(r("nvmlDeviceGetMaxPcieLinkGeneration", h), int)
        g.pcie_width_current = m(r("nvmlDeviceGetCurrPcieLinkWidth", h), int)
        g.pcie_width_max = m(r("nvmlDeviceGetMaxPcieLinkWidth", h), int)
        g.pcie_replay_counter = m(r("nvmlDeviceGetPcieReplayCounter", h), int)
        g.fan_speed_pct = m(r("nvmlDeviceGetFanSpeed", h), int)
        g.nvlinks = self._nvlinks(h)
        return g

    def _clock_reasons(self, h: Any) -> Reading[Any]:
        """Drivers before the rename lack ...ClocksEventReasons: fall back to ...ThrottleReasons."""
        return self._read(
            "nvmlDeviceGetCurrentClocksEventReasons",
            h,
            fallback="nvmlDeviceGetCurrentClocksThrottleReasons",
        )

    def _retired_pages(self, h: Any) -> Reading[int]:
        """Pages retired for either cause; Ampere and later use row remapping instead (N/A)."""
        n, total = self.nvml, 0
        for cause in (
            n.NVML_PAGE_RETIREMENT_CAUSE_MULTIPLE_SINGLE_BIT_ECC_ERRORS,
            n.NVML_PAGE_RETIREMENT_CAUSE_DOUBLE_BIT_ECC_ERROR,
        ):
            got = self._read("nvmlDeviceGetRetiredPages", h, cause)
            if not got.ok:
                return Reading(got.status, None, got.detail)
            total += len(got.value or ())
        return ok(total)

    def _nvlinks(self, h: Any) -> Reading[NvLinks]:
        """Counts links until the first index the GPU rejects; none at all means no NVLink."""
        n = self.nvml
        up = total = 0
        for link in range(int(n.NVML_NVLINK_MAX_LINKS)):
            try:
                state = n.nvmlDeviceGetNvLinkState(h, link)
            except (n.NVMLError_NotSupported, n.NVMLError_InvalidArgument) as e:
                if total == 0:
                    return not_supported(f"nvmlDeviceGetNvLinkState: {e}")
                break
            except n.NVMLError_NoPermission as e:
                return no_permission(f"nvmlDeviceGetNvLinkState: {e}")
            except n.NVMLError as e:
                return error(f"nvmlDeviceGetNvLinkState({link}): {type(e).__name__}: {e}")
            total += 1
            up += int(state == n.NVML_FEATURE_ENABLED)
        return ok(NvLinks(up, total))


def _mw_to_w(v: Any) -> float:
    return round(int(v) / 1000.0, 3)


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
