"""The embedded default: a small local fleet that `agentctl demo` brings up, trusts and inspects.

Nodes are real loopback sshd processes with their own host keys. Their keys are trusted by
comparing what each node offers on the wire with the public key file the demo generated for it
(an out-of-band check, as an operator would do with a console), never blindly. Where sshd cannot
run, one node uses the local connector instead.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from agentctl.ctl.errors import HostKeyError
from agentctl.ctl.fleet import FleetError, LocalFleet, find_sshd


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
    root.mkdir(parents=True, exist_ok=True)
    inventory_path = root / "inventory.yml"
    notes: list[str] = []
    if find_sshd() is not None:
        fleet = LocalFleet(root / "fleet", nodes)
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
            inventory_path.write_text(yaml.safe_dump(doc, sort_keys=False))
            return DemoFleet(root, inventory_path, fleet, notes)
    else:
        notes.append("sshd not found (install openssh-server); using the local connector")
    local_doc: dict[str, object] = {
        "all": {
            "hosts": {
                "localhost": {"ansible_connection": "local", "agentctl_roles": ["router", "worker"]}
            }
        }
    }
    _add_serving_vars(local_doc, root)
    inventory_path.write_text(yaml.safe_dump(local_doc, sort_keys=False))
    return DemoFleet(root, inventory_path, None, notes)


#: the demo's serving stack: fast simulated engines with small caches, two workers per node
DEMO_SERVING_VARS = {
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


def stop_services(root: Path) -> None:
    """Stop every service the demo deployed (the nodes are local: their state dirs are here)."""
    import subprocess

    for node in sorted((root / "nodes").glob("*")):
        py = node / "venv" / "bin" / "python"
        if py.exists():
            subprocess.run(
                [str(py), "-m", "agentctl.serving", "supervise", "stop", "--all",
                 "--dir", str(node / "state")],
                capture_output=True, timeout=60, check=False,
            )  # fmt: skip


def _add_role_vars(doc: dict[str, object]) -> None:
    all_group = doc["all"]
    assert isinstance(all_group, dict)
    children = all_group.get("children", {})
    roles = {"routers": ["router"], "workers": ["worker"]}
    for group, spec in children.items():
        spec["vars"] = {"agentctl_roles": roles.get(group, [])}
