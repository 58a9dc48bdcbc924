"""GPU collectors on recorded outputs of real GPUs (provenance: tests/fixtures/gpu/README.md)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from agentctl.collectors.gpu.nvml import NvmlSource, NvmlSourceError
from agentctl.collectors.gpu.replay import ReplayMissError, ReplayNvml
from agentctl.collectors.gpu.sample import Status, decode_clock_reasons
from agentctl.collectors.gpu.smi import (
    SMI_FIELDS,
    parse_nvidia_smi_q,
    parse_smi_csv,
    smi_command,
    value_reading,
)
from agentctl.collectors.gpu.xid import XidCursor, parse_xid_line, read_xids, xid_command

FX = Path(__file__).resolve().parents[2] / "fixtures" / "gpu"
H100_Q = FX / "h100x8_smi_q_565.57.01_first2.txt"
H100_NVML = FX / "nvml_h100x2_565.57.01.json"


def _calls() -> list[dict]:
    return json.loads(H100_NVML.read_text())["calls"]


# -- nvidia-smi -q -----------------------------------------------------------------------


def test_smi_q_reads_both_h100s_with_na_as_not_supported() -> None:
    node = parse_nvidia_smi_q(H100_Q.read_text())
    assert node.driver_version.value == "565.57.01"
    assert node.cuda_driver_version.value == "12.7"
    assert [g.pci_bus_id.value for g in node.gpus] == ["00000000:18:00.0", "00000000:2A:00.0"]
    g0, g1 = node.gpus
    assert g0.uuid.value == "GPU-b42dd28e-ffdd-8720-1df0-98bd8cdc05b1"
    assert g0.memory_total_bytes.value == 81559 * 1024 * 1024
    assert (g0.power_draw_w.value, g0.power_limit_w.value) == (100.89, 700.0)
    assert (g0.sm_clock_mhz.value, g0.mem_clock_mhz.value) == (345, 2619)
    assert g0.clock_event_reason_names.value == ("gpu_idle",)
    assert (g0.pcie_gen_current.value, g0.pcie_width_max.value) == (5, 16)
    assert (g0.pcie_replay_counter.value, g1.pcie_replay_counter.value) == (7, 0)
    assert g0.remapped_rows.value is not None and g0.remapped_rows.value.pending is False
    # H100: "Retired Pages: N/A" and no fan: not supported, never 0.
    assert g0.retired_pages.status is Status.NOT_SUPPORTED and g0.retired_pages.value is None
    assert g0.fan_speed_pct.status is Status.NOT_SUPPORTED
    assert g0.nvlinks.status is Status.NOT_COLLECTED  # -q does not show link state
    assert set(node.problems) == {
        f"gpu{i}.{f}"
        for i in (0, 1)
        for f in ("retired_pages", "retired_pages_pending", "fan_speed_pct")
    }


# -- nvidia-smi --query-gpu CSV ----------------------------------------------------------


def test_csv_with_header_and_units_multi_gpu() -> None:
    gpus = parse_smi_csv(
        (FX / "h100_name_busid_vbios.csv").read_text(), ["name", "pci.bus_id", "vbios_version"]
    )
    assert [g.index for g in gpus] == [0, 1]
    assert [g.pci_bus_id.value for g in gpus] == ["00000000:04:00.0", "00000000:8B:00.0"]
    assert gpus[0].name.value == "NVIDIA H100 80GB HBM3"
    assert gpus[0].temperature_c.status is Status.NOT_COLLECTED


def test_csv_gb10_memory_is_not_supported_not_zero() -> None:
    (g,) = parse_smi_csv(
        (FX / "gb10_name_memtotal_driver.csv").read_text(),
        ["name", "memory.total", "driver_version"],
    )
    assert g.name.value == "NVIDIA GB10"
    assert g.memory_total_bytes.status is Status.NOT_SUPPORTED
    assert g.memory_total_bytes.value is None
    assert "memory_total_bytes" in g.problems()


@pytest.mark.parametrize(
    ("raw", "status"),
    [
        ("[N/A]", Status.NOT_SUPPORTED),
        ("N/A", Status.NOT_SUPPORTED),
        ("[Not Supported]", Status.NOT_SUPPORTED),
        ("[Unknown Error]", Status.ERROR),
        ("[Insufficient Permissions]", Status.NO_PERMISSION),
        ("garbage", Status.ERROR),
        ("72.02 W", Status.OK),
        ("72.02", Status.OK),
    ],
)
def test_cell_markers(raw: str, status: Status) -> None:
    from agentctl.collectors.gpu.smi import _num

    assert value_reading(raw, _num).status is status


def test_short_row_is_an_error_on_every_field_not_a_shifted_read() -> None:
    (g,) = parse_smi_csv("0, GPU-x\n", ["index", "uuid", "name"])
    assert g.uuid.status is Status.ERROR and g.name.status is Status.ERROR


def test_smi_command_is_a_safe_argv() -> None:
    argv = smi_command()
    assert argv[0] == "nvidia-smi" and argv[-1] == "--format=csv,noheader,nounits"
    assert shlex.split(shlex.join(argv)) == argv
    assert argv[1] == "--query-gpu=" + ",".join(SMI_FIELDS)
    with pytest.raises(ValueError):
        smi_command(["index; rm -rf /"])


# -- NVML through the replay -------------------------------------------------------------


def test_nvml_replay_reads_every_field() -> None:
    node = NvmlSource(ReplayNvml(_calls())).sample()
    assert (node.driver_version.value, node.cuda_driver_version.value) == ("565.57.01", "12.7")
    g0 = node.gpus[0]
    assert g0.pci_bus_id.value == "00000000:18:00.0"
    assert g0.power_draw_w.value == 100.89 and g0.power_limit_w.value == 700.0
    assert g0.memory_used_bytes.value == 1024 * 1024
    assert g0.ecc_uncorrected_volatile.value == 0
    assert g0.remapped_rows.value == (0, 0, False, False)
    assert g0.nvlinks.value == (18, 18)
    assert g0.clock_event_reason_names.value == ("gpu_idle",)
    # pynvml's real NVMLError_NotSupported went through NvmlSource's except clause.
    assert g0.retired_pages.status is Status.NOT_SUPPORTED
    assert g0.fan_speed_pct.status is Status.NOT_SUPPORTED
    assert (
        "NotSupported" not in g0.fan_speed_pct.detail or "Not Supported" in g0.fan_speed_pct.detail
    )


def test_nvml_and_smi_q_agree_on_the_same_recording() -> None:
    via_nvml = NvmlSource(ReplayNvml(_calls())).sample()
    via_q = parse_nvidia_smi_q(H100_Q.read_text())
    skip = {"nvlinks", "retired_pages_pending"}
    for a, b in zip(via_nvml.gpus, via_q.gpus, strict=True):
        for name, r in a.readings().items():
            if name not in skip:
                assert (name, r.status, r.value) == (
                    name,
                    b.readings()[name].status,
                    b.readings()[name].value,
                )


def test_clock_reasons_fall_back_to_throttle_reasons_on_old_drivers() -> None:
    """An older driver lacks ...ClocksEventReasons (FunctionNotFound)."""
    calls = []
    for c in _calls():
        if c["fn"] == "nvmlDeviceGetCurrentClocksEventReasons":
            calls.append({"fn": c["fn"], "args": c["args"], "error": "FunctionNotFound"})
            calls.append({**c, "fn": "nvmlDeviceGetCurrentClocksThrottleReasons"})
        else:
            calls.append(c)
    replay = ReplayNvml(calls)
    g0 = NvmlSource(replay).sample().gpus[0]
    assert g0.clock_event_reasons.value == 1
    assert any("ThrottleReasons" in k for k in replay.asked)


def test_permission_and_other_errors_are_kept_apart() -> None:
    calls = _calls()
    for c in calls:
        if c["fn"] == "nvmlDeviceGetPcieReplayCounter":
            c.pop("return")
            c["error"] = "NoPermission" if c["args"] == ["gpu0"] else "GpuIsLost"
    node = NvmlSource(ReplayNvml(calls)).sample()
    assert node.gpus[0].pcie_replay_counter.status is Status.NO_PERMISSION
    assert node.gpus[1].pcie_replay_counter.status is Status.ERROR
    assert "GpuIsLost" in node.gpus[1].pcie_replay_counter.detail


@pytest.mark.parametrize(
    ("err", "kind"),
    [("DriverNotLoaded", "driver_not_loaded"), ("LibRmVersionMismatch", "driver_library_mismatch")],
)
def test_init_failure_is_a_clear_source_error(err: str, kind: str) -> None:
    with pytest.raises(NvmlSourceError) as exc:
        NvmlSource(ReplayNvml([{"fn": "nvmlInit", "args": [], "error": err}])).sample()
    assert exc.value.kind == kind


def test_a_call_missing_from_the_fixture_fails_loudly() -> None:
    calls = [c for c in _calls() if c["fn"] != "nvmlDeviceGetFanSpeed"]
    with pytest.raises(ReplayMissError):
        NvmlSource(ReplayNvml(calls)).sample()


def test_decode_keeps_unknown_bits() -> None:
    assert decode_clock_reasons(0x4 | 0x40 | 0x8000) == (
        "sw_power_cap",
        "hw_thermal_slowdown",
        "unknown_0x8000",
    )


# -- Xid ----------------------------------------------------------------------------------


def test_xid_lines_of_every_format() -> None:
    events = [
        e
        for ln in (FX / "xid_lines_misc.txt").read_text().splitlines()
        if (e := parse_xid_line(ln))
    ]
    assert [e.xid for e in events] == [79, 119, 13, 48, 63, 74]
    e79, e119, e13, _, e63, e74 = events
    assert (e79.pci_bus_id, e79.pid, e79.process) == ("0004:01:00", None, None)
    assert (e119.pid, e119.process, e119.message) == (
        430,
        "nv_queue",
        "Timeout waiting for RPC from GSP!",
    )
    assert e13.time == "2025-01-21T04:41:44,283302+00:00"
    assert e13.message.startswith("Graphics SM Global Exception")
    assert (e63.pid, e63.process) == (1896, None)
    assert e74.info.severity == "critical" and e79.info.action.startswith("RESTART_BM")
    assert e13.info.severity == "app"


def test_xid_154_names_the_recovery_action() -> None:
    events, _ = read_xids((FX / "xid_dmesg_raw.txt").read_text())
    assert [e.xid for e in events] == [31, 79, 154]
    assert events[0].time == "130.456250" and events[0].process == "llama-bench"
    assert events[2].info.action == "Drain and Reset"


def test_dmesg_dedup_across_two_reads() -> None:
    lines = (FX / "xid_dmesg_raw.txt").read_text().splitlines()
    first, cur = read_xids("\n".join(lines[:2]))
    assert [e.xid for e in first] == [31, 79]
    second, cur2 = read_xids("\n".join(lines), cur)
    assert [e.xid for e in second] == [154]
    third, _ = read_xids("\n".join(lines), cur2)
    assert third == []
    # The ring buffer wrapped past the last line seen: everything is new again.
    again, _ = read_xids(lines[2], XidCursor(last_line_sha="0" * 32))
    assert [e.xid for e in again] == [154]


def test_journal_read_returns_its_cursor_and_builds_the_next_command() -> None:
    events, cur = read_xids((FX / "xid_journal_short.txt").read_text())
    assert [(e.xid, e.time, e.pci_bus_id) for e in events] == [
        (120, "Aug 19 21:36:23", "0000:23:00")
    ]
    assert cur.journal is not None and cur.journal.startswith("s=739ad463")
    argv = xid_command(cur)
    assert argv[:2] == ["journalctl", "-k"] and argv[-1] == f"--after-cursor={cur.journal}"
    assert shlex.split(shlex.join(argv)) == argv
    assert xid_command(None)[-2:] == ["-b", "0"]
    assert xid_command(cur, journal=False) == ["dmesg"]
    # An empty read (no new entries) keeps the old cursor.
    assert read_xids("", cur)[1] == cur


def test_xid_times_in_every_stamp_style_and_dedup_keys() -> None:
    from datetime import UTC, datetime, timedelta

    from agentctl.collectors.gpu.xid import dedup_key, parse_xid_line, xid_time

    now = datetime(2026, 1, 2, tzinfo=UTC)
    boot = datetime(2026, 1, 1, tzinfo=UTC)
    assert xid_time("2025-01-21T04:41:44,283302+00:00", now=now) == datetime(
        2025, 1, 21, 4, 41, 44, 283302, tzinfo=UTC
    )
    assert xid_time("2026-01-01T12:00:00+0100", now=now) == datetime(2026, 1, 1, 11, tzinfo=UTC)
    assert xid_time("130.5", now=now) is None  # [seconds] without a boot time: unknown
    assert xid_time("130.5", now=now, boot_time=boot) == boot + timedelta(seconds=130.5)
    assert xid_time("Dec 31 23:00:00", now=now) == datetime(2025, 12, 31, 23, tzinfo=UTC)
    assert xid_time("Jan  1 01:00:00", now=now) == datetime(2026, 1, 1, 1, tzinfo=UTC)
    assert xid_time("Thu Jan  1 01:00:00 2026", now=now) == datetime(2026, 1, 1, 1, tzinfo=UTC)
    for junk in ("", None, "Foo 99 99:99:99", "9999-99-99T00:00:00", "1e400"):
        assert xid_time(junk, now=now) is None
    a = parse_xid_line("NVRM: Xid (PCI:0000:06:00): 79, GPU has fallen off the bus.")
    b = parse_xid_line("NVRM: Xid (PCI:0000:06:00.0): 79, GPU has fallen off the bus.")
    assert a is not None and b is not None and dedup_key(a) == dedup_key(b) == "xid:0000:06:00:79"


def test_node_sample_json_round_trip_keeps_every_status() -> None:
    from agentctl.collectors.gpu.nvml import NvmlSource
    from agentctl.collectors.gpu.replay import ReplayNvml
    from agentctl.collectors.gpu.sample import node_sample_from_json

    fixture = Path(__file__).resolve().parents[2] / "fixtures/gpu/nvml_h100x2_565.57.01.json"
    sample = NvmlSource(ReplayNvml.from_file(fixture)).sample()
    doc = sample.to_json()
    back = node_sample_from_json(doc)
    assert back.to_json() == doc
    assert back.gpus[0].remapped_rows.value is not None
    assert back.gpus[0].remapped_rows.value.pending is False
    junk = node_sample_from_json({"gpus": [{"index": 0, "temperature_c": {"status": "??"}}, 5]})
    assert len(junk.gpus) == 1 and junk.gpus[0].temperature_c.status == "error"
