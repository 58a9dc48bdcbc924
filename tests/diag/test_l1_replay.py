"""L1 on a replayed GPU, judged offline: the system probes of a real host recorded here
(tests/fixtures/diag/l1/nogpu_local), the GPU probes as the node's venv prints them from the
shipped recordings; checks say `Replayed GPU (<set>)`, and a node without the venv never
passes its Xid check on a log it could not read."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from agentctl.ctl.diag.l1 import L1Thresholds, context_from_vars, evaluate, l1_probes
from agentctl.ctl.diag.probe import ProbeResult, ProbeStatus, result

LOCAL = Path(__file__).resolve().parents[1] / "fixtures" / "diag" / "l1" / "nogpu_local"
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def _ctx(python: str, set_name: str = "h100-xid48"):
    v = {"agentctl_gpu_replay": set_name, "agentctl_python": python, "agentctl_workers": 0}
    return context_from_vars("n1", ["worker"], v, None, NOW)


def _run(spec) -> ProbeResult:  # what the node runner does for argv and shell probes
    argv = list(spec.argv) if spec.argv else ["sh", "-c", spec.shell]
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError:
        return ProbeResult(spec.name, ProbeStatus.MISSING_TOOL, exit_status=127)
    status = ProbeStatus.OK
    if res.returncode == 127:
        status = ProbeStatus.MISSING_TOOL
    elif res.returncode in spec.not_supported_codes:
        status = ProbeStatus.NOT_SUPPORTED
    elif res.returncode:
        status = ProbeStatus.FAILED
    return ProbeResult(spec.name, status, res.stdout, res.stderr, res.returncode)


def _results(ctx) -> dict[str, ProbeResult]:
    out = {f.stem: result(f.stem, f.read_text()) for f in LOCAL.glob("*.txt")}
    gpu = ("nvidia_version", "modules", "pci_nvidia", "nvidia_smi", "nvidia_smi_q", "xid_log",
           "fabricmanager")  # fmt: skip
    for spec in l1_probes(ctx, L1Thresholds()):
        if spec.name in gpu:
            out[spec.name] = _run(spec)
    return out


def test_the_recordings_are_judged_like_a_gpu_and_every_gpu_check_says_replayed() -> None:
    ctx = _ctx(sys.executable)
    checks = {c.name: c for c in evaluate(_results(ctx), ctx, L1Thresholds())}
    assert checks["gpu_xid"].verdict == "fail" and "Xid 48" in checks["gpu_xid"].reason
    assert checks["gpu_count"].verdict == "pass" and checks["nvidia_driver"].verdict == "pass"
    for c in checks.values():
        if c.category == "gpu":
            assert c.reason.startswith("Replayed GPU (h100-xid48): "), c
            assert c.evidence["replayed"] == "h100-xid48"
        else:
            assert "replayed" not in c.evidence and "Replayed" not in c.reason
    clean = _ctx(sys.executable, "h100")
    xid = next(c for c in evaluate(_results(clean), clean, L1Thresholds()) if c.name == "gpu_xid")
    assert xid.verdict == "pass" and xid.reason.startswith("Replayed GPU (h100): No Xid")


def test_without_the_venv_on_the_node_nothing_passes_as_a_clean_replay() -> None:
    ctx = _ctx("/nonexistent/venv/bin/python")
    results = _results(ctx)
    assert results["xid_log"].status == ProbeStatus.MISSING_TOOL
    checks = {c.name: c for c in evaluate(results, ctx, L1Thresholds())}
    assert checks["gpu_xid"].verdict != "pass"
    for name in ("gpu_xid", "gpu_count", "nvidia_driver"):
        assert checks[name].reason.startswith("Replayed GPU (h100-xid48) unreadable ("), name
