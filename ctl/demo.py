"""The embedded default: a small local fleet that `agentctl demo` brings up, trusts and inspects.

Nodes are real loopback sshd processes with their own host keys. Their keys are trusted by
comparing what each node offers on the wire with the public key file the demo generated for it
(an out-of-band check, as an operator would do with a console), never blindly. Where sshd cannot
run, one node uses the local connector instead.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from agentctl.ctl.errors import HostKeyError
from agentctl.ctl.fleet import FleetError, LocalFleet, find_sshd, free_port_run


@dataclass
class DemoFleet:
    root: Path
    inventory_path: Path
    fleet: LocalFleet | None
    notes: list[str] = field(default_factory=list)

    @property
    def mode(self) -> str:
        return "sshd" if self.fleet is not None else "local"

    def expected_fingerprints(self) -> dict[str, str]:
        """known_hosts key -> SHA256 fingerprint, from the key files on disk."""
        out: dict[str, str] = {}
        if self.fleet is None:
            return out
        for node in self.fleet.nodes:
            _host, _type, b64 = node.host_key_line().split()
            digest = hashlib.sha256(base64.b64decode(b64)).digest()
            out[node.known_hosts_key] = "SHA256:" + base64.b64encode(digest).decode().rstrip("=")
        return out

    def verify_fingerprint(self, known_hosts_key: str, fingerprint: str) -> None:
        expected = self.expected_fingerprints().get(known_hosts_key)
        if expected != fingerprint:
            raise HostKeyError(
                f"{known_hosts_key} offered {fingerprint}, but its key file says {expected}",
                changed=True,
            )

    def stop(self) -> None:
        if self.fleet is not None:
            self.fleet.stop()


def start_demo_fleet(root: Path, nodes: int = 3) -> DemoFleet:
    """Start the demo's nodes under `root` on loopback addresses and ports of its own.

    Addresses come from a block derived from the directory (127.0.1.1 and up: the test suite's
    fleets use 127.0.0.x), and every port is probed free, so two demos, or a demo and the test
    suite, never share a listener or send one's admin token to the other's router.
    """
    root.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    leftovers = stop_leftovers(root)
    if leftovers:
        notes.append(
            "an earlier demo in this directory was stopped before it could clean up; stopped "
            "what it left running: " + ", ".join(leftovers)
        )
    inventory_path = root / "inventory.yml"
    seed = _seed(root)
    if find_sshd() is not None:
        fleet = LocalFleet(
            root / "fleet", nodes, first_address=address_block(seed, nodes), die_with_parent=True
        )
        try:
            fleet.start()
        except FleetError as exc:
            fleet.stop()
            notes.append(f"sshd could not start ({exc}); using the local connector")
        else:
            names = [n.name for n in fleet.nodes]
            doc = fleet.inventory(groups={"routers": names[:1], "workers": names[1:] or names})
            _add_role_vars(doc)
            _add_serving_vars(doc, root)
            _add_ports(doc, seed)
            inventory_path.write_text(yaml.safe_dump(doc, sort_keys=False))
            return DemoFleet(root, inventory_path, fleet, notes)
    else:
        notes.append("sshd not found (install openssh-server); using the local connector")
    local_doc: dict[str, object] = {
        "all": {
            "hosts": {
                "localhost": {
                    "ansible_connection": "local",
                    "ansible_host": "127.0.0.1",
                    "agentctl_roles": ["router", "worker"],
                }
            }
        }
    }
    _add_serving_vars(local_doc, root)
    _add_ports(local_doc, seed)
    inventory_path.write_text(yaml.safe_dump(local_doc, sort_keys=False))
    return DemoFleet(root, inventory_path, None, notes)


def _seed(root: Path) -> int:
    """A number that stays the same for one demo directory and differs between directories."""
    return int.from_bytes(hashlib.sha256(str(root.resolve()).encode()).digest()[:4], "big")


def address_block(seed: int, count: int) -> int:
    """The first node's address index for `LocalFleet`: 254 and up is 127.0.1.1 onwards."""
    return 254 + seed % (254 * 249 - count)


def _add_ports(doc: dict[str, object], seed: int) -> None:
    """Router, worker and KV-event ports per host, free on the host's own address."""
    all_group = doc["all"]
    assert isinstance(all_group, dict)
    workers = int(all_group.get("vars", {}).get("agentctl_workers", 1))
    for hv in all_group["hosts"].values():
        first = free_port_run(hv["ansible_host"], 1 + 3 * workers, 20000 + seed % 10000)
        hv["agentctl_router_port"] = first
        hv["agentctl_worker_base_port"] = first + 1
        hv["agentctl_events_base_port"] = first + 1 + workers


def stop_leftovers(root: Path) -> list[str]:
    """Stop what an earlier demo in `root` left running (it was killed before it could stop
    its services and nodes): the services it deployed, then its sshd nodes."""
    stopped = stop_services(root)
    for pid_file in sorted((root / "fleet").glob("*/sshd.pid")):
        config = str(pid_file.parent / "sshd_config")
        try:
            pid = int(pid_file.read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
        if config in cmdline:  # that pid is still our sshd, not a recycled number
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            stopped.append(f"sshd {pid_file.parent.name}")
            _wait_gone(pid)
    return stopped


def _wait_gone(pid: int, timeout_s: float = 5.0) -> None:
    """Until `pid` has exited (its listener closed), at most `timeout_s`."""
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:  # a zombie (exited, its parent not yet reaping) has closed its sockets too
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return
        if state == "Z":
            return
        time.sleep(0.05)


#: the demo's serving stack: fast simulated engines with small caches, two workers per node
DEMO_SERVING_VARS = {
    # Everything installs under the demo directory as the login user, so nothing needs root:
    # the playbooks' `become: true` tasks run without sudo (a connection variable beats the
    # keyword), and a non-root user runs the demo as root does.
    "ansible_become": False,
    "agentctl_time_scale": 0.05,
    "agentctl_worker_engine": {"capacity_blocks": 4096},
    "agentctl_workers": 2,
    "agentctl_health_timeout": 60,
}


def _add_serving_vars(doc: dict[str, object], root: Path) -> None:
    """Each node installs under the demo directory (the nodes share this machine); worker
    nodes get replayed GPUs (`agentctl_gpu_replay`: recordings shipped in the package, labelled
    replayed everywhere), the last one with a recorded Xid (ctl/demo_story.py)."""
    from agentctl.ctl.demo_story import replay_sets

    all_group = doc["all"]
    assert isinstance(all_group, dict)
    all_group.setdefault("vars", {}).update(DEMO_SERVING_VARS)
    for name, hv in all_group["hosts"].items():
        hv["agentctl_install_root"] = str(root / "nodes" / name)
    children = all_group.get("children") or {}
    workers = list((children.get("workers") or {}).get("hosts") or {}) or [
        name for name, hv in all_group["hosts"].items() if "worker" in hv.get("agentctl_roles", [])
    ]
    for name, rset in replay_sets(workers).items():
        all_group["hosts"][name]["agentctl_gpu_replay"] = rset


def stop_services(root: Path) -> list[str]:
    """Stop every service the demo deployed (the nodes are local: their state dirs are here);
    returns `node/service` for each one that was running."""
    import json
    import subprocess

    stopped = []
    for node in sorted((root / "nodes").glob("*")):
        py = node / "venv" / "bin" / "python"
        if py.exists() and (node / "state").is_dir():
            res = subprocess.run(
                [str(py), "-m", "agentctl.serving", "supervise", "stop", "--all",
                 "--dir", str(node / "state")],
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            with contextlib.suppress(ValueError, TypeError, AttributeError, IndexError):
                services = json.loads(res.stdout.strip().splitlines()[-1])["services"]
                stopped += [f"{node.name}/{s['name']}" for s in services if s.get("changed")]
    return stopped


def _add_role_vars(doc: dict[str, object]) -> None:
    all_group = doc["all"]
    assert isinstance(all_group, dict)
    children = all_group.get("children", {})
    roles = {"routers": ["router"], "workers": ["worker"]}
    for group, spec in children.items():
        spec["vars"] = {"agentctl_roles": roles.get(group, [])}
