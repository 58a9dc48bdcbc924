"""Targeted checks on the parsers beyond the golden files: the cases diagnostics rely on."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentctl.ctl.errors import UsageError
from agentctl.ctl.facts import (
    FAMILIES,
    cpu,
    disks,
    gpus,
    kernel,
    nvidia,
    os_release,
    pci,
    select_families,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "facts"


def raw(family: str, case: str) -> str:
    return (FIXTURES / family / f"{case}.txt").read_text(encoding="utf-8")


def test_registry_order_and_names() -> None:
    assert list(FAMILIES) == [
        "os",
        "kernel",
        "cpu",
        "memory",
        "disks",
        "nics",
        "systemd",
        "nvidia",
        "gpus",
        "pci",
    ]
    assert all(name == fam.name and fam.doc for name, fam in FAMILIES.items())


def test_select_families_unknown_name_raises_usage_error_listing_valid_names() -> None:
    with pytest.raises(UsageError) as info:
        select_families(["nope"])
    assert "nope" in info.value.message
    assert all(name in info.value.message for name in FAMILIES)


def test_select_families_none_is_all_and_names_keep_registry_order() -> None:
    assert select_families(None) == FAMILIES
    assert list(select_families(["gpus", "os", "gpus"])) == ["os", "gpus"]


def test_h100_eight_gpus() -> None:
    out = gpus.parse(raw("gpus", "h100_x8"))
    assert out["present"] is True and out["error"] is False and out["reason"] is None
    assert out["count"] == 8 == len(out["gpus"])
    assert [g["index"] for g in out["gpus"]] == list(range(8))
    first = out["gpus"][0]
    assert first["memory_total_mib"] == 81559
    assert first["power_limit_w"] == 700.0
    assert first["persistence_mode"] is True
    assert first["serial"] == "1652222000000"  # digits, but an identifier: stays a string
    assert out["not_supported"] == []


def test_gb10_na_values_become_none_and_are_listed() -> None:
    out = gpus.parse(raw("gpus", "gb10"))
    gpu = out["gpus"][0]
    assert out["present"] is True and out["error"] is False
    assert gpu["memory_total_mib"] is None and gpu["power_limit_w"] is None
    assert gpu["power_draw_w"] == 11.17 and gpu["temperature_c"] == 35
    assert {"memory_total_mib", "power_limit_w", "pcie_link_gen_current"} <= set(
        out["not_supported"]
    )


@pytest.mark.parametrize("value", ["[N/A]", "N/A", "[Not Supported]", "Not Supported", ""])
def test_unavailable_spellings(value: str) -> None:
    values = ["0"] + ["x"] * (len(gpus.COLUMNS) - 1)
    values[gpus.QUERY_FIELDS.index("power.limit")] = value
    gpu, unavailable = gpus.parse_row(values)
    assert gpu["power_limit_w"] is None
    assert unavailable == ["power_limit_w"]


def test_values_with_units_still_parse() -> None:
    """A query run without `nounits` (as in the GB10 paste: "0 %, 11.17 W") is not garbage."""
    values = ["x"] * len(gpus.COLUMNS)
    for field, text in [("memory.total", "81559 MiB"), ("power.draw", "11.17 W"),
                        ("utilization.gpu", "0 %"), ("index", "3")]:  # fmt: skip
        values[gpus.QUERY_FIELDS.index(field)] = text
    gpu, _ = gpus.parse_row(values)
    assert (gpu["memory_total_mib"], gpu["power_draw_w"], gpu["utilization_gpu_pct"]) == (
        81559,
        11.17,
        0,
    )


def test_no_gpu_host_is_plain_data() -> None:
    out = gpus.parse(raw("gpus", "debian12_local"))
    assert out == {
        "present": False,
        "count": 0,
        "gpus": [],
        "not_supported": [],
        "reason": "nvidia-smi not found",
        "error": False,
    }
    drv = nvidia.parse(raw("nvidia", "debian12_local"))
    assert drv["present"] is False and drv["reason"] == "no NVIDIA driver loaded"


def test_driver_library_mismatch_is_an_error_not_absence() -> None:
    out = gpus.parse(raw("gpus", "lib_mismatch"))
    assert out["present"] is None and out["error"] is True
    assert "Driver/library version mismatch" in out["reason"]
    drv = nvidia.parse(raw("nvidia", "lib_mismatch"))
    assert drv["present"] is True and drv["driver_version"] == "545.23.08"
    assert "mismatch" in drv["smi_error"]


def test_one_lost_gpu_keeps_the_others() -> None:
    out = gpus.parse(raw("gpus", "h100_one_lost"))
    assert out["present"] is True and out["error"] is True and out["count"] == 7
    assert "9D:00.0" in out["reason"]


def test_script_queries_exactly_the_declared_fields() -> None:
    assert f"--query-gpu={','.join(gpus.QUERY_FIELDS)} " in gpus.SCRIPT
    assert len(set(gpus.QUERY_FIELDS)) == len(gpus.QUERY_FIELDS) == 18
    assert len({c.key for c in gpus.COLUMNS}) == len(gpus.COLUMNS)


def test_nvidia_versions() -> None:
    h100 = nvidia.parse(raw("nvidia", "h100_545"))
    assert (h100["driver_version"], h100["cuda_version"]) == ("545.23.08", "12.3")
    gb10 = nvidia.parse(raw("nvidia", "gb10_open_580"))
    assert (gb10["driver_version"], gb10["open_kernel_module"]) == ("580.95.05", True)


def test_pci_counts_gpus_and_nvswitches() -> None:
    out = pci.parse(raw("pci", "hgx_h100_lspci"))
    assert (out["gpu_count"], out["nvswitch_count"]) == (8, 4)
    line = (
        "0000:01:00.1 Audio device [0403]: NVIDIA Corporation AD102 HD Audio [10de:22ba] (rev a1)"
    )
    audio = pci.parse("@@lspci\n" + line)
    assert audio["devices"][0]["class"] == "0403" and audio["gpu_count"] == 0


def test_taint_decoding() -> None:
    assert kernel.decode_taint(0) == []
    assert kernel.decode_taint(1 | 4096 | 8192) == ["P", "O", "E"]
    assert kernel.decode_taint(1 << 21) == ["bit21"]


def test_os_release_quoting() -> None:
    parsed = os_release.parse_os_release(
        ['PRETTY_NAME="A \\"quoted\\" name"', "ID='single'", "# comment", 'BROKEN="unterminated']
    )
    assert parsed == {"PRETTY_NAME": 'A "quoted" name', "ID": "single", "BROKEN": "unterminated"}


def test_cpu_mixed_arm_cores_and_legacy_hardware_line() -> None:
    block = "processor\t: {n}\nCPU implementer\t: 0x41\nCPU part\t: {part}\n"
    text = "@@cpuinfo\n" + "\n".join(
        block.format(n=n, part=p) for n, p in enumerate(["0xd85", "0xd87", "0xabc"])
    )
    out = cpu.parse(text)
    assert out["model_name"] == "ARM Cortex-X925 / ARM Cortex-A725 / ARM part 0xabc"
    assert out["threads"] == 3 and out["sockets"] is None and out["vendor"] == "ARM"
    legacy = cpu.parse("@@cpuinfo\nprocessor\t: 0\nBogoMIPS\t: 38.40\n\nHardware\t: BCM2835\n")
    assert legacy["model_name"] == "BCM2835"


def test_disks_flags_and_stacked_mounts() -> None:
    out = disks.parse(raw("disks", "dgx_like"))
    by_mount = {fs["mountpoint"]: fs for fs in out["filesystems"]}
    assert by_mount["/snap/core22/1380"]["pseudo"] and by_mount["/snap/core22/1380"]["read_only"]
    assert by_mount["/raid"]["read_only"] is True  # ro remount stacked on top wins
    assert by_mount["/mnt/scratch data"]["read_only"] is False  # \040 in /proc/mounts
    assert by_mount["/"]["pseudo"] is False
    models = {b["name"]: b["model"] for b in out["block_devices"]}
    assert models["sda"] == "SAMSUNG MZ7L31T9HBLT-00A07" and models["loop3"] is None
    assert disks.parse(raw("disks", "no_lsblk"))["block_devices"] == []
