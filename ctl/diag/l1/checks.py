"""L1 verdicts: probe results in, one `CheckResult` per check out (`pass|warn|fail|skip`).

Rules shared by every check:

- A probe that did not give data makes its check `skip`, with the probe's status in the reason,
  unless not getting the data is itself the symptom: nvidia-smi timing out on a GPU host
  (`fail`: it hangs after Xid 79), df timing out (`warn`: a hung mount), the health endpoints
  timing out (`fail`).
- Hosts without GPUs (none expected by the inventory, none on the PCI bus, no driver) get every
  GPU check as `skip`, never `fail`; a field a GPU reports as N/A (GB10: power limit, ECC, PCIe)
  is `skip` for that GPU with the reason, not a failure.
- `evaluate` never raises: a bug in one check turns into that check's `warn` naming the error.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from agentctl.collectors.gpu.sample import GpuSample, Reading, Status, decode_clock_reasons
from agentctl.collectors.gpu.smi import parse_nvidia_smi_q
from agentctl.collectors.gpu.xid import XID_CATALOG, XidEvent, XidInfo
from agentctl.ctl.diag.l1 import parse as P
from agentctl.ctl.diag.l1.context import L1Context
from agentctl.ctl.diag.l1.probes import L1_SMI_FIELDS, TIMEOUT
from agentctl.ctl.diag.l1.thresholds import L1Thresholds
from agentctl.ctl.diag.probe import ProbeResult, ProbeStatus
from agentctl.ctl.facts import disks, memory, nvidia, pci
from agentctl.ctl.facts._common import to_int
from agentctl.ctl.facts.kernel import decode_taint

Verdict = Literal["pass", "warn", "fail", "skip"]
Category = Literal["system", "network", "gpu", "serving"]
_RANK: dict[str, int] = {"skip": -1, "pass": 0, "warn": 1, "fail": 2}
_MAX_ITEMS = 16  # evidence lists are cut here, with a count of what was left out

#: Filesystems backed by a disk or a network share: read-only there means trouble.
DISK_FSTYPES = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "f2fs", "jfs", "reiserfs", "vfat", "exfat"}
    | {"nfs", "nfs4", "cifs", "smb3", "lustre", "gpfs", "beegfs", "ceph", "glusterfs"}
)


@dataclass(frozen=True)
class CheckResult:
    name: str
    category: Category
    verdict: Verdict
    reason: str  # one sentence a person can act on
    evidence: dict[str, Any] = field(default_factory=dict)  # small and bounded
    probes: dict[str, str] = field(default_factory=dict)  # probe name -> its status

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "category": self.category,
            "verdict": self.verdict,
            "reason": self.reason,
            "evidence": self.evidence,
            "probes": self.probes,
        }


_ORDER: tuple[Verdict, ...] = ("fail", "warn", "pass")


def worst(verdicts: Iterable[str]) -> Verdict:
    """The worst of pass < warn < fail; skips count only when nothing else was judged."""
    seen = set(verdicts)
    return next((v for v in _ORDER if v in seen), "skip")


def overall(checks: Sequence[CheckResult]) -> Verdict:
    """The host's verdict: its worst check, skips ignored (`skip` only if all were skipped)."""
    return worst(c.verdict for c in checks)


# -- probe access -----------------------------------------------------------------------------

Outcome = tuple[Verdict, str, dict[str, Any]]


class _Probes:
    def __init__(self, results: Mapping[str, ProbeResult]) -> None:
        self._r = results

    def get(self, name: str) -> ProbeResult | None:
        r = self._r.get(name)
        return r if isinstance(r, ProbeResult) else None

    def status(self, name: str) -> str:
        r = self.get(name)
        return "not_run" if r is None else str(r.status.value)

    def text(self, name: str) -> str | None:
        """The output when it is data: `ok`, or a non-zero exit that still printed (df exits 1
        and says "Permission denied" when one mount is unreadable, nvidia-smi exits 15 when one
        GPU of eight is lost). Timed-out output is never used: it may stop anywhere."""
        r = self.get(name)
        if r is None:
            return None
        partial = (ProbeStatus.FAILED, ProbeStatus.PERMISSION_DENIED)
        if r.status == ProbeStatus.OK or (r.status in partial and r.output.strip()):
            return r.output
        return None

    def all_text(self, name: str) -> str:
        """stdout and stderr, whatever the status: for failure messages."""
        r = self.get(name)
        return "" if r is None else f"{r.output}\n{r.stderr}"

    def why(self, name: str) -> str:
        """`df: timeout` style, for reasons."""
        r = self.get(name)
        if r is None:
            return f"{name}: not run"
        extra = f" (exit {r.exit_status})" if r.status == ProbeStatus.FAILED else ""
        return f"{name}: {r.status.value}{extra}"

    def timed_out(self, name: str) -> bool:
        r = self.get(name)
        return r is not None and (r.status == ProbeStatus.TIMEOUT or r.timed_out)


def _cut(items: Sequence[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"items": list(items[:_MAX_ITEMS])}
    if len(items) > _MAX_ITEMS:
        out["left_out"] = len(items) - _MAX_ITEMS
    return out


def _n(count: int, noun: str) -> str:
    """`1 GPU`, `8 GPUs`."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _pct(part: float, whole: float) -> float:
    return round(100.0 * part / whole, 1) if whole > 0 else 0.0


def _band(value: float, warn_at: float, fail_at: float) -> Verdict:
    return "fail" if value >= fail_at else "warn" if value >= warn_at else "pass"


def _band_low(value: float, warn_below: float, fail_below: float) -> Verdict:
    return "fail" if value < fail_below else "warn" if value < warn_below else "pass"


def _skip(p: _Probes, *names: str) -> Outcome:
    return "skip", "No data: " + ", ".join(p.why(n) for n in names) + ".", {}


# -- system -----------------------------------------------------------------------------------


@dataclass
class _Env:
    p: _Probes
    ctx: L1Context
    t: L1Thresholds

    @cached_property
    def filesystems(self) -> list[dict[str, Any]] | None:
        df = self.p.text("df")
        if df is None:
            return None
        mounts = P.mounts_for_facts(P.parse_mounts(self.p.text("mounts") or ""))
        raw = f"@@df\n{df}\n@@dfi\n{self.p.text('df_inodes') or ''}\n@@mounts\n{mounts}"
        return [fs for fs in disks.parse(raw)["filesystems"] if not fs["pseudo"]]

    @cached_property
    def gpu(self) -> _Gpu:
        return _Gpu.build(self.p, self.ctx)


def _df_missing(p: _Probes) -> Outcome:
    if p.timed_out("df"):
        return (
            "warn",
            f"df did not finish within {TIMEOUT:g} s: a network or failing mount may hang.",
            {},
        )
    return _skip(p, "df")


def check_disk_space(env: _Env) -> Outcome:
    fss = env.filesystems
    if fss is None:
        return _df_missing(env.p)
    t = env.t
    rows = []
    for fs in fss:
        used, avail = fs["used_bytes"], fs["avail_bytes"]
        if used is None or avail is None or used + avail <= 0:
            continue
        pct = _pct(used, used + avail)
        rows.append({"mount": fs["mountpoint"], "used_pct": pct, "avail_bytes": avail})
    if not rows:
        return "skip", "df listed no disk-backed filesystem.", {}
    rows.sort(key=lambda r: -float(r["used_pct"]))
    top = rows[0]
    verdict = _band(top["used_pct"], t.disk_used_warn_pct, t.disk_used_fail_pct)
    full = [r for r in rows if r["used_pct"] >= t.disk_used_warn_pct]
    ev = {
        "filesystems": _cut(rows),
        "warn_pct": t.disk_used_warn_pct,
        "fail_pct": t.disk_used_fail_pct,
    }
    if verdict == "pass":
        return (
            verdict,
            f"{_n(len(rows), 'filesystem')} below {t.disk_used_warn_pct:g}% used "
            f"(fullest: {top['mount']} at {top['used_pct']:g}%).",
            ev,
        )
    names = ", ".join(f"{r['mount']} {r['used_pct']:g}%" for r in full[:4])
    return verdict, f"Filesystem space nearly exhausted: {names}.", ev


def check_disk_inodes(env: _Env) -> Outcome:
    fss = env.filesystems
    if fss is None:
        return _df_missing(env.p)
    if env.p.text("df_inodes") is None:
        return _skip(env.p, "df_inodes")
    t = env.t
    rows = []
    for fs in fss:
        total, used = fs["inodes_total"], fs["inodes_used"]
        if not total or used is None:  # vfat, btrfs: no fixed inode table
            continue
        rows.append(
            {"mount": fs["mountpoint"], "used_pct": _pct(used, total), "free": fs["inodes_free"]}
        )
    if not rows:
        return "skip", "No filesystem reports a fixed inode count.", {}
    rows.sort(key=lambda r: -float(r["used_pct"]))
    top = rows[0]
    verdict = _band(top["used_pct"], t.inode_used_warn_pct, t.inode_used_fail_pct)
    ev = {
        "filesystems": _cut(rows),
        "warn_pct": t.inode_used_warn_pct,
        "fail_pct": t.inode_used_fail_pct,
    }
    if verdict == "pass":
        return (
            verdict,
            f"Inodes below {t.inode_used_warn_pct:g}% used everywhere "
            f"(most: {top['mount']} at {top['used_pct']:g}%).",
            ev,
        )
    bad = [r for r in rows if r["used_pct"] >= t.inode_used_warn_pct]
    names = ", ".join(f"{r['mount']} {r['used_pct']:g}%" for r in bad[:4])
    return verdict, f"Inodes nearly exhausted: {names}.", ev


def check_readonly_mounts(env: _Env) -> Outcome:
    text = env.p.text("mounts")
    if text is None:
        return _skip(env.p, "mounts")
    ignore = env.t.readonly_mount_ignore
    ro = [
        {"mount": m.mountpoint, "device": m.device, "fstype": m.fstype}
        for m in P.parse_mounts(text)
        if m.read_only
        and m.fstype in DISK_FSTYPES
        and not any(fnmatch.fnmatchcase(m.mountpoint, pat) for pat in ignore)
    ]
    if not ro:
        return (
            "pass",
            "No disk-backed filesystem is mounted read-only.",
            {"ignored_patterns": ignore},
        )
    names = ", ".join(f"{r['mount']} ({r['fstype']})" for r in ro[:4])
    return (
        "fail",
        f"Read-only disk-backed mounts (an I/O error remounts read-only): {names}.",
        {"read_only": _cut(ro), "ignored_patterns": ignore},
    )


def _meminfo(env: _Env) -> dict[str, Any] | None:
    text = env.p.text("meminfo")
    return None if text is None else memory.parse(text)


def check_memory(env: _Env) -> Outcome:
    mi = _meminfo(env)
    if mi is None:
        return _skip(env.p, "meminfo")
    total, avail = mi["total_bytes"], mi["available_bytes"]
    if not total or avail is None:
        return "skip", "/proc/meminfo has no MemTotal/MemAvailable (kernel older than 3.14?).", {}
    t = env.t
    pct = _pct(avail, total)
    ev = {"total_bytes": total, "available_bytes": avail, "available_pct": pct}
    verdict = _band_low(pct, t.mem_available_warn_pct, t.mem_available_fail_pct)
    if verdict == "pass":
        return verdict, f"{pct:g}% of memory available.", ev
    return (
        verdict,
        f"Only {pct:g}% of memory available (warn below {t.mem_available_warn_pct:g}%, "
        f"fail below {t.mem_available_fail_pct:g}%).",
        ev,
    )


def check_swap(env: _Env) -> Outcome:
    mi = _meminfo(env)
    if mi is None:
        return _skip(env.p, "meminfo")
    total, free = mi["swap_total_bytes"], mi["swap_free_bytes"]
    if total is None or free is None:
        return "skip", "/proc/meminfo has no swap fields.", {}
    if total == 0:
        return "pass", "No swap configured.", {"swap_total_bytes": 0}
    t = env.t
    pct = _pct(max(0, total - free), total)
    ev = {"swap_total_bytes": total, "swap_free_bytes": free, "used_pct": pct}
    verdict = _band(pct, t.swap_used_warn_pct, t.swap_used_fail_pct)
    return (
        verdict,
        f"{pct:g}% of swap used" + ("." if verdict == "pass" else ": the host is short of memory."),
        ev,
    )


def check_load(env: _Env) -> Outcome:
    text = env.p.text("loadavg")
    la = P.parse_loadavg(text) if text is not None else None
    if la is None:
        return _skip(env.p, "loadavg")
    cpus_text = env.p.text("cpus_online")
    cpus = P.parse_cpu_list(cpus_text) if cpus_text is not None else None
    ev: dict[str, Any] = {"load1": la.load1, "load5": la.load5, "load15": la.load15, "cpus": cpus}
    if not cpus:
        return (
            "skip",
            f"Load {la.load5:g} (5 min) but the CPU count is unknown ({env.p.why('cpus_online')}).",
            ev,
        )
    t = env.t
    per = round(la.load5 / cpus, 2)
    ev["load5_per_cpu"] = per
    verdict = _band(per, t.load_per_cpu_warn, t.load_per_cpu_fail)
    if verdict == "pass":
        return verdict, f"5-minute load {la.load5:g} on {cpus} CPUs ({per:g} per CPU).", ev
    return (
        verdict,
        f"5-minute load {la.load5:g} on {cpus} CPUs is {per:g} per CPU "
        "(tasks stuck in I/O count too).",
        ev,
    )


def check_time_sync(env: _Env) -> Outcome:
    t, p = env.t, env.p
    chrony_text = p.text("chrony")
    tracking = P.parse_chrony(chrony_text) if chrony_text is not None else None
    if tracking is not None:
        return _chrony_verdict(tracking, t)
    tdc_text = p.text("timedatectl")
    kv = P.parse_timedatectl(tdc_text) if tdc_text is not None else {}
    synced = kv.get("NTPSynchronized")
    if synced not in ("yes", "no"):
        return _skip(p, "chrony", "timedatectl")
    ev = {"source": "timedatectl", "ntp_service": kv.get("NTP"), "ntp_synchronized": synced}
    if synced == "yes":
        return (
            "pass",
            "The kernel reports the clock synchronised (timedatectl NTPSynchronized=yes).",
            ev,
        )
    service = " and no NTP service is enabled" if kv.get("NTP") == "no" else ""
    return (
        t.time_unsynced_verdict,
        f"The clock is not synchronised{service} (timedatectl NTPSynchronized=no).",
        ev,
    )


def _chrony_verdict(tr: P.ChronyTracking, t: L1Thresholds) -> Outcome:
    ev: dict[str, Any] = {
        "source": "chronyc",
        "offset_s": tr.offset_s,
        "leap_status": tr.leap_status,
        "reference": tr.reference,
        "stratum": tr.stratum,
    }
    if tr.synchronised is False:
        return (
            t.time_unsynced_verdict,
            f"chrony is not synchronised (leap status {tr.leap_status!r}).",
            ev,
        )
    if tr.offset_s is None:
        return (
            "pass",
            f"chrony synchronised (leap status {tr.leap_status!r}); offset not shown.",
            ev,
        )
    off = abs(tr.offset_s)
    verdict = _band(off, t.time_offset_warn_s, t.time_offset_fail_s)
    return (
        verdict,
        f"Clock is {tr.offset_s:+.6f} s from NTP time "
        f"(warn at {t.time_offset_warn_s:g} s, fail at {t.time_offset_fail_s:g} s).",
        ev,
    )


def check_kernel_taint(env: _Env) -> Outcome:
    text = env.p.text("tainted")
    value = to_int(text.strip()) if text is not None and text.strip() else None
    if value is None or value < 0:
        return _skip(env.p, "tainted")
    flags = decode_taint(value)
    t = env.t
    bad = [f for f in flags if f in t.taint_fail_flags]
    odd = [f for f in flags if f not in t.taint_fail_flags and f not in t.taint_benign_flags]
    ev = {"tainted": value, "flags": flags, "fail_flags": bad, "warn_flags": odd}
    if bad or odd:
        why = ", ".join(_TAINT_WHY.get(f, f"flag {f}") for f in bad + odd)
        return "fail" if bad else "warn", f"Kernel tainted ({', '.join(flags)}): {why}.", ev
    if flags:
        return (
            "pass",
            f"Kernel taint flags {', '.join(flags)} only from expected causes "
            "(proprietary, out-of-tree or unsigned modules such as NVIDIA's).",
            ev,
        )
    return "pass", "Kernel not tainted.", ev


_TAINT_WHY = {
    "D": "the kernel died (oops/BUG)",
    "M": "a machine check occurred",
    "B": "a bad page was referenced",
    "W": "the kernel issued a warning",
    "L": "a soft lockup occurred",
    "F": "a module was force-loaded",
    "R": "a module was force-unloaded",
    "S": "out-of-spec system",
    "A": "ACPI table overridden",
    "U": "taint requested by user space",
    "I": "firmware bug workaround",
    "C": "staging driver loaded",
}


# -- network ----------------------------------------------------------------------------------


def _ignored(name: str, t: L1Thresholds) -> bool:
    return any(fnmatch.fnmatchcase(name, pat) for pat in t.nic_ignore)


def check_nic_link(env: _Env) -> Outcome:
    text = env.p.text("net_links")
    if text is None:
        return _skip(env.p, "net_links")
    links = [
        ln
        for ln in P.parse_net_links(text)
        if (ln.hardware or ln.type == 32) and not _ignored(ln.name, env.t)
    ]
    if not links:
        return "skip", "No hardware network interface found.", {}
    down, dormant, admin_down, up = [], [], [], []
    for ln in links:
        if ln.admin_up is False:
            admin_down.append(ln.name)
        elif ln.operstate in ("down", "lowerlayerdown", "notpresent") or ln.carrier == 0:
            down.append(ln.name)
        elif ln.operstate == "dormant":
            dormant.append(ln.name)
        else:
            up.append(ln.name)
    ev = {"up": up, "down": down, "dormant": dormant, "admin_down": admin_down}
    if down:
        return "fail", f"Configured (admin up) interfaces without link: {', '.join(down)}.", ev
    if dormant:
        return "warn", f"Interfaces dormant (link up, not yet usable): {', '.join(dormant)}.", ev
    note = f"; {len(admin_down)} administratively down, ignored" if admin_down else ""
    return "pass", f"{_n(len(up), 'configured hardware interface')} with link{note}.", ev


def check_nic_errors(env: _Env) -> Outcome:
    text = env.p.text("net_dev")
    if text is None:
        return _skip(env.p, "net_dev")
    counters = P.parse_net_dev(text)
    links_text = env.p.text("net_links")
    hw = {ln.name for ln in P.parse_net_links(links_text or "") if ln.hardware or ln.type == 32}
    t = env.t
    names = [n for n in counters if not _ignored(n, t) and (not hw or n in hw)]
    if not names:
        return "skip", "No interface counters to judge.", {}
    rows: list[dict[str, Any]] = []
    verdict: Verdict = "pass"
    for n in names:
        c = counters[n]
        ratio = c.errors / max(1, c.packets)
        v: Verdict = "pass"
        if c.errors >= t.nic_errors_min:
            v = _band(ratio, t.nic_error_ratio_warn, t.nic_error_ratio_fail)
        verdict = worst([verdict, v])
        rows.append(
            {
                "iface": n,
                "errors": c.errors,
                "packets": c.packets,
                "drops": c.rx_drop + c.tx_drop,
                "error_ratio": float(f"{ratio:.3g}"),
                "verdict": v,
            }
        )
    rows.sort(key=lambda r: -float(r["error_ratio"]))
    ev = {"interfaces": _cut(rows), "since": "boot"}
    if verdict == "pass":
        return (
            verdict,
            f"Error counters low on {_n(len(rows), 'interface')} (cumulative since boot).",
            ev,
        )
    bad = ", ".join(
        f"{r['iface']} {r['errors']} errors ({r['error_ratio']:g}/packet)"
        for r in rows
        if r["verdict"] != "pass"
    )
    return verdict, f"NIC errors since boot: {bad}.", ev


# -- GPUs: what the probes say about the host's NVIDIA stack ----------------------------------


@dataclass
class _Gpu:
    expected: int | None
    pci_gpus: int | None  # None: neither lspci nor the sysfs fallback answered
    nvswitches: int | None
    kmod_version: str | None  # /proc/driver/nvidia/version
    module_loaded: bool | None  # None: /proc/modules unreadable
    smi_text: str | None  # None: nvidia-smi gave no data
    smi: P.SmiTable
    failure: P.SmiFailure | None
    q_text: str | None

    @classmethod
    def build(cls, p: _Probes, ctx: L1Context) -> _Gpu:
        mods_text = p.text("modules")
        loaded = None if mods_text is None else "nvidia" in P.loaded_modules(mods_text)
        version = p.text("nvidia_version") or ""
        nv = nvidia.parse(f"module={'1' if loaded else '0'}\n@@version\n{version}")
        pci_text = p.text("pci_nvidia")
        pci_facts = pci.parse(pci_text) if pci_text is not None else None
        if pci_facts is not None and pci_facts["source"] is None:
            pci_facts = None
        smi_text = p.text("nvidia_smi")
        return cls(
            expected=ctx.expected_gpus,
            pci_gpus=None if pci_facts is None else int(pci_facts["gpu_count"]),
            nvswitches=None if pci_facts is None else int(pci_facts["nvswitch_count"]),
            kmod_version=nv["driver_version"],
            module_loaded=loaded,
            smi_text=smi_text,
            smi=P.parse_smi_table(smi_text, L1_SMI_FIELDS) if smi_text else P.SmiTable(),
            failure=P.smi_failure(p.all_text("nvidia_smi")),
            q_text=p.text("nvidia_smi_q"),
        )

    @property
    def driver_loaded(self) -> bool | None:
        if self.kmod_version is not None or self.module_loaded:
            return True
        return None if self.module_loaded is None else False

    @property
    def present(self) -> bool:
        """Any sign of an NVIDIA GPU: expected, on the bus, a driver, or nvidia-smi rows."""
        return bool(
            (self.expected or 0) > 0
            or (self.pci_gpus or 0) > 0
            or self.driver_loaded
            or self.smi.gpus
            or self.smi.lost
            or (self.failure is not None and self.failure.kind == "lib_mismatch")
        )

    def absent_reason(self) -> str:
        bus = "unknown" if self.pci_gpus is None else str(self.pci_gpus)
        expect = "none" if self.expected is None else str(self.expected)
        return (
            f"No NVIDIA GPU on this host (inventory expects {expect}, PCI bus shows {bus}, "
            "no NVIDIA driver loaded): not applicable."
        )

    @cached_property
    def index_by_bus(self) -> dict[str, int]:
        return {
            P.bus_key(str(g.pci_bus_id.value)): g.index for g in self.smi.gpus if g.pci_bus_id.ok
        }

    @cached_property
    def temps(self) -> dict[str, P.TempLimits]:
        return P.parse_smi_q_temps(self.q_text) if self.q_text else {}

    @cached_property
    def remap_na(self) -> frozenset[str]:
        return P.q_section_na(self.q_text or "", "Remapped Rows")

    @cached_property
    def q_gpus(self) -> list[GpuSample] | None:
        if not self.q_text:
            return None
        node = parse_nvidia_smi_q(self.q_text)
        for pos, g in enumerate(node.gpus):
            bus = g.pci_bus_id.value if g.pci_bus_id.ok else None
            g.index = self.index_by_bus.get(P.bus_key(str(bus)), pos) if bus else pos
        return node.gpus


Judgement = tuple[Verdict, str, dict[str, Any]]  # one GPU; "skip" when it lacks the field


def _na(r: Reading[Any]) -> str:
    """Why a GPU field has no value, in a few words (`N/A` is the GB10 case)."""
    if r.status is Status.NOT_SUPPORTED:
        return "N/A"
    if r.status is Status.ERROR:
        return f"unreadable ({r.detail[:60]})"
    return r.status.value.replace("_", " ")


def _num(r: Reading[Any]) -> float | None:
    v = r.value
    return float(v) if r.ok and isinstance(v, int | float) and not isinstance(v, bool) else None


def _per_gpu(
    gpus: Sequence[GpuSample],
    judge: Callable[[GpuSample], Judgement],
    what: str,
    pass_note: str = "",
) -> Outcome:
    judged = [(g, judge(g)) for g in gpus]
    counted = [(g, j) for g, j in judged if j[0] != "skip"]
    ev = {
        "gpus": _cut([{"gpu": g.index, "verdict": j[0], "note": j[1], **j[2]} for g, j in judged])
    }
    if not counted:
        notes = sorted({j[1] for _, j in judged})
        return "skip", f"{what} not available on any GPU ({'; '.join(notes)[:160]}).", ev
    verdict = worst(j[0] for _, j in counted)
    if verdict == "pass":
        left = len(judged) - len(counted)
        na = f"; {left} GPUs do not report it" if left else ""
        return "pass", f"{what} fine on {_n(len(counted), 'GPU')}{pass_note}{na}.", ev
    bad = [f"GPU {g.index} {j[1]}" for g, j in counted if j[0] != "pass"]
    more = f" (+{len(bad) - 3} more)" if len(bad) > 3 else ""
    return verdict, f"{what}: " + "; ".join(bad[:3]) + more + ".", ev


def _rows_or_skip(env: _Env) -> Outcome | None:
    g = env.gpu
    if g.smi.gpus:
        return None
    why = g.failure.message if g.failure else env.p.why("nvidia_smi")
    return "skip", f"nvidia-smi gave no GPU rows ({why}); see nvidia_driver and gpu_count.", {}


def check_nvidia_driver(env: _Env) -> Outcome:
    g, p = env.gpu, env.p
    ev: dict[str, Any] = {"kernel_module": g.kmod_version, "module_loaded": g.module_loaded}
    if g.failure is not None and g.failure.kind == "lib_mismatch":
        ev["nvml_library"] = g.failure.nvml_version
        return (
            "fail",
            (
                "Driver/library version mismatch: NVML library "
                f"{g.failure.nvml_version or '(unknown)'} vs kernel module "
                f"{g.kmod_version or '(unknown)'}; reboot or reload the nvidia modules."
            ),
            ev,
        )
    if p.timed_out("nvidia_smi"):
        return (
            "fail",
            (
                f"nvidia-smi did not answer within {TIMEOUT:g} s: the driver hangs "
                "(e.g. after Xid 79) or initialises slowly without persistence mode."
            ),
            ev,
        )
    if g.driver_loaded is False:
        return (
            "fail",
            "NVIDIA GPUs are present or expected but the nvidia kernel module is not loaded.",
            ev,
        )
    if g.failure is not None and g.failure.kind == "no_driver":
        return "fail", f"nvidia-smi cannot talk to the driver: {g.failure.message}", ev
    status = p.status("nvidia_smi")
    if status in ("missing_tool", "permission_denied") and not g.smi.gpus:
        return (
            "warn",
            f"Driver {g.kmod_version or '(version unknown)'} loaded but nvidia-smi is unusable "
            f"({status}): GPU health cannot be read.",
            ev,
        )
    if g.smi.gpus:
        user = sorted({e.get("driver_version", "") for e in g.smi.extras} - {""})
        ev["nvidia_smi_driver"] = user
        if g.kmod_version and user and user != [g.kmod_version]:
            return (
                "fail",
                f"nvidia-smi reports driver {', '.join(user)} "
                f"but the loaded kernel module is {g.kmod_version}.",
                ev,
            )
        version = g.kmod_version or ", ".join(user) or "(version unknown)"
        return (
            "pass",
            f"Driver {version} loaded; nvidia-smi answers for {_n(len(g.smi.gpus), 'GPU')}.",
            ev,
        )
    if g.failure is not None:
        return "fail", f"nvidia-smi failed: {g.failure.message}", ev
    return "warn", f"nvidia-smi gave no GPU rows ({p.why('nvidia_smi')}).", ev


def check_gpu_count(env: _Env) -> Outcome:
    g = env.gpu
    visible = (
        len(g.smi.gpus)
        if g.smi_text is not None
        and (g.smi.gpus or g.failure is None or g.failure.kind == "no_devices")
        else None
    )
    ev = {"expected": g.expected, "nvidia_smi": visible, "pci_bus": g.pci_gpus, "lost": g.smi.lost}
    found: list[tuple[Verdict, str]] = []
    if g.smi.lost:
        found.append(
            (
                "fail",
                f"nvidia-smi cannot reach GPU {', '.join(g.smi.lost)} (device handle unavailable)",
            )
        )
    seen = visible if visible is not None else g.pci_gpus
    source = "nvidia-smi" if visible is not None else "the PCI bus"
    if g.expected is not None and seen is not None:
        if seen < g.expected:
            found.append(
                ("fail", f"{source} shows {seen} of the {g.expected} GPUs the inventory expects")
            )
        elif seen > g.expected:
            found.append(
                (
                    "warn",
                    f"{source} shows {seen} GPUs, more than the {g.expected} the inventory expects",
                )
            )
    if visible is not None and g.pci_gpus is not None and g.pci_gpus > visible:
        found.append(("fail", f"the PCI bus shows {g.pci_gpus} GPUs but nvidia-smi only {visible}"))
    if found:
        return worst(v for v, _ in found), "; ".join(s for _, s in found) + ".", ev
    if seen is None:
        return _skip(env.p, "nvidia_smi", "pci_nvidia")
    if g.expected is None:
        return "pass", f"{seen} GPUs on {source}; the inventory sets no agentctl_expected_gpus.", ev
    return "pass", f"{seen} of {g.expected} expected GPUs on {source}.", ev


def _temp_judge(env: _Env, g: GpuSample) -> Judgement:
    temp = _num(g.temperature_c)
    if temp is None:
        return "skip", _na(g.temperature_c), {}
    t = env.t
    bus = P.bus_key(str(g.pci_bus_id.value)) if g.pci_bus_id.ok else ""
    lim = env.gpu.temps.get(bus)
    if lim is not None and lim.slowdown_c is not None and 50 <= lim.slowdown_c <= 130:
        fail_at, warn_at, src = (
            lim.slowdown_c,
            lim.slowdown_c - t.gpu_temp_slowdown_margin_c,
            "slowdown",
        )
    else:
        fail_at, warn_at, src = t.gpu_temp_fail_c, t.gpu_temp_warn_c, "default"
    v = _band(temp, warn_at, fail_at)
    ev = {"temp_c": temp, "warn_at_c": warn_at, "fail_at_c": fail_at, "limit_source": src}
    if v == "fail":
        return v, f"at {temp:g} C, at or past its {src} limit {fail_at:g} C", ev
    if v == "warn":
        return v, f"at {temp:g} C, within {fail_at - temp:g} C of its {src} limit {fail_at:g} C", ev
    return v, f"{temp:g} C", ev


def check_gpu_temperature(env: _Env) -> Outcome:
    gpus = env.gpu.smi.gpus
    hottest = max((v for v in (_num(x.temperature_c) for x in gpus) if v is not None), default=None)
    note = f" (hottest {hottest:g} C)" if hottest is not None else ""
    return _per_gpu(gpus, lambda g: _temp_judge(env, g), "GPU temperature", note)


def _power_judge(env: _Env, g: GpuSample) -> Judgement:
    draw, limit = _num(g.power_draw_w), _num(g.power_limit_w)
    if draw is None:
        return "skip", f"power draw {_na(g.power_draw_w)}", {}
    if limit is None or limit <= 0:
        return "skip", f"power limit {_na(g.power_limit_w)}", {"draw_w": draw}
    over = draw > limit * (1 + env.t.gpu_power_over_limit_pct / 100)
    ev = {"draw_w": draw, "limit_w": limit}
    return (
        ("warn", f"draws {draw:g} W over its {limit:g} W limit", ev)
        if over
        else ("pass", f"{draw:g} W", ev)
    )


def check_gpu_power(env: _Env) -> Outcome:
    return _per_gpu(env.gpu.smi.gpus, lambda g: _power_judge(env, g), "GPU power")


def _throttle_judge(env: _Env, g: GpuSample) -> Judgement:
    r = g.clock_event_reasons
    if not r.ok or not isinstance(r.value, int):
        return "skip", _na(r), {}
    names = list(decode_clock_reasons(r.value))
    t = env.t
    bad = [n for n in names if n in t.gpu_throttle_fail_reasons]
    odd = [n for n in names if n in t.gpu_throttle_warn_reasons and n not in bad]
    ev = {"reasons": names, "mask": hex(r.value)}
    if bad:
        return "fail", f"throttled by {', '.join(bad + odd)}", ev
    if odd:
        return "warn", f"throttled by {', '.join(odd)}", ev
    return "pass", ", ".join(names) or "no clock event reason", ev


def check_gpu_throttle(env: _Env) -> Outcome:
    return _per_gpu(
        env.gpu.smi.gpus,
        lambda g: _throttle_judge(env, g),
        "GPU clocks",
        " (benign reasons only: idle, app clocks, SW power cap, sync boost)",
    )


def _ecc_judge(env: _Env, g: GpuSample) -> Judgement:
    vol, agg = _num(g.ecc_uncorrected_volatile), _num(g.ecc_uncorrected_aggregate)
    pending = g.retired_pages_pending.value if g.retired_pages_pending.ok else None
    if vol is None and agg is None and pending is None:
        return "skip", f"ECC {_na(g.ecc_uncorrected_volatile)} (no ECC, or ECC disabled)", {}
    ev = {
        "uncorrected_volatile": vol,
        "uncorrected_aggregate": agg,
        "retired_pages_pending": pending,
    }
    if vol:
        return "fail", f"has {vol:g} uncorrectable ECC errors since the last reset", ev
    if agg is not None and agg >= env.t.gpu_ecc_aggregate_warn:
        return "warn", f"has {agg:g} uncorrectable ECC errors over its lifetime", ev
    if pending:
        return "warn", "has retired pages pending (reset the GPU to apply)", ev
    return "pass", "no uncorrectable ECC errors", ev


def check_gpu_ecc(env: _Env) -> Outcome:
    return _per_gpu(env.gpu.smi.gpus, lambda g: _ecc_judge(env, g), "Uncorrectable ECC")


def _remap_judge(env: _Env, g: GpuSample) -> Judgement:
    rr = g.remapped_rows
    if rr.ok and rr.value is not None:
        v = rr.value
        ev: dict[str, Any] = {
            "correctable": v.correctable,
            "uncorrectable": v.uncorrectable,
            "pending": v.pending,
            "failure": v.failure,
        }
        if v.failure:
            return "fail", "row remapping failed (no spare rows left: replace the GPU)", ev
        if v.pending:
            return "warn", "has a row remap pending (reset the GPU to apply)", ev
        return (
            "pass",
            f"{v.uncorrectable} uncorrectable / {v.correctable} correctable rows remapped",
            ev,
        )
    pages = _num(g.retired_pages)
    if pages is None:
        flat = P.bus_key(str(g.pci_bus_id.value)) in env.gpu.remap_na
        return "skip", "remapped rows " + ("N/A" if flat else _na(rr)), {}
    pending = g.retired_pages_pending.value if g.retired_pages_pending.ok else None
    ev = {"retired_pages": pages, "retired_pages_pending": pending}
    if pages >= env.t.gpu_retired_pages_fail:
        return "fail", f"has {pages:g} retired pages (near the limit of 64)", ev
    if pending:
        return "warn", "has a page retirement pending (reset the GPU to apply)", ev
    return "pass", f"{pages:g} retired pages", ev


def check_gpu_row_remap(env: _Env) -> Outcome:
    gpus = env.gpu.q_gpus
    if gpus is None:
        return _skip(env.p, "nvidia_smi_q")
    if not gpus:
        failure = P.smi_failure(env.p.all_text("nvidia_smi_q"))
        why = failure.message if failure else "it listed no GPU"
        return "skip", f"nvidia-smi -q gave no GPU ({why}); see nvidia_driver.", {}
    return _per_gpu(gpus, lambda g: _remap_judge(env, g), "Row remapping")


def _pcie_judge(env: _Env, g: GpuSample) -> Judgement:
    gc, gm = _num(g.pcie_gen_current), _num(g.pcie_gen_max)
    wc, wm = _num(g.pcie_width_current), _num(g.pcie_width_max)
    if gc is None and wc is None:
        return "skip", f"PCIe link {_na(g.pcie_gen_current)} (C2C-attached, as on GB10?)", {}
    util = _num(g.utilization_gpu_pct)
    reasons = g.clock_event_reasons.value if g.clock_event_reasons.ok else None
    idle = isinstance(reasons, int) and bool(reasons & 0x1)
    busy = util is not None and util >= env.t.pcie_busy_util_pct and not idle
    ev = {"gen": gc, "gen_max": gm, "width": wc, "width_max": wm, "util_pct": util, "busy": busy}
    if wc is not None and wm is not None and wc < wm:
        return "warn", f"link at x{wc:g} of x{wm:g} (lanes lost: reseat or check the riser)", ev
    if gc is not None and gm is not None and gc < gm:
        if busy:
            return "warn", f"link at Gen {gc:g} of {gm:g} while {util:g}% busy", ev
        return (
            "pass",
            f"link at Gen {gc:g} of {gm:g} while idle "
            "(GPUs lower the PCIe generation when idle; re-check under load)",
            ev,
        )
    return "pass", "link at its maximum", ev


def check_gpu_pcie(env: _Env) -> Outcome:
    gpus = env.gpu.smi.gpus
    idle_down = [
        j for j in (_pcie_judge(env, g) for g in gpus) if j[0] == "pass" and "while idle" in j[1]
    ]
    note = (
        f" ({len(idle_down)} at a lower generation while idle, "
        "which GPUs do legitimately; re-check under load)"
        if idle_down
        else ""
    )
    return _per_gpu(gpus, lambda g: _pcie_judge(env, g), "PCIe link", note)


def check_gpu_persistence(env: _Env) -> Outcome:
    g = env.gpu
    extras = dict(zip((x.index for x in g.smi.gpus), g.smi.extras, strict=False))

    def judge(x: GpuSample) -> Judgement:
        raw = extras.get(x.index, {}).get("persistence_mode", "").strip()
        if raw.lower() == "enabled":
            return "pass", "enabled", {}
        if raw.lower() == "disabled":
            return (
                env.t.persistence_off_verdict,
                "has persistence mode disabled "
                "(slow, flaky NVML calls; enable nvidia-persistenced)",
                {},
            )
        return "skip", f"persistence mode {raw or 'not reported'}", {}

    return _per_gpu(g.smi.gpus, judge, "Persistence mode")


# -- Xid --------------------------------------------------------------------------------------

_XID_VERDICT: dict[str, Verdict] = {
    "critical": "fail",
    "warn": "warn",
    "app": "warn",
    "info": "pass",
}


@dataclass
class _XidGroup:
    code: int
    info: XidInfo
    verdict: Verdict
    count: int = 0
    gpus: set[str] = field(default_factory=set)
    last: str | None = None

    def where(self, index_by_bus: Mapping[str, int]) -> list[str]:
        """`GPU 1 (0000:2a:00)` where nvidia-smi knows the bus, else the bus id alone."""
        return sorted(f"GPU {index_by_bus[b]} ({b})" if b in index_by_bus else b for b in self.gpus)

    def to_json(self, index_by_bus: Mapping[str, int]) -> dict[str, Any]:
        gpus = self.where(index_by_bus)
        return {
            "xid": self.code,
            "count": self.count,
            "severity": self.info.severity,
            "meaning": self.info.meaning,
            "action": self.info.action,
            "verdict": self.verdict,
            "gpus": gpus[:_MAX_ITEMS],
            "last": self.last,
        }


def _xid_judgement(e: XidEvent, t: L1Thresholds, solo45: bool) -> tuple[Verdict, XidInfo]:
    info = e.info
    sev = t.xid_severity_overrides.get(e.xid, info.severity)
    info = info._replace(severity=sev)
    if e.xid == 45 and e.xid not in t.xid_severity_overrides:
        if solo45:
            return "warn", info._replace(
                action="RESTART_FM (solo Xid 45: restart the fabric manager)"
            )
        return "pass", info._replace(action="IGNORE (not solo: follow the other Xid)")
    named = info.action.strip().lower()
    if e.xid == 154 and named not in ("none", XID_CATALOG[154].action.lower()):
        return "fail", info  # the driver asks for a reset or reboot
    return _XID_VERDICT.get(sev, "warn"), info


def check_gpu_xid(env: _Env) -> Outcome:
    p, t = env.p, env.t
    text = p.text("xid_log")
    if text is None:
        status = p.status("xid_log")
        if status in ("timeout", "permission_denied"):
            return "warn", f"The kernel log could not be read ({status}): recent Xids unknown.", {}
        return _skip(p, "xid_log")
    log = P.parse_xid_log(text)
    if log.unreadable and not log.events and not log.fallen:
        return "warn", "Neither journald nor dmesg was readable (needs root): Xids unknown.", {}
    window = t.xid_window_hours * 3600

    def recent(stamp: str | None) -> bool:
        age = P.event_age_s(stamp, env.ctx.now, log.uptime_s)
        return age is None or age <= window

    events = [e for e in log.events if e.xid not in t.xid_ignore and recent(e.time)]
    events += [
        XidEvent(
            time=tm,
            pci_bus_id=bus,
            xid=79,
            pid=None,
            process=None,
            message="GPU has fallen off the bus",
        )
        for tm, bus in log.fallen
        if 79 not in t.xid_ignore and recent(tm)
    ]
    others = {P.bus_key(e.pci_bus_id) for e in events if e.xid != 45}
    groups: dict[int, _XidGroup] = {}
    for e in events:
        verdict, info = _xid_judgement(e, t, P.bus_key(e.pci_bus_id) not in others)
        grp = groups.setdefault(e.xid, _XidGroup(e.xid, info, verdict))
        if _RANK[verdict] > _RANK[grp.verdict]:
            grp.verdict, grp.info = verdict, info
        grp.count += 1
        grp.gpus.add(P.bus_key(e.pci_bus_id))
        grp.last = e.time or grp.last
    ordered = sorted(groups.values(), key=lambda g: (-_RANK[g.verdict], g.code))
    ev = {
        "window_hours": t.xid_window_hours,
        "source": log.source,
        "events": len(events),
        "codes": [g.to_json(env.gpu.index_by_bus) for g in ordered[:_MAX_ITEMS]],
    }
    span = f"in the last {t.xid_window_hours:g} h"
    if not ordered:
        return "pass", f"No Xid {span} ({log.source or 'kernel log'}).", ev
    verdict = worst(g.verdict for g in ordered)
    if verdict == "pass":
        codes = ", ".join(f"Xid {g.code} x{g.count}" for g in ordered)
        return "pass", f"Only informational Xids {span}: {codes}.", ev
    parts = [
        f"Xid {g.code} ({g.info.meaning}) x{g.count} on "
        f"{', '.join(g.where(env.gpu.index_by_bus)[:3])}: {g.info.action}"
        for g in ordered
        if g.verdict != "pass"
    ]
    return verdict, f"{'; '.join(parts[:3])} ({span}).", ev


def check_fabric_manager(env: _Env) -> Outcome:
    g, p = env.gpu, env.p
    if g.nvswitches is None:
        return _skip(p, "pci_nvidia")
    if g.nvswitches == 0:
        return "skip", "No NVSwitch on the PCI bus: fabric manager not needed.", {"nvswitches": 0}
    text = p.text("fabricmanager")
    state = text.split()[0] if text and text.split() else None
    ev = {"nvswitches": g.nvswitches, "state": state}
    if state is None:
        return (
            "warn",
            f"{g.nvswitches} NVSwitches present but the fabric manager's state is unknown "
            f"({p.why('fabricmanager')}).",
            ev,
        )
    if state == "active":
        return "pass", f"nvidia-fabricmanager active with {g.nvswitches} NVSwitches.", ev
    if state in ("activating", "reloading"):
        return "warn", f"nvidia-fabricmanager is {state} with {g.nvswitches} NVSwitches.", ev
    return (
        "fail",
        f"nvidia-fabricmanager is {state} with {g.nvswitches} NVSwitches present: "
        "CUDA jobs fail until it runs.",
        ev,
    )


# -- serving ----------------------------------------------------------------------------------

_NO_SERVING = "No serving role (router/worker) for this host in the inventory."


def _service_down(st: P.ServiceState | None) -> str:
    if st is None or st.manager == "none":
        return "no unit, pid file or process"
    if st.manager == "supervisor":
        return f"pid file stale, process {st.pid} gone" if st.pid else "empty pid file"
    return f"{st.manager} unit {st.state}"


def check_serving_processes(env: _Env) -> Outcome:
    s, p = env.ctx.serving, env.p
    if s is None:
        return "skip", _NO_SERVING, {}
    svc_text = p.text("serving_services")
    pg = p.get("serving_pgrep")
    pg_ok = pg is not None and (
        pg.status == ProbeStatus.OK or (pg.status == ProbeStatus.FAILED and pg.exit_status == 1)
    )
    if svc_text is None and not pg_ok:
        return (
            "warn",
            "Cannot tell whether the serving processes run "
            f"({p.why('serving_services')}, {p.why('serving_pgrep')}).",
            {},
        )
    states = {x.service: x for x in P.parse_services(svc_text or "")}
    procs = (pg.output if pg is not None and pg_ok else "").splitlines()
    up, down = [], []
    for name in s.services():
        st = states.get(name)
        if st is not None and st.up:
            up.append(f"{name} ({st.manager})")
        elif (st is None or st.manager == "none") and any(f"/{name}.yaml" in ln for ln in procs):
            up.append(f"{name} (unmanaged process)")
        else:
            down.append(f"{name} ({_service_down(st)})")
    ev = {"up": up, "down": down, "processes": len(procs)}
    if down:
        return "fail", f"Serving services not running: {', '.join(down[:6])}.", ev
    return "pass", f"All serving services run: {', '.join(up)}.", ev


def _no_answer(detail: str) -> str:
    low = detail.lower()
    for needle in ("connection refused", "timed out", "no route to host", "connection reset"):
        if needle in low:
            return needle
    return detail[:80]


def check_serving_health(env: _Env) -> Outcome:
    s, p = env.ctx.serving, env.p
    if s is None:
        return "skip", _NO_SERVING, {}
    text = p.text("serving_health")
    if text is None:
        if p.timed_out("serving_health"):
            return "fail", f"The health endpoints did not all answer within {TIMEOUT:g} s.", {}
        return "warn", f"Health endpoints not queried ({p.why('serving_health')}).", {}
    replies = {r.url: r for r in P.parse_health(text)}
    ok, bad = [], []
    for service, url in s.endpoints():
        r = replies.get(url)
        if r is not None and r.code == 200:
            ok.append(service)
        elif r is None:
            bad.append(f"{service} (no reply recorded)")
        elif r.code == 0:
            bad.append(f"{service} ({_no_answer(r.detail)})")
        else:
            bad.append(f"{service} (HTTP {r.code}{', ' + r.status if r.status else ''})")
    ev = {"healthy": ok, "unhealthy": bad, "endpoints": [u for _, u in s.endpoints()][:_MAX_ITEMS]}
    if bad:
        return "fail", f"Health endpoints failing: {', '.join(bad[:6])}.", ev
    return "pass", f"{_n(len(ok), 'health endpoint')} answer 200: {', '.join(ok)}.", ev


# -- registry and entry points ----------------------------------------------------------------

CheckFn = Callable[[_Env], Outcome]


@dataclass(frozen=True)
class _Check:
    name: str
    category: Category
    probes: tuple[str, ...]
    fn: CheckFn
    gpu: bool = False  # skipped on hosts with no sign of an NVIDIA GPU
    rows: bool = False  # needs nvidia-smi rows


_SMI = ("nvidia_smi",)
CHECKS: tuple[_Check, ...] = (
    _Check("disk_space", "system", ("df", "mounts"), check_disk_space),
    _Check("disk_inodes", "system", ("df", "df_inodes"), check_disk_inodes),
    _Check("readonly_mounts", "system", ("mounts",), check_readonly_mounts),
    _Check("memory", "system", ("meminfo",), check_memory),
    _Check("swap", "system", ("meminfo",), check_swap),
    _Check("load", "system", ("loadavg", "cpus_online"), check_load),
    _Check("time_sync", "system", ("chrony", "timedatectl"), check_time_sync),
    _Check("kernel_taint", "system", ("tainted",), check_kernel_taint),
    _Check("nic_link", "network", ("net_links",), check_nic_link),
    _Check("nic_errors", "network", ("net_dev", "net_links"), check_nic_errors),
    _Check(
        "nvidia_driver",
        "gpu",
        ("nvidia_version", "modules", "nvidia_smi"),
        check_nvidia_driver,
        gpu=True,
    ),
    _Check("gpu_count", "gpu", ("nvidia_smi", "pci_nvidia"), check_gpu_count, gpu=True),
    _Check(
        "gpu_temperature",
        "gpu",
        (*_SMI, "nvidia_smi_q"),
        check_gpu_temperature,
        gpu=True,
        rows=True,
    ),
    _Check("gpu_power", "gpu", _SMI, check_gpu_power, gpu=True, rows=True),
    _Check("gpu_throttle", "gpu", _SMI, check_gpu_throttle, gpu=True, rows=True),
    _Check("gpu_ecc", "gpu", _SMI, check_gpu_ecc, gpu=True, rows=True),
    _Check("gpu_row_remap", "gpu", ("nvidia_smi_q",), check_gpu_row_remap, gpu=True),
    _Check("gpu_pcie_link", "gpu", _SMI, check_gpu_pcie, gpu=True, rows=True),
    _Check("gpu_persistence", "gpu", _SMI, check_gpu_persistence, gpu=True, rows=True),
    _Check("gpu_xid", "gpu", ("xid_log",), check_gpu_xid, gpu=True),
    _Check(
        "fabric_manager", "gpu", ("pci_nvidia", "fabricmanager"), check_fabric_manager, gpu=True
    ),
    _Check(
        "serving_processes",
        "serving",
        ("serving_services", "serving_pgrep"),
        check_serving_processes,
    ),
    _Check("serving_health", "serving", ("serving_health",), check_serving_health),
)
CHECK_NAMES: tuple[str, ...] = tuple(c.name for c in CHECKS)


def _run(check: _Check, env: _Env) -> Outcome:
    if check.gpu and not env.gpu.present:
        return "skip", env.gpu.absent_reason(), {}
    if check.rows:
        skipped = _rows_or_skip(env)
        if skipped is not None:
            return skipped
    return check.fn(env)


def evaluate(
    results: Mapping[str, ProbeResult], ctx: L1Context, thresholds: L1Thresholds
) -> list[CheckResult]:
    """One result per check in `CHECKS` order; never raises (see the module docstring)."""
    env = _Env(_Probes(results), ctx, thresholds)
    out: list[CheckResult] = []
    for check in CHECKS:
        probes = {n: env.p.status(n) for n in check.probes}
        try:
            verdict, reason, evidence = _run(check, env)
        except Exception as exc:  # a bug here must not hide the other checks
            verdict, reason, evidence = (
                "warn",
                f"Internal error while evaluating: {type(exc).__name__}: {str(exc)[:160]}",
                {},
            )
        if ctx.gpu_replay is not None:
            from agentctl.ctl.diag.l1.replay import label

            reason, evidence = label(check.name, reason, evidence, probes,
                                     ctx.gpu_replay.set_name)  # fmt: skip
        out.append(CheckResult(check.name, check.category, verdict, reason, evidence, probes))
    return out
