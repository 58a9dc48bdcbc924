"""`agentctl diag l1`: probes, parsers and verdicts on recorded and composed probe outputs.

Scenarios live in tests/fixtures/diag/l1/<name>/ (README there says which are recorded on a
real host, which are verbatim public output and which are composed): `<probe>.txt` is a probe's
output, `scenario.json` its statuses, context, and the scenario it builds on (`base`).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agentctl.ctl.diag.l1 import (
    CHECK_NAMES,
    CheckResult,
    L1Context,
    L1Thresholds,
    context_from_vars,
    evaluate,
    l1_probes,
    overall,
)
from agentctl.ctl.diag.l1 import parse as P
from agentctl.ctl.diag.l1.probes import L1_SMI_FIELDS, xid_script
from agentctl.ctl.diag.probe import ProbeResult, ProbeStatus, result

FIXTURES = Path(__file__).parent / "fixtures" / "diag" / "l1"
SCENARIOS = sorted(p.name for p in FIXTURES.iterdir() if (p / "scenario.json").is_file())


# -- loading scenarios ------------------------------------------------------------------------


def _scenario(name: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """(context dict, probe name -> result fields), the base's merged under this one's."""
    d = FIXTURES / name
    meta = json.loads((d / "scenario.json").read_text())
    ctx: dict[str, Any] = {}
    probes: dict[str, dict[str, Any]] = {}
    if meta.get("base"):
        ctx, probes = _scenario(meta["base"])
    ctx = {**ctx, **meta.get("context", {})}
    for f in sorted(d.glob("*.txt")):
        probes[f.stem] = {"status": "ok", "exit_status": 0, "output": f.read_text()}
    for probe, st_ in meta.get("status", {}).items():
        probes.setdefault(probe, {"output": ""})
        probes[probe] = {**probes[probe], "stderr": "", "exit_status": None, **st_}
    return ctx, probes


def load(name: str) -> tuple[dict[str, ProbeResult], L1Context]:
    ctx_d, probes = _scenario(name)
    results = {
        n: ProbeResult(
            name=n,
            status=ProbeStatus(p.get("status", "ok")),
            output=p.get("output", ""),
            stderr=p.get("stderr", ""),
            exit_status=p.get("exit_status"),
            timed_out=p.get("status") == "timeout",
        )
        for n, p in probes.items()
    }
    ctx = context_from_vars(
        ctx_d.get("host", name),
        ctx_d.get("roles", []),
        ctx_d.get("vars", {}),
        ctx_d.get("expected_gpus"),
        datetime.fromisoformat(ctx_d["now"]),
    )
    return results, ctx


def run(name: str, **thresholds: Any) -> dict[str, CheckResult]:
    results, ctx = load(name)
    return {c.name: c for c in evaluate(results, ctx, L1Thresholds(**thresholds))}


def verdicts(checks: dict[str, CheckResult]) -> dict[str, str]:
    return {n: c.verdict for n, c in checks.items()}


GPU_CHECKS = [n for n in CHECK_NAMES if n.startswith(("gpu_", "nvidia_", "fabric_"))]
SYSTEM_PASS = {
    n: "pass"
    for n in (
        "disk_space",
        "disk_inodes",
        "readonly_mounts",
        "memory",
        "swap",
        "load",
        "kernel_taint",
        "nic_link",
        "nic_errors",
    )
}
H100_PASS = {
    **SYSTEM_PASS,
    "time_sync": "pass",
    "nvidia_driver": "pass",
    "gpu_count": "pass",
    "gpu_temperature": "pass",
    "gpu_power": "pass",
    "gpu_throttle": "pass",
    "gpu_ecc": "pass",
    "gpu_row_remap": "pass",
    "gpu_pcie_link": "pass",
    "gpu_persistence": "pass",
    "gpu_xid": "pass",
    "fabric_manager": "pass",
    "serving_processes": "skip",
    "serving_health": "skip",
}


# -- scenarios --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_scenario_gives_every_check_with_probe_statuses(name: str) -> None:
    results, ctx = load(name)
    checks = evaluate(results, ctx, L1Thresholds())
    assert [c.name for c in checks] == list(CHECK_NAMES)
    for c in checks:
        assert c.verdict in ("pass", "warn", "fail", "skip")
        assert c.reason and not c.reason.startswith("Internal error"), (c.name, c.reason)
        assert c.probes and all(isinstance(s, str) for s in c.probes.values())
        assert json.loads(json.dumps(c.to_json())) == c.to_json()
        assert len(json.dumps(c.evidence)) < 8000


def test_recorded_host_without_gpus_skips_gpu_checks() -> None:
    checks = run("nogpu_local")
    assert {n: checks[n].verdict for n in SYSTEM_PASS} == SYSTEM_PASS
    for n in GPU_CHECKS:
        assert checks[n].verdict == "skip", n
        assert "not applicable" in checks[n].reason
    assert checks["nvidia_driver"].probes["nvidia_smi"] == "missing_tool"
    # no timedatectl (no systemd as PID 1) and no chronyc here: skipped, statuses named
    assert checks["time_sync"].verdict == "skip"
    assert "missing_tool" in checks["time_sync"].reason
    assert "timedatectl: failed" in checks["time_sync"].reason
    assert checks["serving_health"].verdict == "skip"
    assert overall(list(checks.values())) == "pass"


def test_healthy_h100x8_passes_everything() -> None:
    checks = run("h100x8_healthy")
    assert verdicts(checks) == H100_PASS
    assert "565.57.01" in checks["nvidia_driver"].reason
    assert checks["gpu_count"].reason == "8 of 8 expected GPUs on nvidia-smi."
    assert "expected causes" in checks["kernel_taint"].reason  # 12289 = P+O+E
    assert checks["kernel_taint"].evidence["flags"] == ["P", "O", "E"]
    temps = checks["gpu_temperature"].evidence["gpus"]["items"]
    # slowdown from the T.Limit margins of the recorded -q: 30 + 57 - (-2) = 89 C
    assert {t["fail_at_c"] for t in temps} == {89.0}
    assert {t["limit_source"] for t in temps} == {"slowdown"}
    assert overall(list(checks.values())) == "pass"


def test_idle_gpus_at_gen1_pass_and_say_why() -> None:
    c = run("h100x8_idle_gen1")["gpu_pcie_link"]
    assert c.verdict == "pass"
    assert "while idle" in c.reason and "legitimately" in c.reason


def test_pcie_below_max_under_load_warns() -> None:
    c = run("pcie_downshift")["gpu_pcie_link"]
    assert c.verdict == "warn"
    assert "GPU 1 link at Gen 3 of 5 while 97% busy" in c.reason
    assert "GPU 4 link at x8 of x16" in c.reason


def test_driver_library_mismatch_fails_once_and_skips_per_gpu_checks() -> None:
    checks = run("lib_mismatch")
    c = checks["nvidia_driver"]
    assert c.verdict == "fail"
    assert "570.86.15" in c.reason and "565.57.01" in c.reason
    assert c.probes["nvidia_smi"] == "failed"
    for n in ("gpu_temperature", "gpu_power", "gpu_throttle", "gpu_ecc", "gpu_pcie_link"):
        assert checks[n].verdict == "skip"
        assert "Driver/library version mismatch" in checks[n].reason
    assert checks["gpu_count"].verdict == "pass"  # the PCI bus still shows all 8
    assert checks["gpu_row_remap"].verdict == "skip"


def test_gb10_not_supported_fields_skip_not_fail() -> None:
    checks = run("gb10")
    v = verdicts(checks)
    assert v["nvidia_driver"] == "pass" and v["gpu_count"] == "pass"
    assert v["gpu_temperature"] == "pass"
    for n in ("gpu_power", "gpu_ecc", "gpu_row_remap", "gpu_pcie_link"):
        assert v[n] == "skip", n
        assert "N/A" in checks[n].reason
    assert v["fabric_manager"] == "skip" and "No NVSwitch" in checks["fabric_manager"].reason
    assert overall(list(checks.values())) == "pass"


def test_hot_gpu_with_hw_slowdown() -> None:
    checks = run("hot_hw_slowdown")
    t = checks["gpu_temperature"]
    assert t.verdict == "fail"
    assert "GPU 3 at 91 C, at or past its slowdown limit 89 C" in t.reason
    assert "GPU 5 at 86 C, within 3 C of its slowdown limit 89 C" in t.reason
    th = checks["gpu_throttle"]
    assert th.verdict == "fail"
    assert "GPU 3 throttled by hw_thermal_slowdown, hw_slowdown" in th.reason
    assert "GPU 5 throttled by sw_thermal_slowdown" in th.reason


def test_without_q_thresholds_come_from_settings() -> None:
    results, ctx = load("hot_hw_slowdown")
    del results["nvidia_smi_q"]
    checks = {c.name: c for c in evaluate(results, ctx, L1Thresholds(gpu_temp_fail_c=95))}
    t = checks["gpu_temperature"]
    assert t.verdict == "warn"  # 91 and 86 C are past the default 85 C warn, short of 95
    assert {g["limit_source"] for g in t.evidence["gpus"]["items"]} == {"default"}
    assert checks["gpu_row_remap"].verdict == "skip"
    assert "nvidia_smi_q: not run" in checks["gpu_row_remap"].reason


def test_uncorrectable_ecc_and_row_remap() -> None:
    checks = run("ecc_remap")
    assert checks["gpu_ecc"].verdict == "fail"
    assert "GPU 2 has 2 uncorrectable ECC errors since the last reset" in checks["gpu_ecc"].reason
    r = checks["gpu_row_remap"]
    assert r.verdict == "fail"
    assert "GPU 6 row remapping failed" in r.reason
    assert "GPU 2 has a row remap pending" in r.reason


def test_recent_xid_79_fails_and_13_warns() -> None:
    c = run("xid_79_and_13")["gpu_xid"]
    assert c.verdict == "fail"
    assert c.reason.startswith(
        "Xid 79 (GPU has fallen off the bus) x1 on GPU 1 (0000:2a:00): RESTART_BM"
    )
    assert "Xid 13 (Graphics engine exception)" in c.reason
    codes = {x["xid"]: x for x in c.evidence["codes"]}
    assert codes[79]["verdict"] == "fail" and codes[79]["gpus"] == ["GPU 1 (0000:2a:00)"]
    assert codes[13]["verdict"] == "warn"
    assert codes[63]["verdict"] == "pass"  # informational: evidence only


def test_xid_13_alone_warns() -> None:
    c = run("xid_13_only")["gpu_xid"]
    assert c.verdict == "warn"
    assert "RESTART_APP" in c.reason


def test_xid_window_from_dmesg_uptime() -> None:
    c = run("xid_31_dmesg")["gpu_xid"]
    assert c.verdict == "warn"  # the Xid 79 is ~47 h old: outside the 24 h window
    assert [x["xid"] for x in c.evidence["codes"]] == [31]
    assert run("xid_31_dmesg", xid_window_hours=72)["gpu_xid"].verdict == "fail"
    assert run("xid_31_dmesg", xid_ignore=[31])["gpu_xid"].verdict == "pass"


def test_xid_outside_window_by_timestamp() -> None:
    results, ctx = load("xid_79_and_13")
    later = L1Context(
        ctx.host, ctx.expected_gpus, ctx.roles, ctx.serving, ctx.now + timedelta(days=2)
    )
    (c,) = [c for c in evaluate(results, later, L1Thresholds()) if c.name == "gpu_xid"]
    assert c.verdict == "pass" and c.reason.startswith("No Xid in the last 24 h")


def test_nvidia_smi_timeout_is_a_failure_on_a_gpu_host() -> None:
    checks = run("smi_timeout")
    assert checks["nvidia_driver"].verdict == "fail"
    assert "did not answer within 5 s" in checks["nvidia_driver"].reason
    assert checks["nvidia_driver"].probes["nvidia_smi"] == "timeout"
    x = checks["gpu_xid"]
    assert x.verdict == "fail" and "Xid 79" in x.reason  # the coded-less "fallen off the bus"
    assert checks["gpu_count"].verdict == "pass"  # lspci still sees 8 of 8


def test_gpu_count_short_of_inventory() -> None:
    c = run("gpu_count_short")["gpu_count"]
    assert c.verdict == "fail"
    assert c.reason == "nvidia-smi shows 7 of the 8 GPUs the inventory expects."


def test_gpu_lost_among_eight() -> None:
    checks = run("gpu_lost")
    c = checks["gpu_count"]
    assert c.verdict == "fail"
    assert "0000:9A:00.0" in c.reason and "PCI bus shows 8" in c.reason
    assert checks["nvidia_driver"].verdict == "pass"  # the driver answers for the other 7
    assert checks["gpu_temperature"].reason.startswith("GPU temperature fine on 7 GPUs")


def test_fabric_manager_inactive_with_nvswitches() -> None:
    c = run("fabricmanager_inactive")["fabric_manager"]
    assert c.verdict == "fail"
    assert "inactive with 4 NVSwitches" in c.reason
    assert c.probes == {"pci_nvidia": "ok", "fabricmanager": "failed"}


def test_full_disk_inodes_and_read_only_mount() -> None:
    checks = run("disk_full_ro")
    assert checks["disk_space"].verdict == "fail"
    assert "/ 96.9%" in checks["disk_space"].reason
    assert checks["disk_inodes"].verdict == "fail"
    assert "/var/lib/containerd 96%" in checks["disk_inodes"].reason
    ro = checks["readonly_mounts"]
    assert ro.verdict == "fail" and "/raid (ext4)" in ro.reason
    assert "/snap" not in ro.reason  # squashfs is read-only by nature


def test_nic_down_and_errors() -> None:
    checks = run("nic_down_errors")
    link = checks["nic_link"]
    assert link.verdict == "fail"
    assert link.reason == "Configured (admin up) interfaces without link: enp170s0f0np0."
    assert link.evidence["admin_down"] == ["eno2"]
    assert "docker0" not in json.dumps(link.evidence)
    err = checks["nic_errors"]
    assert err.verdict == "warn"  # 9.6e-4 errors per packet: past 1e-5, short of 1e-3
    assert "enp170s0f1np1 1204877 errors" in err.reason


def test_unsynced_clock() -> None:
    c = run("clock_unsynced")["time_sync"]
    assert c.verdict == "warn"
    assert "not synchronised" in c.reason and c.evidence["source"] == "chronyc"
    assert run("clock_unsynced", time_unsynced_verdict="fail")["time_sync"].verdict == "fail"


def test_tainted_kernel() -> None:
    c = run("kernel_tainted")["kernel_taint"]
    assert c.verdict == "fail"
    assert "the kernel died" in c.reason
    assert c.evidence["flags"] == ["P", "D", "W", "O"]


def test_serving_recorded_running() -> None:
    checks = run("serving_ok")
    assert checks["serving_processes"].verdict == "pass"
    assert checks["serving_processes"].evidence["up"] == [
        "worker-0 (supervisor)",
        "worker-1 (supervisor)",
        "router (supervisor)",
    ]
    assert checks["serving_health"].verdict == "pass"


def test_serving_recorded_worker_down() -> None:
    checks = run("serving_worker_down")
    assert checks["serving_processes"].verdict == "fail"
    assert "worker-1 (pid file stale, process 26027 gone)" in checks["serving_processes"].reason
    h = checks["serving_health"]
    assert h.reason == "Health endpoints failing: worker-1 (connection refused)."


def test_serving_recorded_router_without_workers() -> None:
    h = run("serving_router_503")["serving_health"]
    assert h.verdict == "fail"
    assert "router (HTTP 503, no_healthy_workers)" in h.reason


# -- probes and context -----------------------------------------------------------------------


def _ctx(**kw: Any) -> L1Context:
    args: dict[str, Any] = {"roles": [], "vars": {}, "expected_gpus": None}
    args.update(kw)
    return context_from_vars("h", args["roles"], args["vars"], args["expected_gpus"], NOW)


NOW = datetime(2026, 11, 23, 17, 0, tzinfo=UTC)


def test_probes_are_bounded_unique_and_read_only() -> None:
    probes = l1_probes(_ctx(roles=["worker", "router"], vars={"agentctl_workers": 3}))
    names = [p.name for p in probes]
    assert len(names) == len(set(names))
    for p in probes:
        assert p.timeout <= 5.0, p.name
        kinds = [p.argv, p.shell, p.path, p.glob, p.listing]
        assert sum(k is not None for k in kinds) == 1, p.name
        text = p.describe()
        for verb in (" rm ", "mkfs", "reboot", "systemctl restart", "systemctl start", " > /"):
            assert verb not in f" {text} ", (p.name, verb)
    smi = next(p for p in probes if p.name == "nvidia_smi")
    assert smi.argv is not None and smi.argv[1].endswith("persistence_mode,driver_version")
    assert "serving_health" in names and "serving_services" in names
    assert "serving_health" not in [p.name for p in l1_probes(_ctx())]


def test_serving_context_from_vars() -> None:
    ctx = _ctx(
        roles=["worker", "router"],
        vars={
            "agentctl_workers": "2",
            "agentctl_worker_base_port": 9001,
            "agentctl_router_port": 9080,
            "agentctl_listen_address": "0.0.0.0",
            "agentctl_install_root": "/srv/agentctl/",
        },
    )
    assert ctx.serving is not None
    assert ctx.serving.services() == ("worker-0", "worker-1", "router")
    assert [u for _, u in ctx.serving.endpoints()] == [
        "http://127.0.0.1:9001/health",
        "http://127.0.0.1:9002/health",
        "http://127.0.0.1:9080/health",
    ]
    assert ctx.serving.install_root == "/srv/agentctl"
    v6 = _ctx(roles=["worker"], vars={"agentctl_listen_address": "fd00::5"}).serving
    assert v6 is not None and v6.endpoints() == (("worker-0", "http://[fd00::5]:8001/health"),)
    odd = _ctx(
        roles=["worker"], vars={"agentctl_listen_address": "a b;rm", "agentctl_workers": "x"}
    )
    assert odd.serving is not None and odd.serving.probe_address() == "127.0.0.1"
    assert odd.serving.workers == 1
    addr = context_from_vars("h", ["worker"], {}, None, NOW, address="10.0.0.7").serving
    assert addr is not None and addr.probe_address() == "10.0.0.7"
    naive = context_from_vars("h", [], {}, None, datetime(2026, 1, 1))
    assert naive.now.tzinfo is UTC and naive.serving is None


def test_xid_script_window() -> None:
    assert "--since=-90min" in xid_script(1.5)
    assert "@@unreadable" in xid_script(24)


def test_thresholds_validate_order_and_unknown_keys() -> None:
    with pytest.raises(ValidationError, match="disk_used"):
        L1Thresholds(disk_used_warn_pct=99, disk_used_fail_pct=90)
    with pytest.raises(ValidationError):
        L1Thresholds.model_validate({"no_such_threshold": 1})
    for name, f in L1Thresholds.model_fields.items():
        assert f.description, name


# -- parsers ----------------------------------------------------------------------------------


def test_parsers_on_small_inputs() -> None:
    assert P.parse_cpu_list("0-63,128-191\n") == 128
    assert P.parse_cpu_list("3") == 1 and P.parse_cpu_list("") is None
    assert P.parse_loadavg("1.66 1.05 1.06 2/91 24081") == P.LoadAvg(1.66, 1.05, 1.06)
    assert P.parse_loadavg("nan 1 1") is None
    assert P.bus_key("00000000:1B:00.0") == P.bus_key("0000:1b:00.0") == P.bus_key("0000:1b:00")
    ch = P.parse_chrony(
        "System time     : 2.500000000 seconds slow of NTP time\nLeap status : Normal"
    )
    assert ch is not None and ch.offset_s == -2.5 and ch.synchronised
    assert P.parse_chrony("506 Cannot talk to daemon") is None
    table = P.parse_smi_table(
        "Unable to determine the device handle for GPU0000:9A:00.0: Unknown Error\nNo devices",
        L1_SMI_FIELDS,
    )
    assert table.lost == ["0000:9A:00.0"] and table.messages == ["No devices"] and not table.gpus
    mismatch = P.smi_failure("Failed to initialize NVML: Driver/library version mismatch\n")
    assert mismatch is not None and mismatch.kind == "lib_mismatch"
    assert (
        P.mounts_for_facts(P.parse_mounts("/dev/a /mnt/x\\040y ext4 ro 0 0")) == "/mnt/x\\040y ro"
    )


def test_absolute_slowdown_temperature_of_older_drivers() -> None:
    q = (
        "GPU 00000000:19:00.0\n    Temperature\n        GPU Current Temp                  : 40 C\n"
        "        GPU Shutdown Temp                 : 92 C\n"
        "        GPU Slowdown Temp                 : 89 C\n"
        "        GPU Max Operating Temp            : 87 C\n"
    )
    assert P.parse_smi_q_temps(q) == {"0000:19:00": P.TempLimits(40, 89, 92, "absolute")}


def test_xid_45_solo_and_not_solo() -> None:
    results, ctx = load("h100x8_healthy")
    line = "2026-11-23T16:00:00+0000 n kernel: NVRM: Xid (PCI:0000:18:00): {x}, pid=1, name=p, m\n"

    def xid(*codes: int) -> CheckResult:
        text = "@@source journal\n" + "".join(line.format(x=c) for c in codes)
        rs = {**results, "xid_log": result("xid_log", text)}
        return next(c for c in evaluate(rs, ctx, L1Thresholds()) if c.name == "gpu_xid")

    solo = xid(45)
    assert solo.verdict == "warn" and "RESTART_FM" in solo.reason
    follows = xid(45, 31)
    assert follows.verdict == "warn"
    assert {x["xid"]: x["verdict"] for x in follows.evidence["codes"]} == {31: "warn", 45: "pass"}
    assert xid(154).verdict == "pass"  # no action named: informational
    drain = "GPU recovery action changed from 0x0 (None) to 0x4 (Drain and Reset)"
    rs = {**results, "xid_log": result("xid_log", "@@source journal\n" + line.format(x=154)[:-2])}
    rs["xid_log"] = result("xid_log", rs["xid_log"].output + drain + "\n")
    c = next(c for c in evaluate(rs, ctx, L1Thresholds()) if c.name == "gpu_xid")
    assert c.verdict == "fail" and "Drain and Reset" in c.reason


def test_unreadable_kernel_log_warns() -> None:
    results, ctx = load("h100x8_healthy")
    rs = {
        **results,
        "xid_log": result("xid_log", "@@source dmesg\n@@uptime 5\n@@unreadable dmesg\n"),
    }
    c = next(c for c in evaluate(rs, ctx, L1Thresholds()) if c.name == "gpu_xid")
    assert c.verdict == "warn" and "needs root" in c.reason


def test_overall_ignores_skips() -> None:
    def c(v: str) -> CheckResult:
        return CheckResult("x", "system", v, "r")  # type: ignore[arg-type]

    assert overall([c("skip"), c("pass")]) == "pass"
    assert overall([c("skip"), c("warn"), c("pass")]) == "warn"
    assert overall([c("fail"), c("warn")]) == "fail"
    assert overall([c("skip")]) == "skip" and overall([]) == "skip"


# -- never raises -----------------------------------------------------------------------------

_PROBE_NAMES = [p.name for p in l1_probes(_ctx(roles=["worker", "router"]))]
_TEXT = st.one_of(
    st.text(max_size=200),
    st.sampled_from(
        [
            "0x0000000000000048",
            "[N/A]",
            "@@source journal\n2026-11-23T16:00:00+0000 k: NVRM: Xid (PCI:0000:18:00): 79, x",
            "@@source dmesg\n@@uptime nan\n[ 1.0] NVRM: Xid (PCI:0000:18:00): 45, y",
            '{"url": "http://127.0.0.1:8001/health", "code": true, "body": 3}',
            "service=worker-0 manager=supervisor state=running pid=x",
            "name=eth0 operstate=down carrier=zz flags=0x1 type=1 device=1",
            "Leap status : Not synchronised\nSystem time : abc seconds fast of NTP time",
            "@@lspci\n0000:05:00.0 Bridge [0680]: NVIDIA Corporation X [10de:22a3]",
        ]
    ),
)


def _smi_line() -> st.SearchStrategy[str]:
    cell = st.one_of(
        st.sampled_from(["[N/A]", "0", "-1", "1e9", "Enabled", "0xZZ", ""]), st.text(max_size=8)
    )
    return st.lists(cell, min_size=len(L1_SMI_FIELDS), max_size=len(L1_SMI_FIELDS)).map(
        lambda cells: ", ".join(["0", *cells[1:]])
    )


@settings(
    max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(
    outputs=st.dictionaries(st.sampled_from(_PROBE_NAMES), _TEXT, max_size=len(_PROBE_NAMES)),
    statuses=st.dictionaries(st.sampled_from(_PROBE_NAMES), st.sampled_from(list(ProbeStatus))),
    smi=st.lists(_smi_line(), max_size=3),
    expected=st.one_of(st.none(), st.integers(min_value=-1, max_value=16)),
)
def test_evaluate_never_raises(
    outputs: dict[str, str],
    statuses: dict[str, ProbeStatus],
    smi: list[str],
    expected: int | None,
) -> None:
    if smi:
        outputs["nvidia_smi"] = "\n".join(smi)
    results = {
        n: ProbeResult(n, statuses.get(n, ProbeStatus.OK), outputs.get(n, ""), exit_status=1)
        for n in set(outputs) | set(statuses)
    }
    ctx = context_from_vars("h", ["worker", "router"], {}, expected, NOW)
    checks = evaluate(results, ctx, L1Thresholds())
    assert [c.name for c in checks] == list(CHECK_NAMES)
    for c in checks:
        assert not c.reason.startswith("Internal error"), (c.name, c.reason)
        json.dumps(c.to_json())


@settings(max_examples=60, deadline=None, database=None)
@given(st.sampled_from(SCENARIOS), st.data())
def test_evaluate_never_raises_on_mangled_scenarios(name: str, data: st.DataObject) -> None:
    results, ctx = load(name)
    victim = data.draw(st.sampled_from(sorted(results)))
    r = results[victim]
    cut = data.draw(st.integers(min_value=0, max_value=max(0, len(r.output))))
    status = data.draw(st.sampled_from(list(ProbeStatus)))
    results[victim] = ProbeResult(victim, status, r.output[:cut], exit_status=r.exit_status)
    for c in evaluate(results, ctx, L1Thresholds()):
        assert not c.reason.startswith("Internal error"), (c.name, c.reason)


def test_a_kernel_log_cut_right_after_its_source_marker_parses() -> None:
    """Found by the mangling property test: output cut to exactly `@@source `."""
    from agentctl.ctl.diag.l1.parse import parse_xid_log

    log = parse_xid_log("@@source \n")
    assert log.source is None and log.events == []
