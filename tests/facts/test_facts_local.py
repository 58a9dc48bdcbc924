"""End to end on this machine: the composed script runs under POSIX sh and every family parses.

Also runs the real gpus/pci/nvidia snippets against stand-in `nvidia-smi` and `lspci`
executables, which checks the shell side (sentinels, exit codes, arguments) without a GPU.
"""

from __future__ import annotations

import os
import platform
import shutil
import socket
import stat
import subprocess
from pathlib import Path

import children
import pytest

from agentctl.ctl.facts import FAMILIES, gpus, nvidia, pci
from agentctl.ctl.facts.base import compose_script, parse_all, split_sections

pytestmark = pytest.mark.skipif(platform.system() != "Linux", reason="facts target Linux hosts")

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "facts"
SBIN_PATH = os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/local/sbin"


def run_script(script: str, env: dict[str, str] | None = None) -> str:
    proc = children.run(  # a timeout stops the script's own children too
        ["/bin/sh", "-c", script], capture_output=True, text=True, timeout=60, env=env
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_all_scripts_are_valid_posix_sh() -> None:
    shells = [s for s in ("/bin/sh", shutil.which("dash")) if s]
    for shell in shells:
        for fam in FAMILIES.values():
            proc = subprocess.run([shell, "-n", "-c", fam.script], capture_output=True, text=True)
            assert proc.returncode == 0, f"{shell} {fam.name}: {proc.stderr}"


def test_compose_script_runs_locally_and_parses() -> None:
    output = run_script(compose_script(FAMILIES))  # run_script's timeout bounds a hang
    assert set(split_sections(output)) == set(FAMILIES)
    facts, problems = parse_all(output, FAMILIES)
    assert problems == {}

    assert facts["os"]["architecture"] == platform.machine()
    assert facts["os"]["hostname"] == socket.gethostname()
    assert facts["os"]["id"]
    assert facts["kernel"]["release"] == platform.release()
    assert facts["kernel"]["boot_id"] == (
        Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
    )
    assert facts["kernel"]["uptime_seconds"] > 0
    mem = facts["memory"]
    assert mem["total_bytes"] > 0 and 0 <= mem["available_bytes"] <= mem["total_bytes"]
    assert facts["cpu"]["nproc"] == len(os.sched_getaffinity(0))
    assert facts["cpu"]["threads"] >= facts["cpu"]["nproc"]
    assert "/" in {fs["mountpoint"] for fs in facts["disks"]["filesystems"]}
    assert "lo" in {i["name"] for i in facts["nics"]["interfaces"]}
    pid1 = Path("/proc/1/comm").read_text(encoding="utf-8").strip()
    assert facts["systemd"]["pid1"] == pid1
    if shutil.which("nvidia-smi", path=SBIN_PATH) is None:
        assert facts["gpus"]["present"] is False
        assert facts["gpus"]["reason"] == "nvidia-smi not found"


def _tool_dir(tmp_path: Path, tools: dict[str, str]) -> dict[str, str]:
    """A PATH holding only the needed coreutils plus the given stand-in scripts."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("cat", "head", "grep", "cut", "uname", "df", "nproc", "sed"):
        real = shutil.which(name)
        if real:
            (bindir / name).symlink_to(real)
    for name, body in tools.items():
        exe = bindir / name
        exe.write_text("#!/bin/sh\n" + body, encoding="utf-8")
        exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return {"PATH": str(bindir), "LC_ALL": "C"}


def test_gpus_snippet_with_stand_in_nvidia_smi(tmp_path: Path) -> None:
    rows = FIXTURES / "gpus" / "h100_x8.txt"
    args = tmp_path / "args"
    env = _tool_dir(tmp_path, {"nvidia-smi": f'echo "$@" > {args}\ngrep -v "^@@" {rows}\n'})
    out = gpus.parse(run_script(gpus.SCRIPT, env))
    assert out["present"] is True and out["count"] == 8
    assert args.read_text().split() == [
        f"--query-gpu={','.join(gpus.QUERY_FIELDS)}",
        "--format=csv,noheader,nounits",
    ]


def test_gpus_snippet_reports_nvidia_smi_failure(tmp_path: Path) -> None:
    body = "echo 'Failed to initialize NVML: Driver/library version mismatch'\nexit 18\n"
    env = _tool_dir(tmp_path, {"nvidia-smi": body})
    out = gpus.parse(run_script(gpus.SCRIPT, env))
    assert out["error"] is True and out["present"] is None
    assert out["reason"] == "Failed to initialize NVML: Driver/library version mismatch"


def test_snippets_without_any_nvidia_tool(tmp_path: Path) -> None:
    env = _tool_dir(tmp_path, {})
    assert gpus.parse(run_script(gpus.SCRIPT, env))["reason"] == "nvidia-smi not found"
    assert nvidia.parse(run_script(nvidia.SCRIPT, env))["nvidia_smi_found"] is False
    assert pci.parse(run_script(pci.SCRIPT, env))["source"] == "sysfs"


def test_nvidia_and_pci_snippets_with_stand_ins(tmp_path: Path) -> None:
    header = FIXTURES / "nvidia" / "h100_545.txt"
    lspci = FIXTURES / "pci" / "hgx_h100_lspci.txt"
    env = _tool_dir(
        tmp_path,
        {
            "nvidia-smi": f"sed -n '/^rc=/,$p' {header} | grep -v '^rc='\n",
            "lspci": f'[ "$*" = "-Dnn -d 10de:" ] || exit 1\ngrep -v "^@@" {lspci}\n',
        },
    )
    drv = nvidia.parse(run_script(nvidia.SCRIPT, env))
    assert drv["cuda_version"] == "12.3" and drv["smi_error"] is None
    bus = pci.parse(run_script(pci.SCRIPT, env))
    assert (bus["source"], bus["gpu_count"], bus["nvswitch_count"]) == ("lspci", 8, 4)


def test_missing_hostname_and_lsblk_fall_back(tmp_path: Path) -> None:
    env = _tool_dir(tmp_path, {})
    facts, problems = parse_all(run_script(compose_script(FAMILIES), env), FAMILIES)
    assert problems == {}
    assert facts["os"]["hostname"] == socket.gethostname()  # from /proc/sys/kernel/hostname
    if shutil.which("lsblk", path=env["PATH"] + ":/usr/sbin:/sbin:/usr/local/sbin") is None:
        assert facts["disks"]["lsblk_available"] is False
        assert facts["disks"]["block_devices"] == []
