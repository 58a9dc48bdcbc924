"""What an L2 bundle captures beyond the L1 and reboot-cause probes (which it also holds).

All read-only. `nvidia-bug-report.sh` and `dcgmi diag` run only when asked (`optional`):
the first writes SysRq and touches Mellanox logs without `--safe-mode`, the second loads
the GPUs for a minute; both get long timeouts of their own.
"""

from __future__ import annotations

from agentctl.ctl.diag.probe import ProbeSpec

_MB = 1024 * 1024
#: sysctls that decide what a hang or a panic does (reboot, wait, dump)
SYSCTLS = (
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.softlockup_panic",
    "kernel.hardlockup_panic",
    "kernel.hung_task_panic",
    "kernel.hung_task_timeout_secs",
    "kernel.nmi_watchdog",
    "kernel.watchdog_thresh",
    "kernel.panic_on_warn",
    "kernel.unknown_nmi_panic",
    "kernel.tainted",
    "kernel.dmesg_restrict",
    "kernel.kptr_restrict",
    "vm.panic_on_oom",
    "vm.overcommit_memory",
    "vm.nr_hugepages",
    "kernel.numa_balancing",
)

L2_PROBES: tuple[ProbeSpec, ...] = (
    ProbeSpec("l2_uname", argv=("uname", "-a"), timeout=5),
    ProbeSpec("l2_os_release", path="/etc/os-release"),
    ProbeSpec("l2_cmdline", path="/proc/cmdline"),
    ProbeSpec("l2_uptime", path="/proc/uptime"),
    ProbeSpec(
        "l2_nvidia_smi_q", argv=("nvidia-smi", "-q"), timeout=30, keep="head", max_bytes=4 * _MB
    ),
    ProbeSpec(
        "l2_nvidia_smi_perf",
        argv=("nvidia-smi", "-q", "-d", "PERFORMANCE"),
        timeout=30,
        keep="head",
    ),
    ProbeSpec(
        "l2_nvidia_smi_ecc",
        argv=("nvidia-smi", "-q", "-d", "ECC,PAGE_RETIREMENT,ROW_REMAPPER"),
        timeout=30,
        keep="head",
    ),
    ProbeSpec("l2_nvidia_smi_topo", argv=("nvidia-smi", "topo", "-m"), timeout=20, keep="head"),
    ProbeSpec(
        "l2_nvlink_status", argv=("nvidia-smi", "nvlink", "--status"), timeout=20, keep="head"
    ),
    ProbeSpec(
        "l2_lspci_nvidia",
        argv=("lspci", "-vvv", "-nn", "-D", "-d", "10de:"),
        timeout=20,
        keep="head",
        max_bytes=4 * _MB,
        root=True,
    ),
    ProbeSpec("l2_nvidia_driver_version", path="/proc/driver/nvidia/version"),
    ProbeSpec(
        "l2_nvidia_modules",
        shell="grep -E '^(nvidia|nv_peer|gdrdrv)' /proc/modules",
        not_supported_codes=(1,),
    ),
    ProbeSpec("l2_nvidia_module_version", glob="/sys/module/nvidia*/version"),
    ProbeSpec(
        "l2_kernel_log_current",
        argv=("journalctl", "-k", "-b", "0", "-o", "short-iso", "--no-pager"),
        timeout=30,
        max_bytes=16 * _MB,
        max_lines=200_000,
        root=True,
    ),
    ProbeSpec(
        "l2_kernel_log_previous",
        argv=("journalctl", "-k", "-b", "-1", "-o", "short-iso", "--no-pager"),
        timeout=30,
        max_bytes=16 * _MB,
        max_lines=200_000,
        root=True,
    ),
    ProbeSpec(
        "l2_dmesg",
        argv=("dmesg", "-x", "--time-format", "iso"),
        timeout=15,
        max_bytes=8 * _MB,
        max_lines=100_000,
        root=True,
    ),
    ProbeSpec("l2_boots", argv=("journalctl", "--list-boots", "--no-pager"), timeout=15),
    ProbeSpec("l2_last", argv=("last", "-Fx"), timeout=10, keep="head", max_lines=2000),
    ProbeSpec("l2_ras_summary", argv=("ras-mc-ctl", "--summary"), timeout=15, root=True),
    ProbeSpec("l2_ras_errors", argv=("ras-mc-ctl", "--errors"), timeout=15, root=True),
    ProbeSpec("l2_ipmi_sel", argv=("ipmitool", "sel", "elist"), timeout=30, root=True),
    ProbeSpec("l2_pstore", listing="/sys/fs/pstore"),
    ProbeSpec("l2_pstore_archived", listing="/var/lib/systemd/pstore"),
    ProbeSpec("l2_crash", listing="/var/crash"),
    ProbeSpec(
        "l2_crash_panic_records", glob="/var/crash/*/vmcore-dmesg.txt", max_files=4, keep="tail"
    ),
    ProbeSpec("l2_crash_dmesg_ubuntu", glob="/var/crash/*/dmesg.*", max_files=4, keep="tail"),
    ProbeSpec("l2_sysctl", argv=("sysctl", *SYSCTLS), timeout=5),
    ProbeSpec(
        "l2_systemd_failed", argv=("systemctl", "--failed", "--no-pager", "--plain"), timeout=10
    ),
    ProbeSpec(
        "l2_nvidia_services",
        argv=(
            "systemctl",
            "status",
            "--no-pager",
            "-n",
            "20",
            "nvidia-persistenced",
            "nvidia-fabricmanager",
            "nvidia-dcgm",
        ),
        timeout=10,
        not_supported_codes=(3, 4),
    ),
    ProbeSpec("l2_fabricmanager_log", path="/var/log/fabricmanager.log", max_bytes=2 * _MB),
    ProbeSpec("l2_agentctl_config", glob="/opt/agentctl/etc/*", max_files=8),
)

#: only with `--nvidia-bug-report` / `--dcgm-diag`
OPTIONAL_PROBES: dict[str, ProbeSpec] = {
    "nvidia_bug_report": ProbeSpec(
        "l2_nvidia_bug_report",
        shell=(
            'd=$(mktemp -d) || exit 1; trap \'rm -rf "$d"\' EXIT; cd "$d" || exit 1; '
            'nvidia-bug-report.sh --safe-mode --output-file "$d/r.log.gz" >/dev/null 2>&1; '
            'rc=$?; [ -f "$d/r.log.gz" ] && gzip -dc "$d/r.log.gz"; exit $rc'
        ),
        timeout=600,
        max_bytes=32 * _MB,
        max_lines=1_000_000,
        keep="head",
        root=True,
        optional=True,
    ),
    "dcgm_diag": ProbeSpec(
        "l2_dcgmi_diag_r1",
        argv=("dcgmi", "diag", "-r", "1"),
        timeout=300,
        keep="head",
        optional=True,
    ),
}
