"""One collection pass over one host, agentlessly: GPUs through `nvidia-smi`, the serving
stack's `/metrics` through an SSH port forward (nothing new is exposed on the node), turned
into store samples.

Series names (what the exporter and the dashboards read):

- `gpu<i>.<field>`: a `GpuSample` attribute (`temperature_c`, `power_draw_w`,
  `memory_used_bytes`...); a field the GPU does not support is stored as `not_supported`,
  one that failed as `error`, never as a number;
- `serving.<worker id>.<field>` for each engine worker (`<host>-w<i>`, as `deploy` names
  them): `kv_hit_rate` (absent when the interval had no queries), `ttft_p50_s`,
  `ttft_p90_s`, `ttft_p99_s`, `itl_p50_s`, `running`, `waiting`, `kv_usage`.

`Collector` keeps what must survive between passes (the previous scrape of each endpoint, for
interval deltas), so a scheduler calls `collect(conn, host)` on it every interval.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agentctl.collectors.gpu.sample import GpuSample, Status
from agentctl.collectors.gpu.smi import SMI_FIELDS, parse_nvidia_smi_q, parse_smi_csv, smi_command
from agentctl.collectors.serving.fetch import FetchError, http_get_over
from agentctl.collectors.serving.scrape import ScrapeState, ServingSample
from agentctl.collectors.store import Sample, Store
from agentctl.ctl.connector import Connector
from agentctl.ctl.errors import AgentctlError
from agentctl.ctl.fanout import Status as FanStatus
from agentctl.ctl.fanout import TaskOutput
from agentctl.ctl.inventory import Host

_STATUS = {
    Status.NOT_SUPPORTED: "not_supported",
    Status.NO_PERMISSION: "error",
    Status.ERROR: "error",
}


@dataclass
class HostCollection:
    """What one pass got from one host: samples for the store and what could not be read."""

    samples: list[Sample] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    gpus: int = 0
    endpoints: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "samples": len(self.samples),
            "gpus": self.gpus,
            "endpoints": self.endpoints,
            "problems": self.problems,
        }


def gpu_samples(node: str, gpus: list[GpuSample], ts: datetime) -> list[Sample]:
    """Store samples of numeric GPU fields (strings such as the name are facts, not series)."""
    out: list[Sample] = []
    for g in gpus:
        for name, reading in g.readings().items():
            if reading.status == Status.NOT_COLLECTED:
                continue
            key = f"gpu{g.index}.{name}"
            if reading.ok:
                v = reading.value
                as_dict = getattr(v, "_asdict", None)  # RemappedRows: one series per part
                parts: dict[str, Any] = as_dict() if callable(as_dict) else {"": v}
                for sub, x in parts.items():
                    if isinstance(x, int | float):  # bools too: pending / failure as 0 / 1
                        out.append(Sample(node, f"{key}.{sub}" if sub else key, ts, float(x)))
            else:
                out.append(Sample(node, key, ts, None, _STATUS.get(reading.status, "error")))
    return out


def serving_samples(node: str, worker: str, s: ServingSample, ts: datetime) -> list[Sample]:
    values: dict[str, float | None] = {
        "kv_hit_rate": s.kv_hit_rate,
        "running": s.requests_running,
        "waiting": s.requests_waiting,
        "kv_usage": s.kv_cache_usage,
    }
    if s.ttft is not None:
        values.update(ttft_p50_s=s.ttft.p50, ttft_p90_s=s.ttft.p90, ttft_p99_s=s.ttft.p99)
    if s.itl is not None:
        values["itl_p50_s"] = s.itl.p50
    return [
        Sample(node, f"serving.{worker}.{k}", ts, float(v))
        for k, v in values.items()
        if v is not None and v == v  # NaN quantiles (empty buckets) are not values
    ]


def _int(vars: Mapping[str, Any], key: str, default: int) -> int:
    try:
        return int(vars.get(key, default))
    except (TypeError, ValueError):
        return default


def store_task(
    collector: Collector, store: Store, got: dict[str, HostCollection]
) -> Callable[[Connector, Host], TaskOutput]:
    """The fan-out task of a collection pass: collect one host, write its samples in one
    transaction (a pass cut short leaves whole hosts), keep what it got in `got`."""

    def task(conn: Connector, host: Host) -> TaskOutput:
        hc = collector.collect(conn, host)
        if hc.samples:
            store.insert_samples(hc.samples)
        got[host.name] = hc
        msg = f"{len(hc.samples)} samples"
        if hc.problems:
            msg += f", {len(hc.problems)} problem(s)"
        return TaskOutput(FanStatus.OK, data=hc.to_dict(), message=msg)

    return task


@dataclass
class Collector:
    """Collection state across passes; `collect` is safe to call from fan-out threads for
    different hosts (each host's scrape state is its own)."""

    timeout: float = 20.0
    _scrapes: dict[str, ScrapeState] = field(default_factory=dict)

    def collect(self, conn: Connector, host: Host) -> HostCollection:
        out = HostCollection()
        ts = datetime.now(UTC)
        self._gpus(conn, host, ts, out)
        self._serving(conn, host, ts, out)
        return out

    def _gpus(self, conn: Connector, host: Host, ts: datetime, out: HostCollection) -> None:
        v = host.vars
        if not (host.expected_gpus or v.get("agentctl_collect_gpus")):
            return
        smi = str(v.get("agentctl_nvidia_smi", "nvidia-smi"))
        if v.get("agentctl_gpu_query", "csv") == "q":
            res = conn.run([smi, "-q"], timeout=self.timeout)
            gpus = parse_nvidia_smi_q(res.stdout).gpus if res.ok else []
        else:
            argv = smi_command(SMI_FIELDS)
            res = conn.run([smi, *argv[1:]], timeout=self.timeout)
            gpus = parse_smi_csv(res.stdout, SMI_FIELDS) if res.ok else []
        if not res.ok:
            why = "not found" if res.exit_status == 127 else f"exit {res.exit_status}"
            out.problems.append(f"nvidia-smi: {why}: {res.stderr.strip()[-200:]}")
            return
        out.gpus = len(gpus)
        out.samples += gpu_samples(host.name, gpus, ts)

    def _serving(self, conn: Connector, host: Host, ts: datetime, out: HostCollection) -> None:
        if "worker" not in host.roles:
            return
        open_tcp = getattr(conn, "open_tcp", None)
        if open_tcp is None:
            out.problems.append("serving: this connection cannot forward ports")
            return
        v = host.vars
        address = str(v.get("agentctl_listen_address") or host.address)
        base = _int(v, "agentctl_worker_base_port", 8001)
        state = self._scrapes.setdefault(host.name, ScrapeState())
        for i in range(_int(v, "agentctl_workers", 1)):
            endpoint = f"{address}:{base + i}"
            try:
                stream = open_tcp(address, base + i, self.timeout)
                status, body = http_get_over(stream, endpoint, "/metrics", self.timeout)
            except (AgentctlError, FetchError, OSError) as exc:
                out.problems.append(f"{endpoint}: {getattr(exc, 'message', exc)}")
                continue
            if status != 200:
                out.problems.append(f"{endpoint}: HTTP {status}")
                continue
            sample = state.worker(endpoint, body.decode("utf-8", "replace"), at=time.time())
            out.endpoints += 1
            out.samples += serving_samples(host.name, f"{host.name}-w{i}", sample, ts)
