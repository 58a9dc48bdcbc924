"""Replayed GPUs from the recordings shipped in the package: provenance holds (byte for byte),
frames are real measured values, L1's inputs match what nvidia-smi printed."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from importlib import resources

import pytest

from agentctl.collectors.gpu import recorded as R
from agentctl.collectors.gpu.smi import SMI_FIELDS, parse_smi_csv
from agentctl.collectors.gpu.xid import read_xids


def test_every_recording_is_listed_with_its_sha256_and_origin() -> None:
    folder = resources.files("agentctl.collectors.gpu").joinpath("recordings")
    shipped = {p.name for p in folder.iterdir() if p.name not in ("SOURCES.tsv", "README.md")}
    prov = R.provenance()
    assert shipped == set(prov)
    for name, row in prov.items():
        data = folder.joinpath(name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == row["sha256"], name
        assert row["repo"] and row["path"] and row["note"]
    for s in R.REPLAY_SETS.values():
        assert set(s.files()) <= set(prov)


def test_capture_sections_and_dmon_rows() -> None:
    s = R.replay_set("h100")
    sections = R.capture_sections(R.recording_text(s.capture))
    assert {"idle :: query (-q)", "load :: query (-q)",
            "idle :: dmon (per-device monitor, incl. PCIe rx/tx)"} <= set(sections)  # fmt: skip
    assert sections["idle :: query (-q)"].startswith("\n==============NVSMI LOG==")
    load = R.dmon_rows(s, "load")
    assert [r.power_w for r in load] == [631.0, 634.0, 633.0, 634.0, 636.0]
    assert {r.sm_pct for r in load} == {100.0}
    assert [r.power_w for r in R.dmon_rows(s, "idle")] == [69.0] * 5
    assert R.parse_dmon("# gpu pwr\n# Idx W\n 0 - \n") == [R.DmonRow(0, *([None] * 7))]


def test_frames_are_the_recorded_gpu_in_its_phase_with_a_dmon_row_laid_over() -> None:
    s = R.replay_set("h100-xid48")
    idle, load = R.frame(s, "idle", 0), R.frame(s, "load", 4)
    assert idle.source == load.source == "replay:h100-xid48"
    (gi,), (gl,) = idle.gpus, load.gpus
    assert gi.name.value == "NVIDIA H100 80GB HBM3" and gi.pci_bus_id.value == "00000000:00:09.0"
    assert (gi.utilization_gpu_pct.value, gi.temperature_c.value, gi.power_draw_w.value) == (
        0, 41, 69.0)  # fmt: skip
    assert (gl.utilization_gpu_pct.value, gl.temperature_c.value, gl.power_draw_w.value) == (
        100, 65, 636.0)  # fmt: skip
    assert gl.memory_used_bytes.value == 19818 * 1024 * 1024  # the load -q's FB memory used
    assert gi.power_limit_w.value == 700.0 and gl.sm_clock_mhz.value == 1980
    assert R.frame(s, "load", 9).gpus[0].power_draw_w.value == 636.0  # k mod 5
    doc = R.frame_json(s, "load", 7)
    assert doc["replayed"] == {"set": "h100-xid48", "title": s.title, "phase": "load",
                               "frame": 2, "frames": 5}  # fmt: skip
    with pytest.raises(R.ReplayError):
        R.frame(s, "busy", 0)
    with pytest.raises(R.ReplayError):
        R.replay_set("a100")


def test_csv_projection_is_what_nvidia_smi_printed_without_units() -> None:
    s = R.replay_set("h100")
    text = R.smi_csv(s, SMI_FIELDS, "load")
    (g,) = parse_smi_csv(text, SMI_FIELDS)
    assert g.memory_used_bytes.value == 19818 * 1024 * 1024 and g.sm_clock_mhz.value == 1980
    assert g.power_draw_w.value == pytest.approx(631.95) and g.temperature_c.value == 59
    assert g.retired_pages_pending.status.value == "not_supported"  # printed [N/A]
    assert "MiB" not in text and " W" not in text and "%" not in text
    assert R.smi_csv(s, ["name", "pci.bus_id"]) == "NVIDIA H100 80GB HBM3, 00000000:00:09.0\n"
    with pytest.raises(R.ReplayError):
        R.smi_csv(s, ["index", "no.such.field"])


def test_kernel_logs_are_verbatim_and_hold_the_real_xid() -> None:
    assert R.kernel_log(R.replay_set("h100")) == ""
    log = R.kernel_log(R.replay_set("h100-xid48"))
    events, _ = read_xids(log)
    assert [e.xid for e in events] == [48, 171, 48, 63, 154]
    assert R.set_of_source("replay:h100-xid48") is R.replay_set("h100-xid48")
    assert R.set_of_source(None) is None and not R.is_replayed("nvml")


def test_the_node_side_command_prints_frames_and_refuses_unknown_things() -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "agentctl.collectors.gpu", "replay", *args],
                              capture_output=True, text=True, timeout=60, check=False)  # fmt: skip

    res = run("sample", "h100", "--phase", "load", "--frame", "1")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["source"] == "replay:h100" and doc["gpus"][0]["power_draw_w"]["value"] == 634.0
    assert run("smi-q", "h100").stdout == R.smi_q(R.replay_set("h100"))
    assert run("kernel-log", "h100-xid48").stdout.count("NVRM: Xid") == 5
    assert run("smi-csv", "h100", "--fields", "index,bogus").returncode == 4
    assert run("sample", "nope").returncode == 4
    assert run("sample").returncode == 2
