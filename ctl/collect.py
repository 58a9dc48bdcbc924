"""One collection pass over one host, agentlessly: GPUs through `nvidia-smi`, the serving
stack's `/metrics` through an SSH port forward (nothing new is exposed on the node), turned
into store samples.

Series names (what the exporter and the dashboards read):

- `gpu<i>.<field>`: a `GpuSample` attribute (`temperature_c`, `power_draw_w`,
  `memory_used_bytes`...); a field the GPU does not support is stored as `not_supported`,
  one that failed as `error`, never as a number;
- `serving.<worker id>.<field>` for each engine worker (`<host>-w<i>`, as `deploy` names
  them): `kv_hit_rate` (absent when the interval had no queries), `ttft_p50_s`,
  `ttft_p90_s`, `ttft_p99_s`, `itl_p50_s`, `running`, `waiting`, `kv_usage`, `requests`
  (first tokens in the interval), and `time_scale` where the worker's `/health` reports one
  (agentctl's simulated engines: their latencies are wall time of a model run that much
  faster than the GPU it models);
- `node.gpu_count` and the roll-ups below: the GPUs one pass saw, labelled like them;

- `host.<field>` for every node, whatever its role: `cpu_util_pct` (over the interval since
  the last pass), `mem_used_pct`, `mem_used_bytes`, `mem_total_bytes`, `load1`, `load5`,
  `load15`, `cpus`, `disk_used_pct`, `disk_used_bytes`, `disk_total_bytes` (the root
  filesystem), from /proc and df (collectors/host/parse.py);
- `collect.interval_s`: the host's collection interval (its `agentctl_collect_interval`, the
  scheduler's, else the spacing since this collector's previous pass of the host), so readers
  judge staleness against it.

A node whose inventory says `agentctl_gpu_replay: <set>` has replayed GPUs: its deployed venv
prints frames of a recording shipped in the package (collectors/gpu/recorded.py) instead of
running nvidia-smi, the frame's phase following the node's serving load in this pass (idle or
load), and its recorded kernel log stands for journald. Every such sample is stored with the
source label `replay:<set>` and every such event says `replayed`, so no reader can take them
for a real GPU.

Xid events come from the kernel log, read incrementally (journald's cursor, or the last
`dmesg` line seen) and stored de-duplicated per GPU and code (`Store.record_events`); the cursor
is saved in the same transaction as the events, so a pass cut short re-reads rather than loses.

`Collector` keeps what must survive between passes (the previous scrape of each endpoint, for
interval deltas; each host's kernel-log cursor), so a scheduler calls `collect(conn, host)` on
it every interval.
"""

from __future__ import annotations

import json
import shlex
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agentctl.collectors.gpu import recorded
from agentctl.collectors.gpu.sample import GpuSample, Status, node_sample_from_json
from agentctl.collectors.gpu.smi import SMI_FIELDS, parse_nvidia_smi_q, parse_smi_csv, smi_command
from agentctl.collectors.gpu.xid import (
    XidCursor,
    XidEvent,
    dedup_key,
    read_xids,
    xid_command,
    xid_time,
)
from agentctl.collectors.host import parse as host_parse
from agentctl.collectors.serving.fetch import FetchError, http_get_over
from agentctl.collectors.serving.scrape import ScrapeState, ServingSample
from agentctl.collectors.store import EventRecord, Sample, Store
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
    events: list[EventRecord] = field(default_factory=list)
    #: where this pass's kernel-log read stopped (None: nothing read)
    xid_cursor: XidCursor | None = None
    #: `replay:<set>` when the GPUs were replayed (None: measured, or no GPU read)
    gpu_source: str | None = None
    #: the node's workers served requests in this pass's interval (drives a replay's phase)
    serving_busy: bool = False
    host_metrics: int = 0

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "samples": len(self.samples),
            "gpus": self.gpus,
            "endpoints": self.endpoints,
            "host_metrics": self.host_metrics,
            "xid_events": len(self.events),
            "problems": self.problems,
        }
        if self.gpu_source:
            out["gpu_source"] = self.gpu_source
        return out


def gpu_samples(
    node: str, gpus: list[GpuSample], ts: datetime, source: str | None = None
) -> list[Sample]:
    """Store samples of numeric GPU fields (strings such as the name are facts, not series);
    `source` labels them (`replay:<set>` for a replayed GPU)."""
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
                        name = f"{key}.{sub}" if sub else key
                        out.append(Sample(node, name, ts, float(x), source=source))
            else:
                status = _STATUS.get(reading.status, "error")
                out.append(Sample(node, key, ts, None, status, source=source))
    return out


#: node-level roll-ups written with each GPU pass, so fleet views read 4 series, not 4 x GPUs
NODE_SERIES = (
    "node.gpu_count",
    "node.gpu_util_avg",
    "node.gpu_mem_used_pct",
    "node.gpu_temp_max",
    "node.gpu_power_w",
)


def node_gpu_samples(
    node: str, gpus: list[GpuSample], ts: datetime, source: str | None = None
) -> list[Sample]:
    """Mean utilisation, memory used (% of all GPU memory), hottest GPU and total power; a
    roll-up is absent when no GPU gave that field (GB10's memory, for one)."""

    def values(field: str) -> list[float]:
        out = []
        for g in gpus:
            r = getattr(g, field)
            if r.ok and isinstance(r.value, int | float):
                out.append(float(r.value))
        return out

    util, temp, power = (
        values("utilization_gpu_pct"),
        values("temperature_c"),
        values("power_draw_w"),
    )
    used, total = values("memory_used_bytes"), values("memory_total_bytes")
    got: dict[str, float | None] = {
        "node.gpu_count": float(len(gpus)),
        "node.gpu_util_avg": sum(util) / len(util) if util else None,
        "node.gpu_mem_used_pct": 100.0 * sum(used) / sum(total)
        if used and total and len(used) == len(total) and sum(total) > 0
        else None,
        "node.gpu_temp_max": max(temp) if temp else None,
        "node.gpu_power_w": sum(power) if power else None,
    }
    return [Sample(node, k, ts, v, source=source) for k, v in got.items() if v is not None]


def host_samples(node: str, reading: host_parse.HostReading, ts: datetime) -> list[Sample]:
    return [Sample(node, f"host.{k}", ts, v) for k, v in reading.values().items()]


def serving_samples(
    node: str, worker: str, s: ServingSample, ts: datetime, time_scale: float | None = None
) -> list[Sample]:
    values: dict[str, float | None] = {
        "kv_hit_rate": s.kv_hit_rate,
        "running": s.requests_running,
        "waiting": s.requests_waiting,
        "kv_usage": s.kv_cache_usage,
        "requests": s.ttft.count if s.ttft is not None else (0.0 if s.interval_s else None),
        "time_scale": time_scale,
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


def _replay(host: Host) -> recorded.ReplaySet | None:
    """The replay set the inventory gives the host (`agentctl_gpu_replay`), if any; an unknown
    name is an error, never a silent fall back to "no GPU"."""
    name = host.vars.get("agentctl_gpu_replay")
    if not name:
        return None
    try:
        return recorded.replay_set(str(name))
    except recorded.ReplayError as exc:
        raise AgentctlError(f"{host.name}: agentctl_gpu_replay: {exc}") from None


def _node_python(host: Host) -> list[str]:
    """The deployed venv's interpreter on the node (`agentctl_python` overrides)."""
    v = host.vars
    root = str(v.get("agentctl_install_root", "/opt/agentctl"))
    return [str(v.get("agentctl_python") or f"{root}/venv/bin/python")]


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
        if hc.xid_cursor is not None:
            value = encode_cursor(hc.xid_cursor)
            store.record_events(hc.events, cursor=(host.name, XID_SOURCE, value))
            collector.advance(host.name, hc.xid_cursor)
        got[host.name] = hc
        msg = f"{len(hc.samples)} samples"
        if hc.problems:
            msg += f", {len(hc.problems)} problem(s)"
        return TaskOutput(FanStatus.OK, data=hc.to_dict(), message=msg)

    return task


XID_SOURCE = "xid"
#: what one kernel-log read may bring back (a first read takes the whole boot's kernel log)
KERNEL_LOG_CAP = 16 * 1024 * 1024
_NO_JOURNAL = ("No journal files were found", "No journal files were opened")


def encode_cursor(cursor: XidCursor) -> str:
    return json.dumps({"journal": cursor.journal, "line": cursor.last_line_sha})


def decode_cursor(value: str | None) -> XidCursor | None:
    try:
        d = json.loads(value) if value else None
    except ValueError:
        return None
    if not isinstance(d, dict):
        return None
    return XidCursor(journal=d.get("journal") or None, last_line_sha=d.get("line") or None)


def xid_records(
    node: str, events: list[XidEvent], *, now: datetime, boot_time: datetime | None
) -> list[EventRecord]:
    """Store events for Xids; an unknown stamp (`[seconds]` without a boot time) is dated
    at collection time and says so."""
    out = []
    for ev in events:
        at = xid_time(ev.time, now=now, boot_time=boot_time)
        info = ev.info
        data: dict[str, Any] = {"meaning": info.meaning, "action": info.action, "stamp": ev.time}
        if ev.pid is not None:
            data["pid"] = ev.pid
        if ev.process:
            data["process"] = ev.process
        if at is None:
            data["time_known"] = False
        out.append(
            EventRecord(
                node=node,
                kind="xid",
                key=dedup_key(ev),
                at=at or now,
                severity=info.severity,
                message=ev.message,
                code=ev.xid,
                subject=ev.pci_bus_id,
                data=data,
            )
        )
    return out


@dataclass
class Collector:
    """Collection state across passes; `collect` is safe to call from fan-out threads for
    different hosts (each host's scrape state is its own). With a store, a host's kernel-log
    cursor survives restarts."""

    timeout: float = 20.0
    store: Store | None = None
    #: the scheduler's interval between passes (None: unknown, e.g. `--once`)
    interval_s: float | None = None
    _scrapes: dict[str, ScrapeState] = field(default_factory=dict)
    _cpu: dict[str, host_parse.CpuTimes] = field(default_factory=dict)
    _last_pass: dict[str, float] = field(default_factory=dict)  # host -> monotonic time
    _passes: dict[str, int] = field(default_factory=dict)  # host -> passes so far
    _cursors: dict[str, XidCursor] = field(default_factory=dict)
    _dmesg: set[str] = field(default_factory=set)  # hosts whose kernel log is not in journald
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def collect(self, conn: Connector, host: Host) -> HostCollection:
        out = HostCollection()
        ts = datetime.now(UTC)
        self._interval(host, ts, out)
        self._host(conn, host, ts, out)
        self._serving(conn, host, ts, out)  # first: a replayed GPU's phase follows it
        self._gpus(conn, host, ts, out)
        self._xids(conn, host, ts, out)
        return out

    def _interval(self, host: Host, ts: datetime, out: HostCollection) -> None:
        now = time.monotonic()
        with self._lock:
            last = self._last_pass.get(host.name)
            self._last_pass[host.name] = now
            self._passes[host.name] = self._passes.get(host.name, 0) + 1
        configured = host.vars.get("agentctl_collect_interval")
        try:
            every = float(configured) if configured is not None else self.interval_s
        except (TypeError, ValueError):
            every = self.interval_s
        if every is None and last is not None:
            every = now - last
        if every is not None and every > 0:
            out.samples.append(Sample(host.name, "collect.interval_s", ts, round(every, 3)))

    def _host(self, conn: Connector, host: Host, ts: datetime, out: HostCollection) -> None:
        """CPU, memory, load and root-disk use from /proc and df: every node has them."""
        with self._lock:
            before = self._cpu.get(host.name)
        res = conn.run_shell(host_parse.script(first=before is None), timeout=self.timeout)
        if not res.ok:
            out.problems.append(f"host metrics: exit {res.exit_status}: "
                                f"{res.stderr.strip()[-200:]}")  # fmt: skip
            return
        reading = host_parse.parse(res.stdout, before)
        if reading.cpu is not None:
            with self._lock:
                self._cpu[host.name] = reading.cpu
        got = host_samples(host.name, reading, ts)
        out.host_metrics = len(got)
        out.samples += got

    def advance(self, host: str, cursor: XidCursor) -> None:
        """Take a cursor as the start of the next read, once its events are stored."""
        with self._lock:
            self._cursors[host] = cursor

    def _cursor(self, host: str) -> XidCursor | None:
        with self._lock:
            known = self._cursors.get(host)
        if known is None and self.store is not None:
            known = decode_cursor(self.store.get_cursor(host, XID_SOURCE))
        return known

    def _xids(self, conn: Connector, host: Host, ts: datetime, out: HostCollection) -> None:
        v = host.vars
        if not (host.expected_gpus or v.get("agentctl_collect_gpus") or _replay(host)):
            return
        cursor = self._cursor(host.name)
        rset = _replay(host)
        if rset is not None:
            # the recorded kernel log stands for journald; the whole file each time, so the
            # last line seen is the cursor (as for dmesg)
            res = conn.run([*_node_python(host), "-m", "agentctl.collectors.gpu", "replay",
                            "kernel-log", rset.name], timeout=self.timeout,
                           output_cap=KERNEL_LOG_CAP)  # fmt: skip
            if not res.ok:
                out.problems.append(f"kernel log (replayed {rset.name}): exit "
                                    f"{res.exit_status}: {res.stderr.strip()[-200:]}")  # fmt: skip
                return
            self._take_xids(host.name, res.stdout, cursor if cursor and not cursor.journal
                            else None, ts, None, out, replayed=rset)  # fmt: skip
            return
        if host.name not in self._dmesg:
            argv = xid_command(cursor if cursor and cursor.journal else None)
            argv[0] = str(v.get("agentctl_journalctl", "journalctl"))
            res = conn.run(argv, timeout=self.timeout, output_cap=KERNEL_LOG_CAP)
            no_journal = any(m in res.stdout + res.stderr for m in _NO_JOURNAL)
            if res.ok and not no_journal:  # no new lines: no cursor line either
                self._take_xids(host.name, res.stdout, cursor, ts, None, out)
                return
            if res.exit_status != 127 and not no_journal:
                out.problems.append(f"kernel log: journalctl exit {res.exit_status}: "
                                    f"{res.stderr.strip()[-200:]}")  # fmt: skip
                return
            self._dmesg.add(host.name)  # no journald kernel log here: dmesg from now on
            cursor = cursor if cursor and not cursor.journal else None
        dmesg = shlex.quote(str(v.get("agentctl_dmesg", "dmesg")))
        btime = "awk '/^btime/{print $2}' /proc/stat"
        script = f"{dmesg} && printf -- '-- btime %s\\n' \"$({btime})\""
        res = conn.run_shell(script, timeout=self.timeout, output_cap=KERNEL_LOG_CAP)
        if not res.ok:
            out.problems.append(f"kernel log: dmesg exit {res.exit_status}: "
                                f"{res.stderr.strip()[-200:]}")  # fmt: skip
            return
        boot = None
        for line in reversed(res.stdout.splitlines()):
            if line.startswith("-- btime ") and line[9:].strip().isdigit():
                boot = datetime.fromtimestamp(int(line[9:].strip()), UTC)
                break
        self._take_xids(host.name, res.stdout, cursor, ts, boot, out)

    def _take_xids(
        self,
        node: str,
        text: str,
        cursor: XidCursor | None,
        ts: datetime,
        boot: datetime | None,
        out: HostCollection,
        replayed: recorded.ReplaySet | None = None,
    ) -> None:
        events, nxt = read_xids(text, cursor)
        out.events = xid_records(node, events, now=ts, boot_time=boot)
        if replayed is not None:
            for ev in out.events:
                ev.data.update(replayed=replayed.name, source=replayed.source,
                               note=replayed.kernel_log_note)  # fmt: skip
        out.xid_cursor = nxt

    def _gpus(self, conn: Connector, host: Host, ts: datetime, out: HostCollection) -> None:
        v = host.vars
        rset = _replay(host)
        if rset is not None:
            self._replayed(conn, host, rset, ts, out)
            return
        if not (host.expected_gpus or v.get("agentctl_collect_gpus")):
            return
        if v.get("agentctl_gpu_query") == "nvml":
            self._nvml(conn, host, ts, out)
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
        out.samples += gpu_samples(host.name, gpus, ts) + node_gpu_samples(host.name, gpus, ts)

    def _replayed(
        self, conn: Connector, host: Host, rset: recorded.ReplaySet, ts: datetime,
        out: HostCollection,
    ) -> None:  # fmt: skip
        """A frame of the set's recorded GPU from the node's venv: the load phase when the
        node's workers served requests in this interval, idle otherwise; frame = pass count."""
        with self._lock:
            k = self._passes.get(host.name, 1) - 1
        phase = "load" if out.serving_busy else "idle"
        argv = [*_node_python(host), "-m", "agentctl.collectors.gpu", "replay", "sample",
                rset.name, "--phase", phase, "--frame", str(k)]  # fmt: skip
        self._node_sample(conn, argv, host, ts, out, rset.source, f"replayed {rset.name}")

    def _nvml(self, conn: Connector, host: Host, ts: datetime, out: HostCollection) -> None:
        """NVML on the node, through the deployed venv's `python -m agentctl.collectors.gpu`."""
        v = host.vars
        argv = [*_node_python(host), "-m", "agentctl.collectors.gpu", "sample"]
        source = None
        if v.get("agentctl_nvml_replay"):
            argv += ["--replay", str(v["agentctl_nvml_replay"])]
            name = str(v["agentctl_nvml_replay"]).rsplit("/", 1)[-1]
            source = (recorded.SOURCE_PREFIX + "file:" + name)[:64]
        self._node_sample(conn, argv, host, ts, out, source, "nvml")

    def _node_sample(
        self, conn: Connector, argv: list[str], host: Host, ts: datetime, out: HostCollection,
        source: str | None, what: str,
    ) -> None:  # fmt: skip
        """Run a node-side sampler that prints a NodeGpuSample as JSON; store its GPUs."""
        res = conn.run(argv, timeout=self.timeout, output_cap=KERNEL_LOG_CAP)
        try:
            doc = json.loads(res.stdout) if res.stdout.strip() else {}
        except ValueError:
            doc = {}
        if not res.ok or not isinstance(doc, dict) or "gpus" not in doc:
            why = doc.get("error") if isinstance(doc, dict) and doc.get("error") else None
            why = why or ("not found" if res.exit_status == 127 else f"exit {res.exit_status}")
            detail = (doc.get("detail") if isinstance(doc, dict) else None) or res.stderr
            out.problems.append(f"{what}: {why}: {str(detail).strip()[-200:]}")
            return
        node = node_sample_from_json(doc)
        if (
            source is not None
            and node.source != source
            and not source.startswith(recorded.SOURCE_PREFIX + "file:")
        ):
            out.problems.append(f"{what}: the node answered for {node.source!r}, not {source!r}")
            return
        out.gpus = len(node.gpus)
        out.gpu_source = source
        out.samples += gpu_samples(host.name, node.gpus, ts, source)
        out.samples += node_gpu_samples(host.name, node.gpus, ts, source)

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
            served = sample.ttft.count if sample.ttft is not None else 0.0
            if served > 0 or (sample.requests_running or 0) > 0:
                out.serving_busy = True
            scale = self._time_scale(open_tcp, address, base + i, endpoint)
            out.samples += serving_samples(host.name, f"{host.name}-w{i}", sample, ts, scale)

    def _time_scale(
        self, open_tcp: Callable[..., Any], address: str, port: int, endpoint: str
    ) -> float | None:
        """A simulated engine's `time_scale` from its `/health` JSON (None for an engine that
        reports none, such as vLLM, whose times are real)."""
        try:
            stream = open_tcp(address, port, self.timeout)
            status, body = http_get_over(stream, endpoint, "/health", self.timeout)
            doc = json.loads(body.decode("utf-8", "replace")) if status == 200 else None
        except (AgentctlError, FetchError, OSError, ValueError):
            return None
        scale = doc.get("time_scale") if isinstance(doc, dict) else None
        if isinstance(scale, bool) or not isinstance(scale, int | float):
            return None
        return float(scale) if 0 < scale <= 1e6 else None
