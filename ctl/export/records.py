"""Store rows -> neutral, already-redacted rows that every export format projects.

Redaction happens here, once, before any format or cap sees the text: a cap could otherwise
cut a secret in half and leave a piece no pattern recognises. Every free-text string a row
carries has been through `Redactor.text`; a `Scrubber` keeps the per-kind counts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from agentctl.collectors.store import (
    DiagRecord,
    EventView,
    FactSnapshot,
    HostResult,
    NodeView,
    RunRecord,
    Store,
)
from agentctl.ctl.diag.redact import Redactor

KINDS: Final = ("inventory", "events", "diagnostics", "runs")
#: rows read per kind at most; `ExportSummary.capped` says when the store held more
DEFAULT_MAX_ROWS: Final = 100_000
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class Scrubber:
    """Redacts every exported string with one `Redactor`, so its counts cover the export."""

    def __init__(self, redactor: Redactor | None = None) -> None:
        self._r = redactor or Redactor()

    def text(self, value: Any) -> str | None:
        if value is None:
            return None
        return self._r.text(value if isinstance(value, str) else str(value))

    def req(self, value: Any) -> str:
        return self.text(value) or ""

    def key(self, value: Any) -> str:
        """A colon-structured identifier (`xid:0000:06:00:79`), redacted part by part: as a
        whole, five colon-separated fields read as a .pgpass line whose last is a password."""
        text = "" if value is None else str(value)
        return ":".join(self.req(part) for part in text.split(":"))

    @property
    def counts(self) -> dict[str, int]:
        return dict(self._r.counts)


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str | None
    uuid: str | None
    serial: str | None
    pci_bus_id: str | None
    driver_version: str | None
    vbios_version: str | None
    memory_total_mib: int | None


@dataclass(frozen=True)
class Nic:
    name: str
    mac: str | None
    ips: tuple[str, ...]


@dataclass(frozen=True)
class InventoryRow:
    """A node as the inventory and its newest fact snapshot describe it."""

    uid: str
    node: str
    at: datetime
    address: str
    hostname: str | None
    groups: tuple[str, ...]
    roles: tuple[str, ...]
    expected_gpus: int | None
    last_seen: datetime | None
    collected_at: datetime | None
    os_id: str | None
    os_name: str | None
    os_version: str | None
    os_pretty: str | None
    kernel: str | None
    arch: str | None
    cpu_model: str | None
    cpu_sockets: int | None
    cpu_cores: int | None
    cpu_threads: int | None
    memory_bytes: int | None
    driver_version: str | None
    cuda_version: str | None
    nics: tuple[Nic, ...]
    #: None: GPUs were never collected for this node; () means "looked, found none"
    gpus: tuple[Gpu, ...] | None

    @property
    def ips(self) -> tuple[str, ...]:
        return tuple(ip for nic in self.nics for ip in nic.ips)

    @property
    def macs(self) -> tuple[str, ...]:
        return tuple(n.mac for n in self.nics if n.mac)


@dataclass(frozen=True)
class EventRow:
    """An Xid, a failed or warning check, or any other stored event (one folded row)."""

    uid: str
    node: str
    kind: str
    key: str
    code: int | None
    severity: str
    subject: str | None
    message: str
    first_at: datetime
    last_at: datetime
    count: int
    meaning: str | None
    action: str | None
    verdict: str | None
    category: str | None

    @property
    def at(self) -> datetime:
        return self.last_at


@dataclass(frozen=True)
class Finding:
    name: str
    category: str | None
    verdict: str
    reason: str


@dataclass(frozen=True)
class DiagRow:
    """A stored diagnostic report; `findings` are its checks that did not pass."""

    uid: str
    node: str
    kind: str
    at: datetime
    verdict: str
    summary: str
    run_id: int | None
    findings: tuple[Finding, ...]


@dataclass(frozen=True)
class RunRow:
    """One host's result within a run (a run that never heard from a host has no row)."""

    uid: str
    run_id: int
    run_kind: str
    command: str | None
    selection: str | None
    run_status: str
    started_at: datetime
    finished_at: datetime | None
    host: str
    status: str
    exit_status: int | None
    duration_s: float
    error_kind: str | None
    error_message: str | None
    attempts: int
    stdout: str
    stderr: str

    @property
    def node(self) -> str:
        return self.host

    @property
    def at(self) -> datetime:
        return self.finished_at or self.started_at


Row = InventoryRow | EventRow | DiagRow | RunRow


def iso(moment: datetime) -> str:
    """RFC 3339 UTC, millisecond precision, trailing Z: what ECS and Elastic parse natively."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def epoch_ms(moment: datetime) -> int:
    return int((moment.astimezone(UTC) - _EPOCH).total_seconds() * 1000)


# -- facts ----------------------------------------------------------------------------------


def _family(facts: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = facts.get(name)
    return value if isinstance(value, Mapping) else {}


def _int(value: Any) -> int | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _gpus(facts: Mapping[str, Any], view: NodeView, s: Scrubber) -> tuple[Gpu, ...] | None:
    items = _family(facts, "gpus").get("gpus")
    if not isinstance(items, list):  # not in this snapshot: fall back to the names we know
        if view.gpu_count is None:
            return None
        names = [*view.gpu_names, *[None] * max(0, view.gpu_count - len(view.gpu_names))]
        return tuple(
            Gpu(i, s.text(n), None, None, None, view.driver_version, None, None)
            for i, n in enumerate(names)
        )
    out: dict[int, Gpu] = {}
    for position, item in enumerate(items):
        if not isinstance(item, Mapping):
            continue
        index = _int(item.get("index"))
        index = position if index is None else index
        out[index] = Gpu(
            index=index,
            name=s.text(item.get("name")),
            uuid=s.text(item.get("uuid")),
            serial=s.text(item.get("serial")),
            pci_bus_id=s.text(item.get("pci_bus_id")),
            driver_version=s.text(item.get("driver_version")),
            vbios_version=s.text(item.get("vbios_version")),
            memory_total_mib=_int(item.get("memory_total_mib")),
        )
    return tuple(out[i] for i in sorted(out))


def _nics(facts: Mapping[str, Any], s: Scrubber) -> tuple[Nic, ...]:
    """Interfaces with a real MAC or a global address; loopback says nothing about a host."""
    out = []
    ifaces = _family(facts, "nics").get("interfaces")
    for item in ifaces if isinstance(ifaces, list) else []:
        if not isinstance(item, Mapping) or item.get("name") in (None, "", "lo"):
            continue
        ips = []
        for addr in item.get("addresses") or []:
            if isinstance(addr, Mapping) and addr.get("scope") in (None, "global"):
                text = s.text(addr.get("address"))
                if text:
                    ips.append(text)
        mac = s.text(item.get("mac"))
        mac = None if mac in (None, "00:00:00:00:00:00") else mac
        if mac or ips:
            out.append(Nic(s.req(item.get("name")), mac, tuple(ips)))
    return tuple(out)


def inventory_row(view: NodeView, snap: FactSnapshot | None, s: Scrubber) -> InventoryRow:
    facts: Mapping[str, Any] = snap.facts if snap else {}
    os_f, cpu, mem = _family(facts, "os"), _family(facts, "cpu"), _family(facts, "memory")
    nvidia = _family(facts, "nvidia")
    collected = snap.collected_at if snap else None
    at = collected or view.last_seen or _EPOCH
    gpus = _gpus(facts, view, s)
    driver = nvidia.get("driver_version") or view.driver_version
    if driver is None and gpus:
        driver = next((g.driver_version for g in gpus if g.driver_version), None)
    node = s.req(view.name)
    return InventoryRow(
        uid=f"inventory/{node}/{iso(at)}",
        node=node,
        at=at,
        address=s.req(view.address),
        hostname=s.text(os_f.get("hostname")),
        groups=tuple(s.req(g) for g in view.groups),
        roles=tuple(s.req(r) for r in view.roles),
        expected_gpus=view.expected_gpus,
        last_seen=view.last_seen,
        collected_at=collected,
        os_id=s.text(os_f.get("id")),
        os_name=s.text(os_f.get("name")),
        os_version=s.text(os_f.get("version_id")),
        os_pretty=s.text(os_f.get("pretty_name") or view.os),
        kernel=s.text(_family(facts, "kernel").get("release") or view.kernel),
        arch=s.text(os_f.get("architecture")),
        cpu_model=s.text(cpu.get("model_name")),
        cpu_sockets=_int(cpu.get("sockets")),
        cpu_cores=_int(cpu.get("cores")),
        cpu_threads=_int(cpu.get("threads")),
        memory_bytes=_int(mem.get("total_bytes")),
        driver_version=s.text(driver),
        cuda_version=s.text(nvidia.get("cuda_version")),
        nics=_nics(facts, s),
        gpus=gpus,
    )


# -- events, diagnostics, runs ------------------------------------------------------------


def event_row(ev: EventView, s: Scrubber) -> EventRow:
    data = ev.data or {}
    node, kind, key = s.req(ev.node), s.req(ev.kind), s.key(ev.key)
    return EventRow(
        uid=f"event/{node}/{kind}/{key}/{iso(ev.first_at)}",
        node=node,
        kind=kind,
        key=key,
        code=ev.code,
        severity=s.req(ev.severity),
        subject=None if ev.subject is None else s.key(ev.subject),
        message=s.req(ev.message),
        first_at=ev.first_at,
        last_at=ev.last_at,
        count=ev.count,
        meaning=s.text(data.get("meaning")),
        action=s.text(data.get("action")),
        verdict=s.text(data.get("verdict")),
        category=s.text(data.get("category")),
    )


def _findings(data: Mapping[str, Any], s: Scrubber) -> tuple[Finding, ...]:
    checks = data.get("checks")
    out = []
    for c in checks if isinstance(checks, list) else []:
        if isinstance(c, Mapping) and c.get("verdict") in ("fail", "warn"):
            out.append(
                Finding(
                    name=s.req(c.get("name")),
                    category=s.text(c.get("category")),
                    verdict=s.req(c.get("verdict")),
                    reason=s.req(c.get("reason")),
                )
            )
    return tuple(out)


def diag_row(rec: DiagRecord, s: Scrubber) -> DiagRow:
    node, kind = s.req(rec.node), s.req(rec.kind)
    return DiagRow(
        uid=f"diag/{node}/{kind}/{iso(rec.created_at)}",
        node=node,
        kind=kind,
        at=rec.created_at,
        verdict=s.req(rec.verdict),
        summary=s.req(rec.summary),
        run_id=rec.run_id,
        findings=_findings(rec.data or {}, s),
    )


def run_rows_of(run: RunRecord, s: Scrubber) -> list[RunRow]:
    def row(r: HostResult) -> RunRow:
        host = s.req(r.host)
        return RunRow(
            uid=f"run/{run.id}/{host}",
            run_id=run.id,
            run_kind=s.req(run.kind),
            command=s.text(run.command),
            selection=s.text(run.selection),
            run_status=s.req(run.status),
            started_at=run.started_at,
            finished_at=run.finished_at,
            host=host,
            status=s.req(r.status),
            exit_status=r.exit_status,
            duration_s=r.duration_s,
            error_kind=s.text(r.error_kind),
            error_message=s.text(r.error_message),
            attempts=r.attempts,
            stdout=s.req(r.stdout),
            stderr=s.req(r.stderr),
        )

    return [row(r) for r in run.results]


# -- readers: one per kind, oldest first -------------------------------------------------


@dataclass(frozen=True)
class Rows:
    """What a reader found: rows oldest first, and whether the row cap may have hidden more."""

    rows: list[Row]
    capped: bool = False


def inventory_rows(
    store: Store, since: datetime | None = None, *, scrub: Scrubber | None = None
) -> Rows:
    """Every node (with `since`: seen since then), with its newest facts."""
    s = scrub or Scrubber()
    views = [v for v in store.list_nodes() if since is None or (v.last_seen or _EPOCH) >= since]
    return Rows([inventory_row(v, store.latest_facts(v.name), s) for v in views])


def event_rows(
    store: Store,
    since: datetime | None = None,
    *,
    scrub: Scrubber | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> Rows:
    """Events (Xids, failed and warning checks...) whose last occurrence is at or after `since`."""
    s = scrub or Scrubber()
    found = store.list_events(since=since, limit=max_rows)
    rows: list[Row] = [event_row(e, s) for e in sorted(found, key=lambda e: (e.last_at, e.id))]
    return Rows(rows, capped=len(found) >= max_rows)


def diagnostic_rows(
    store: Store,
    since: datetime | None = None,
    *,
    scrub: Scrubber | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> Rows:
    """Diagnostic reports created at or after `since`."""
    s = scrub or Scrubber()
    found = store.list_diag(limit=max_rows)
    kept = [d for d in found if since is None or d.created_at >= since]
    rows: list[Row] = [diag_row(d, s) for d in sorted(kept, key=lambda d: (d.created_at, d.id))]
    return Rows(rows, capped=len(found) >= max_rows)


def run_rows(
    store: Store,
    since: datetime | None = None,
    *,
    scrub: Scrubber | None = None,
    max_runs: int = 10_000,
) -> Rows:
    """Per-host results of runs started at or after `since`."""
    s = scrub or Scrubber()
    found = store.list_runs(limit=max_runs)
    kept = sorted((r for r in found if since is None or r.started_at >= since), key=lambda r: r.id)
    rows: list[Row] = [row for run in kept for row in run_rows_of(run, s)]
    return Rows(rows, capped=len(found) >= max_runs)


def read_rows(
    store: Store, kind: str, since: datetime | None = None, *, scrub: Scrubber | None = None
) -> Rows:
    if kind == "inventory":
        return inventory_rows(store, since, scrub=scrub)
    if kind == "events":
        return event_rows(store, since, scrub=scrub)
    if kind == "diagnostics":
        return diagnostic_rows(store, since, scrub=scrub)
    if kind == "runs":
        return run_rows(store, since, scrub=scrub)
    raise ValueError(f"unknown export kind {kind!r}")
