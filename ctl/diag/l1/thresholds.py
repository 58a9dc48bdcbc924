"""Every number `agentctl diag l1` judges against, with its default (attached to Settings later).

Defaults follow what DCGM, node-problem-detector and gpud treat as unhealthy; a fleet overrides
them in config.toml (`[diag_l1]`), never in code.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

WarnOrFail = Literal["warn", "fail"]


class L1Thresholds(BaseModel):
    """Thresholds of the L1 checks. A `*_warn` bound is reached before its `*_fail` bound."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # -- disks --------------------------------------------------------------------------------
    disk_used_warn_pct: float = Field(
        default=85.0,
        ge=0,
        le=100,
        description="Filesystem space used (as df computes it) that warns.",
    )
    disk_used_fail_pct: float = Field(
        default=95.0, ge=0, le=100, description="Filesystem space used that fails."
    )
    inode_used_warn_pct: float = Field(
        default=85.0, ge=0, le=100, description="Inodes used that warn."
    )
    inode_used_fail_pct: float = Field(
        default=95.0, ge=0, le=100, description="Inodes used that fail."
    )
    readonly_mount_ignore: list[str] = Field(
        default_factory=lambda: ["/snap/*", "/media/*", "/run/media/*"],
        description="Mount points (fnmatch patterns) allowed to be read-only on purpose.",
    )
    # -- memory and load ----------------------------------------------------------------------
    mem_available_warn_pct: float = Field(
        default=10.0, ge=0, le=100, description="MemAvailable below this share of MemTotal warns."
    )
    mem_available_fail_pct: float = Field(
        default=5.0, ge=0, le=100, description="MemAvailable below this share of MemTotal fails."
    )
    swap_used_warn_pct: float = Field(
        default=50.0, ge=0, le=100, description="Swap used that warns."
    )
    swap_used_fail_pct: float = Field(
        default=90.0, ge=0, le=100, description="Swap used that fails."
    )
    load_per_cpu_warn: float = Field(
        default=2.0, ge=0, description="5-minute load average per online CPU that warns."
    )
    load_per_cpu_fail: float = Field(
        default=4.0,
        ge=0,
        description="5-minute load per CPU that fails (D-state tasks, e.g. a hung mount, count).",
    )
    # -- time and kernel ----------------------------------------------------------------------
    time_offset_warn_s: float = Field(
        default=0.1,
        ge=0,
        description="Clock offset from NTP (chronyc tracking) that warns, seconds.",
    )
    time_offset_fail_s: float = Field(
        default=1.0, ge=0, description="Clock offset from NTP that fails, seconds."
    )
    time_unsynced_verdict: WarnOrFail = Field(
        default="warn",
        description="Verdict when the clock is not synchronised (or no NTP service runs).",
    )
    taint_fail_flags: list[str] = Field(
        default_factory=lambda: ["D", "M", "B"],
        description="Taint letters that fail: the kernel died (oops), machine check, bad page.",
    )
    taint_benign_flags: list[str] = Field(
        default_factory=lambda: ["P", "O", "E", "K", "X", "T"],
        description=(
            "Taint letters expected on GPU nodes (proprietary/out-of-tree/unsigned modules such "
            "as the NVIDIA driver, live patch, distribution flags); any other letter warns."
        ),
    )
    # -- network ------------------------------------------------------------------------------
    nic_ignore: list[str] = Field(
        default_factory=lambda: ["lo", "docker*", "veth*", "br-*", "virbr*", "cni*", "flannel*"],
        description="Interface names (fnmatch patterns) left out of the NIC checks.",
    )
    nic_errors_min: int = Field(
        default=100, ge=0, description="Fewer rx+tx errors since boot than this never warn."
    )
    nic_error_ratio_warn: float = Field(
        default=1e-5,
        ge=0,
        description="Errors per packet since boot that warn (with nic_errors_min).",
    )
    nic_error_ratio_fail: float = Field(
        default=1e-3,
        ge=0,
        description="Errors per packet since boot that fail (with nic_errors_min).",
    )
    # -- GPUs ---------------------------------------------------------------------------------
    gpu_temp_warn_c: float = Field(
        default=85.0,
        description="GPU temperature that warns when nvidia-smi -q gives no slowdown temp.",
    )
    gpu_temp_fail_c: float = Field(
        default=92.0,
        description="GPU temperature that fails when nvidia-smi -q gives no slowdown temp.",
    )
    gpu_temp_slowdown_margin_c: float = Field(
        default=5.0,
        ge=0,
        description="With a slowdown temperature from -q: warn this many degrees below it, "
        "fail at it.",
    )
    gpu_power_over_limit_pct: float = Field(
        default=5.0,
        ge=0,
        description="Power draw above the enforced limit by this percentage warns.",
    )
    gpu_throttle_fail_reasons: list[str] = Field(
        default_factory=lambda: ["hw_thermal_slowdown", "hw_power_brake_slowdown"],
        description="Clock event reasons that fail (cooling or power delivery trouble).",
    )
    gpu_throttle_warn_reasons: list[str] = Field(
        default_factory=lambda: ["hw_slowdown", "sw_thermal_slowdown"],
        description="Clock event reasons that warn; others (idle, app clocks, SW power cap, "
        "sync boost) are benign.",
    )
    gpu_ecc_aggregate_warn: int = Field(
        default=1, ge=1, description="Lifetime (aggregate) uncorrectable ECC errors that warn."
    )
    gpu_retired_pages_fail: int = Field(
        default=60,
        ge=1,
        description="Retired pages (pre-Ampere) that fail: near the RMA limit of 64.",
    )
    pcie_busy_util_pct: float = Field(
        default=20.0,
        ge=0,
        le=100,
        description="GPU utilisation from which a PCIe generation below max warns (idle GPUs "
        "downshift legitimately).",
    )
    persistence_off_verdict: WarnOrFail = Field(
        default="warn", description="Verdict for a GPU with persistence mode disabled."
    )
    xid_window_hours: float = Field(
        default=24.0, gt=0, le=24 * 365, description="How far back the kernel log is read for Xids."
    )
    xid_ignore: list[int] = Field(
        default_factory=list, description="Xid codes never reported (site policy)."
    )
    xid_severity_overrides: dict[int, Literal["info", "app", "warn", "critical"]] = Field(
        default_factory=dict, description="Xid code -> severity, replacing the catalog's."
    )

    @model_validator(mode="after")
    def _ordered(self) -> L1Thresholds:
        """A warn bound past its fail bound would make the warn band unreachable."""
        pairs = [
            ("disk_used", self.disk_used_warn_pct, self.disk_used_fail_pct, False),
            ("inode_used", self.inode_used_warn_pct, self.inode_used_fail_pct, False),
            ("mem_available", self.mem_available_warn_pct, self.mem_available_fail_pct, True),
            ("swap_used", self.swap_used_warn_pct, self.swap_used_fail_pct, False),
            ("load_per_cpu", self.load_per_cpu_warn, self.load_per_cpu_fail, False),
            ("time_offset", self.time_offset_warn_s, self.time_offset_fail_s, False),
            ("gpu_temp", self.gpu_temp_warn_c, self.gpu_temp_fail_c, False),
            ("nic_error_ratio", self.nic_error_ratio_warn, self.nic_error_ratio_fail, False),
        ]
        for name, warn, fail, lower_is_worse in pairs:
            if (warn < fail) if lower_is_worse else (warn > fail):
                raise ValueError(f"{name}: the warn bound {warn} lies beyond the fail bound {fail}")
        return self
