"""A local fleet of real OpenSSH `sshd` "nodes" on loopback, each with its own host key.

It backs `agentctl demo`, the test suite and the fan-out benchmark: real sshd processes, real
key exchange, real authentication, so nothing about the transport is mocked. Every node listens
on its own 127.0.0.x address and port; one generated client key is authorised on all of them.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from agentctl.ctl.errors import AgentctlError

SSHD_CANDIDATES = ("/usr/sbin/sshd", "/usr/local/sbin/sshd", "/usr/bin/sshd")

_SSHD_CONFIG = """\
ListenAddress {address}:{port}
HostKey {key}
PidFile {dir}/sshd.pid
AuthorizedKeysFile {authorized_keys}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
AllowTcpForwarding {forwarding}
AllowAgentForwarding no
X11Forwarding no
PermitTunnel no
MaxSessions 64
MaxStartups 100:30:200
LoginGraceTime 30
Subsystem sftp internal-sftp
LogLevel {log_level}
{extra}"""


class FleetError(AgentctlError):
    kind = "fleet"


def find_sshd() -> str | None:
    found = shutil.which("sshd")
    if found:
        return found
    return next((p for p in SSHD_CANDIDATES if os.access(p, os.X_OK)), None)


@dataclass
class FleetNode:
    name: str
    address: str
    port: int
    directory: Path
    forwarding: bool = True
    log_level: str = "VERBOSE"
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def host_key(self) -> Path:
        return self.directory / "ssh_host_ed25519_key"

    @property
    def log_file(self) -> Path:
        return self.directory / "sshd.log"

    @property
    def known_hosts_key(self) -> str:
        return f"[{self.address}]:{self.port}"

    def host_key_line(self) -> str:
        """The node's public key as a known_hosts line (what a careful operator verifies)."""
        pub = (self.directory / "ssh_host_ed25519_key.pub").read_text().split()
        return f"{self.known_hosts_key} {pub[0]} {pub[1]}"


class LocalFleet:
    """Start, stop and describe N loopback sshd nodes under `root`."""

    def __init__(
        self,
        root: Path,
        count: int,
        *,
        prefix: str = "node",
        first_address: int = 2,
        user: str | None = None,
        log_level: str = "VERBOSE",
        extra_config: str = "",
        die_with_parent: bool = False,
    ) -> None:
        """`extra_config`: more sshd_config lines (e.g. `SetEnv PATH=...` for sessions that
        lack a tool). `die_with_parent`: the sshd processes get SIGTERM when this process dies,
        even by SIGKILL (Linux), so a killed demo leaves no listener behind."""
        if count < 1:
            raise FleetError("a fleet needs at least one node")
        if first_address + count > 254 * 250:
            raise FleetError("too many nodes for 127.0.0.0/8")
        self.root = root
        self.extra_config = extra_config
        self.die_with_parent = die_with_parent
        self.user = user or getpass.getuser()
        self.client_key = root / "client_ed25519"
        self.authorized_keys = root / "authorized_keys"
        self.nodes: list[FleetNode] = []
        for i in range(count):
            n = first_address + i
            address = f"127.0.{n // 254}.{n % 254 + 1}" if n >= 254 else f"127.0.0.{n}"
            name = f"{prefix}{i + 1:02d}"
            self.nodes.append(FleetNode(name, address, 0, root / name, log_level=log_level))

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, timeout: float = 20.0) -> LocalFleet:
        sshd = find_sshd()
        if sshd is None:
            raise FleetError("sshd not found (install openssh-server)")
        self.root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege-separation dir
        if not self.client_key.exists():
            keygen(self.client_key, comment="agentctl-fleet-client")
        self.authorized_keys.write_text(Path(str(self.client_key) + ".pub").read_text())
        os.chmod(self.authorized_keys, 0o600)
        try:
            for node in self.nodes:
                node.directory.mkdir(parents=True, exist_ok=True)
                if not node.host_key.exists():
                    keygen(node.host_key, comment=node.name)
                if node.port == 0:
                    node.port = _free_port(node.address)
                self._launch(sshd, node)
            deadline = time.monotonic() + timeout
            for node in self.nodes:
                _wait_for_banner(node, deadline)
        except BaseException:
            self.stop()  # all or nothing: no node of a fleet that failed to start keeps running
            raise
        return self

    def _launch(self, sshd: str, node: FleetNode) -> None:
        config = node.directory / "sshd_config"
        config.write_text(
            _SSHD_CONFIG.format(
                address=node.address,
                port=node.port,
                key=node.host_key,
                dir=node.directory,
                authorized_keys=self.authorized_keys,
                forwarding="yes" if node.forwarding else "no",
                log_level=node.log_level,
                extra=self.extra_config.strip() + "\n" if self.extra_config.strip() else "",
            )
        )
        log = open(node.log_file, "ab")  # noqa: SIM115 - handed to the child
        node.process = subprocess.Popen(
            [sshd, "-D", "-e", "-f", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
            preexec_fn=_die_with_parent if self.die_with_parent else None,
        )
        log.close()

    def stop_node(self, node: FleetNode) -> None:
        proc = node.process
        if proc is None:
            return
        if proc.poll() is None:
            # The whole group: sshd's per-connection children too.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        node.process = None

    def restart_node(self, node: FleetNode, *, new_host_key: bool = False) -> None:
        """Restart one node, optionally with a fresh host key (a "reinstalled" host)."""
        self.stop_node(node)
        if new_host_key:
            for suffix in ("", ".pub"):
                Path(str(node.host_key) + suffix).unlink(missing_ok=True)
            keygen(node.host_key, comment=node.name)
        sshd = find_sshd()
        assert sshd is not None
        self._launch(sshd, node)
        _wait_for_banner(node, time.monotonic() + 10)

    def stop(self) -> None:
        for node in self.nodes:
            self.stop_node(node)

    def __enter__(self) -> LocalFleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- descriptions ----------------------------------------------------------------------

    def node(self, name: str) -> FleetNode:
        for node in self.nodes:
            if node.name == name:
                return node
        raise KeyError(name)

    def inventory(self, groups: dict[str, Iterable[str]] | None = None) -> dict[str, object]:
        """An Ansible YAML inventory (as data) for the fleet."""
        hosts = {n.name: {"ansible_host": n.address, "ansible_port": n.port} for n in self.nodes}
        doc: dict[str, object] = {
            "all": {
                "vars": {
                    "ansible_user": self.user,
                    "ansible_ssh_private_key_file": str(self.client_key),
                },
                "hosts": hosts,
            }
        }
        if groups:
            all_group = doc["all"]
            assert isinstance(all_group, dict)
            all_group["children"] = {
                g: {"hosts": {h: None for h in members}} for g, members in groups.items()
            }
        return doc

    def write_inventory(self, path: Path, groups: dict[str, Iterable[str]] | None = None) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(self.inventory(groups), sort_keys=False))
        return path

    def write_known_hosts(self, path: Path) -> Path:
        """Known_hosts for the fleet, read from the keys on disk (a trusted, out-of-band path)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(n.host_key_line() + "\n" for n in self.nodes))
        return path


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent dies (prctl PR_SET_PDEATHSIG)."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)


def free_port_run(address: str, length: int, start: int, *, stop: int = 32000) -> int:
    """The first port p >= `start` with p .. p+length-1 all free on `address`.

    Below Linux's ephemeral range (32768+), so a port chosen now is not taken a moment later
    by some outgoing connection; `start` spreads callers apart (the demo derives it from its
    directory)."""
    span = stop - 1024 - length
    for i in range(span):
        first = 1024 + (start - 1024 + i) % span
        if all(_port_free(address, first + k) for k in range(length)):
            return first
    raise FleetError(f"no {length} free consecutive ports on {address}")


def _port_free(address: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((address, port))
        except OSError:
            return False
        return True


def keygen(path: Path, *, comment: str) -> None:
    """An unencrypted ed25519 key pair at `path` (and `path`.pub)."""
    try:
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        raise FleetError(f"ssh-keygen failed for {path}: {exc}") from exc


def _free_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((address, 0))
        port: int = s.getsockname()[1]
        return port


def _wait_for_banner(node: FleetNode, deadline: float) -> None:
    wait_for_banner(node.address, node.port, deadline, node.process, node.log_file, node.name)


def wait_for_banner(
    address: str,
    port: int,
    deadline: float,
    process: subprocess.Popen[bytes] | None,
    log_file: Path,
    what: str,
) -> None:
    """Until `deadline`, wait for an SSH banner on address:port; FleetError with the log's
    tail if `process` (the sshd) exits first or nothing answers."""
    last: Exception | None = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log_file.read_text(errors="replace")[-2000:]
            raise FleetError(f"sshd for {what} exited ({process.returncode}): {tail.strip()}")
        try:
            with socket.create_connection((address, port), timeout=1) as s:
                if s.recv(64).startswith(b"SSH-"):
                    return
        except OSError as exc:
            last = exc
        time.sleep(0.05)
    raise FleetError(f"sshd for {what} did not answer on {address}:{port}: {last}")
