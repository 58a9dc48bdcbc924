"""Host metric parsers on /proc and df text captured from a real machine
(tests/fixtures/host/README.md)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from agentctl.collectors.host import parse as H

FX = Path(__file__).resolve().parents[2] / "fixtures" / "host"


def _read(name: str) -> str:
    return (FX / name).read_text()


def _output(*, second_stat: bool) -> str:
    """What `script()` prints, assembled from the captured files."""
    parts = ["@@stat", _read("proc_stat_1.txt").splitlines()[0]]
    if second_stat:
        parts += ["@@stat", _read("proc_stat_2.txt").splitlines()[0]]
    for name, file in (("meminfo", "proc_meminfo.txt"), ("loadavg", "proc_loadavg.txt"),
                       ("nproc", "nproc.txt"), ("df", "df_P_B1_root.txt")):  # fmt: skip
        parts += [f"@@{name}", _read(file).rstrip("\n")]
    return "\n".join(parts) + "\n"


def test_cpu_line_leaves_guest_time_out_and_counts_iowait_as_idle() -> None:
    first = H.parse_cpu_line(_read("proc_stat_1.txt").splitlines()[0])
    # cpu  80054 0 22115 63865 642 0 457 1059 0 0
    assert first == H.CpuTimes(busy=80054 + 22115 + 457 + 1059, idle=63865 + 642)
    assert H.parse_cpu_line("cpu0 1 2 3 4") is None  # a per-CPU line is not the aggregate
    assert H.parse_cpu_line("cpu  x y z w v") is None


def test_cpu_utilisation_between_two_real_reads() -> None:
    a = H.parse_cpu_line(_read("proc_stat_1.txt").splitlines()[0])
    b = H.parse_cpu_line(_read("proc_stat_2.txt").splitlines()[0])
    assert a is not None and b is not None
    assert H.cpu_util_pct(a, b) == pytest.approx(100.0)  # no idle jiffy passed
    assert H.cpu_util_pct(b, a) is None  # counters going back: a reboot, not a value
    assert H.cpu_util_pct(a, a) is None


def test_meminfo_uses_memavailable_and_falls_back_on_old_kernels() -> None:
    mem = H.parse_meminfo(_read("proc_meminfo.txt"))
    assert mem == H.MemInfo(24683772 * 1024, 23857456 * 1024)
    assert mem.used_pct == pytest.approx(100 * (24683772 - 23857456) / 24683772)
    old = "\n".join(ln for ln in _read("proc_meminfo.txt").splitlines()
                    if not ln.startswith("MemAvailable"))  # fmt: skip
    fallback = H.parse_meminfo(old)
    assert fallback is not None and fallback.available_bytes == (22650784 + 38620 + 1279628) * 1024
    assert H.parse_meminfo("") is None


def test_loadavg_and_df_root() -> None:
    assert H.parse_loadavg(_read("proc_loadavg.txt")) == H.LoadAvg(2.81, 2.07, 1.26)
    assert H.parse_loadavg("garbage") is None
    (root,) = H.parse_df(_read("df_P_B1_root.txt"))
    assert root == H.DiskUsage("/", 270553174016, 25990098944, 82954194944)
    assert round(root.used_pct) == 24  # what df printed as Capacity
    spaced = "Filesystem 1-blocks Used Available Capacity Mounted on\nmy disk 10 4 6 40% /data\n"
    assert H.parse_df(spaced) == [H.DiskUsage("/data", 10, 4, 6)]


def test_first_read_takes_cpu_over_its_own_two_stat_lines_later_ones_over_the_interval() -> None:
    first = H.parse(_output(second_stat=True))
    assert first.cpu_util_pct == pytest.approx(100.0)
    assert first.values() == {
        "cpu_util_pct": pytest.approx(100.0), "cpus": 2.0,
        "mem_total_bytes": 24683772 * 1024.0, "mem_used_bytes": (24683772 - 23857456) * 1024.0,
        "mem_used_pct": pytest.approx(100 * (24683772 - 23857456) / 24683772),
        "load1": 2.81, "load5": 2.07, "load15": 1.26,
        "disk_total_bytes": 270553174016.0, "disk_used_bytes": 25990098944.0,
        "disk_used_pct": pytest.approx(100 * 25990098944 / (25990098944 + 82954194944)),
    }  # fmt: skip
    # a later pass: one stat line, compared with the previous pass's reading
    later = H.parse(
        _output(second_stat=False), before=H.CpuTimes(busy=103685 - 1686, idle=64507 - 1507)
    )
    assert later.cpu_util_pct == pytest.approx(100 * 1686 / (1686 + 1507))
    # no baseline and a single read: no utilisation rather than a since-boot average
    assert "cpu_util_pct" not in H.parse(_output(second_stat=False)).values()


def test_unreadable_sections_give_no_values_not_zeros() -> None:
    got = H.parse("@@stat\n@@meminfo\n@@loadavg\n@@nproc\n@@df\n")
    assert got.values() == {}


def test_the_script_runs_here_and_parses() -> None:
    """The node-side shell on this machine: every value comes back (a Linux host)."""
    res = subprocess.run(["sh", "-c", H.script(first=True)], capture_output=True, text=True,
                         timeout=30, check=True)  # fmt: skip
    got = H.parse(res.stdout).values()
    assert {"cpu_util_pct", "mem_used_pct", "load1", "disk_used_pct", "cpus"} <= set(got)
    assert 0 <= got["cpu_util_pct"] <= 100 and 0 < got["mem_used_pct"] < 100
