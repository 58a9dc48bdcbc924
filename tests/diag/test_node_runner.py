"""The node-side probe runner, run for real as a subprocess with this machine's python3: every
probe status, bounds with markers, redaction before anything is printed, Python 3.8 syntax."""

from __future__ import annotations

import ast
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import children
import proctable
import pytest

from agentctl.ctl.diag.probe import ProbeSpec, ProbeStatus
from agentctl.ctl.diag.remote import parse_answer

DIAG = Path(__file__).resolve().parents[2] / "ctl" / "diag"
#: a node's python: the system one, without agentctl installed
NODE_PYTHON = "/usr/bin/python3"
#: the slow probe sleeps longer than _run's timeout (so the runner cannot wait it out), with
#: this run's pid in it (so it is told apart from other runs' sleeps)
SLOW = f"300.{os.getpid()}"


@pytest.fixture(autouse=True)
def _system_python() -> None:
    if not Path(NODE_PYTHON).exists():
        pytest.skip("no system python3")


def _run(tmp_path: Path, probes: list[ProbeSpec], **redact: Any) -> Any:
    # the shipped layout: runner and redactor side by side, outside the package
    for name in ("node_runner.py", "redact.py"):
        (tmp_path / name).write_text((DIAG / name).read_text())
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"probes": [p.to_json() for p in probes], "redact": redact}))
    res = children.run(  # a timeout stops the probes' processes too
        [NODE_PYTHON, "-I", str(tmp_path / "node_runner.py"), str(spec)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    return parse_answer(res.stdout)


def test_every_status_is_told_apart(tmp_path: Path) -> None:
    (tmp_path / "f.txt").write_text("hello\n")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.log").write_text("A\n")
    (tmp_path / "d" / "b.log").write_text("B\n")
    probes = [
        ProbeSpec("ok", argv=("echo", "hi")),
        ProbeSpec("missing", argv=("no-such-tool-agentctl",)),
        ProbeSpec("missing_sh", shell="no-such-tool-agentctl --x"),
        ProbeSpec("slow", argv=("sleep", SLOW), timeout=0.5),
        ProbeSpec("denied", shell="echo 'ipmitool: Operation not permitted' >&2; exit 1"),
        ProbeSpec("absent_code", shell="exit 4", not_supported_codes=(4,)),
        ProbeSpec("failed", shell="echo partial; exit 3"),
        ProbeSpec("file", path=str(tmp_path / "f.txt")),
        ProbeSpec("no_file", path=str(tmp_path / "nope")),
        ProbeSpec("glob", glob=str(tmp_path / "d" / "*.log")),
        ProbeSpec("no_glob", glob=str(tmp_path / "d" / "*.none")),
        ProbeSpec("listing", listing=str(tmp_path / "d")),
        ProbeSpec("no_listing", listing=str(tmp_path / "nodir")),
    ]
    got = _run(tmp_path, probes).results
    status = {k: v.status for k, v in got.items()}
    assert status == {
        "ok": ProbeStatus.OK,
        "missing": ProbeStatus.MISSING_TOOL,
        "missing_sh": ProbeStatus.MISSING_TOOL,
        "slow": ProbeStatus.TIMEOUT,
        "denied": ProbeStatus.PERMISSION_DENIED,
        "absent_code": ProbeStatus.NOT_SUPPORTED,
        "failed": ProbeStatus.FAILED,
        "file": ProbeStatus.OK,
        "no_file": ProbeStatus.NOT_SUPPORTED,
        "glob": ProbeStatus.OK,
        "no_glob": ProbeStatus.NOT_SUPPORTED,
        "listing": ProbeStatus.OK,
        "no_listing": ProbeStatus.NOT_SUPPORTED,
    }
    assert got["slow"].timed_out
    # and the probe was killed, not left behind: the runner waits for nothing it started
    assert not [p for p in proctable.snapshot().values() if p.argv == ("sleep", SLOW)]
    assert got["failed"].output == "partial\n" and got["failed"].exit_status == 3
    assert got["glob"].output.splitlines() == [
        f"==> {tmp_path}/d/a.log <==", "A", "", f"==> {tmp_path}/d/b.log <==", "B", "",
    ]  # fmt: skip
    lines = got["listing"].output.splitlines()
    assert [ln.split()[2:] for ln in lines] == [
        ["f", f"{tmp_path}/d/a.log"], ["f", f"{tmp_path}/d/b.log"],
    ]  # fmt: skip


def test_outputs_are_bounded_with_a_marker_keeping_the_chosen_end(tmp_path: Path) -> None:
    probes = [
        ProbeSpec("log", shell="seq 1 1000", max_lines=10, keep="tail"),
        ProbeSpec("report", shell="seq 1 1000", max_lines=10, keep="head"),
        ProbeSpec("bytes", shell="head -c 100000 /dev/zero | tr '\\0' x", max_bytes=1000),
    ]
    got = _run(tmp_path, probes).results
    log = got["log"].output.splitlines()
    assert log[0].startswith("[... agentctl: output cut, 990 lines") and log[-1] == "1000"
    report = got["report"].output.splitlines()
    assert report[0] == "1" and report[-1].startswith("[... agentctl: output cut")
    assert got["bytes"].truncated and got["bytes"].bytes == 100_000
    assert len(got["bytes"].output) < 1200


def test_secrets_are_redacted_on_the_node_and_hosts_can_be_pseudonymized(tmp_path: Path) -> None:
    cfg = tmp_path / "router.yaml"
    cfg.write_text("admin_token: 8f3e1c2d9a7b6e5f4c3d2a1b\nlisten: 10.1.2.3:8000\n")
    probes = [
        ProbeSpec("cfg", path=str(cfg)),
        ProbeSpec("env", shell="echo HF_TOKEN=hf_abcdefghijklmnopqrstuvwxyz0123; echo sudo-pw-42"),
    ]
    answer = _run(tmp_path, probes, pseudonymize=True, hostnames=["gpu-a.example.org"],
                  extra_secrets=["sudo-pw-42"])  # fmt: skip
    text = "".join(r.output for r in answer.results.values())
    for secret in ("8f3e1c2d9a7b6e5f4c3d2a1b", "hf_abcdefghijklmnopqrstuvwxyz0123", "sudo-pw-42",
                   "10.1.2.3"):  # fmt: skip
        assert secret not in text
    assert answer.mapping["10.1.2.3"] in text
    assert sum(answer.redaction_counts.values()) >= 3


def test_the_runner_keeps_python_3_8_syntax() -> None:
    for name in ("node_runner.py", "redact.py"):
        ast.parse((DIAG / name).read_text(), feature_version=(3, 8))


def test_a_runner_without_its_redactor_refuses_to_run(tmp_path: Path) -> None:
    (tmp_path / "node_runner.py").write_text((DIAG / "node_runner.py").read_text())
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"probes": [ProbeSpec("x", argv=("echo", "x")).to_json()]}))
    res = subprocess.run([NODE_PYTHON, "-I", str(tmp_path / "node_runner.py"), str(spec)],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert res.returncode != 0 and res.stdout == ""
    assert "redact" in res.stderr


@pytest.mark.parametrize("junk", ["", "not json", "[]", '{"results": 5}'])
def test_a_malformed_answer_is_a_clear_error(junk: str) -> None:
    from agentctl.ctl.diag.remote import DiagError

    with pytest.raises(DiagError, match="runner answered"):
        parse_answer(junk)
