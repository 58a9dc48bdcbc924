"""Fan-out benchmark: agentctl against Ansible and pyinfra on the same loopback sshd fleet.

Reported, never asserted: wall time of whole commands (process start included, as an operator
sees it) at equal parallelism, on the same inventory file, in the same process, with ratios.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agentctl.ctl.fleet import LocalFleet


@dataclass
class Measurement:
    tool: str
    job: str
    seconds: list[float] = field(default_factory=list)
    ok: bool = True
    note: str = ""

    @property
    def best(self) -> float:
        return min(self.seconds) if self.seconds else float("nan")

    @property
    def median(self) -> float:
        return statistics.median(self.seconds) if self.seconds else float("nan")


def _timed(argv: Sequence[str], env: dict[str, str], cwd: Path) -> tuple[float, bool, str]:
    started = time.perf_counter()
    proc = subprocess.run(
        list(argv), env=env, cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )
    elapsed = time.perf_counter() - started
    tail = (proc.stderr or proc.stdout)[-300:]
    return elapsed, proc.returncode == 0, tail


def _pyinfra_inventory(fleet: LocalFleet, path: Path, known_hosts: Path) -> Path:
    lines = ["hosts = ["]
    for n in fleet.nodes:
        data = {
            "ssh_hostname": n.address,
            "ssh_port": n.port,
            "ssh_user": fleet.user,
            "ssh_key": str(fleet.client_key),
            "ssh_known_hosts_file": str(known_hosts),
            "ssh_strict_host_key_checking": "yes",
        }
        lines.append(f"    ({n.name!r}, {data!r}),")
    lines.append("]")
    path.write_text("\n".join(lines) + "\n")
    return path


def run_fanout_bench(
    hosts: int = 50,
    forks: int | None = None,
    repeat: int = 1,
    command: Sequence[str] = ("uname", "-a"),
    workdir: Path | None = None,
) -> list[Measurement]:
    forks = forks or hosts
    root = workdir or Path(tempfile.mkdtemp(prefix="agentctl-bench-"))
    fleet = LocalFleet(root / "fleet", hosts, log_level="ERROR")
    fleet.start()
    try:
        inventory = fleet.write_inventory(root / "inventory.yml")
        known_hosts = fleet.write_known_hosts(root / "known_hosts")
        env = dict(os.environ)
        env.update(
            {
                "AGENTCTL_DATA_DIR": str(root / "data"),
                "AGENTCTL_STATE_DIR": str(root / "state"),
                "AGENTCTL_KNOWN_HOSTS": str(known_hosts),
                "AGENTCTL_USE_SSH_CONFIG": "false",
                "AGENTCTL_CONFIG": str(root / "none.toml"),
                "ANSIBLE_HOST_KEY_CHECKING": "True",
                "ANSIBLE_SSH_ARGS": f"-o UserKnownHostsFile={known_hosts} -o ControlMaster=no",
                "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
                "ANSIBLE_LOCALHOST_WARNING": "False",
                "ANSIBLE_NOCOWS": "1",
            }
        )
        (root / "none.toml").write_text("")
        agentctl = [sys.executable, "-m", "agentctl.ctl", "-i", str(inventory), "--json"]
        jobs: list[tuple[str, str, list[str]]] = [
            ("agentctl", "command", [*agentctl, "run", "-f", str(forks), "--", *command]),
            ("agentctl", "facts", [*agentctl, "facts", "-f", str(forks)]),
        ]
        ansible = shutil.which("ansible")
        if ansible:
            base = [ansible, "all", "-i", str(inventory), "-f", str(forks)]
            jobs.append(("ansible", "command", [*base, "-m", "shell", "-a", " ".join(command)]))
            jobs.append(("ansible", "facts", [*base, "-m", "setup"]))
        pyinfra = shutil.which("pyinfra")
        if pyinfra:
            inv_py = _pyinfra_inventory(fleet, root / "pyinfra_inventory.py", known_hosts)
            base = [pyinfra, "-y", "--parallel", str(forks), str(inv_py)]
            jobs.append(("pyinfra", "command", [*base, "exec", "--", *command]))
            jobs.append(
                (
                    "pyinfra",
                    "facts",
                    [*base, "fact", "server.Os", "server.Hostname", "server.LinuxDistribution"],
                )
            )
        results: list[Measurement] = []
        for tool, job, argv in jobs:
            m = Measurement(tool, job)
            for _ in range(repeat):
                seconds, ok, tail = _timed(argv, env, root)
                m.seconds.append(seconds)
                if not ok:
                    m.ok, m.note = (
                        False,
                        tail.strip().splitlines()[-1] if tail.strip() else "failed",
                    )
            results.append(m)
        return results
    finally:
        fleet.stop()
