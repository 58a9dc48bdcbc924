"""An offline test host: a network namespace whose only link is a veth to the control side.

`AirgapNode.start()` creates the namespace and the veth pair (10.231.N.1/30 on the control
side, 10.231.N.2/30 inside, `lo` up, no default route), then runs OpenSSH's sshd inside it
with a host key and an authorised client key of its own. sshd runs in a private mount
namespace as well (`ip netns exec` makes one): the directories named in `hide` (the control's
bundles, the local package indexes pip is configured with) are covered by empty tmpfs mounts
there, so the node cannot read a wheel from the control's disk either; the shared filesystem
would otherwise be a side channel no real air gap has. Everything the node runs (sshd, its
sessions, the services a deploy starts) descends from that sshd, so it shares both namespaces.

`close()` removes everything, whatever state start() reached: every process in the network
namespace (`ip netns pids`), the namespace, the veth pair.
"""

from __future__ import annotations

import contextlib
import errno
import getpass
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agentctl.ctl.fleet import find_sshd, keygen, wait_for_banner

SUBNET = "10.231"
PREFIX = "agac-airgap"

_SSHD_CONFIG = """\
ListenAddress {address}:{port}
HostKey {host_key}
PidFile {dir}/sshd.pid
AuthorizedKeysFile {authorized_keys}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
AllowTcpForwarding no
AllowAgentForwarding no
X11Forwarding no
PermitTunnel no
MaxSessions 64
MaxStartups 100:30:200
LoginGraceTime 30
Subsystem sftp internal-sftp
LogLevel VERBOSE
"""


class NetnsUnavailable(Exception):
    """This machine cannot make the namespace (no `ip`, no CAP_NET_ADMIN, no sshd): skip."""


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(
        ["ip", *args], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
    )
    if check and res.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")
    return res


def local_package_sources(python: str) -> list[Path]:
    """Directories pip (as `python` sees its configuration) would read packages from: every
    `find-links` and `file://` index in `pip config list` that exists on this machine (for an
    index at `.../simple`, its parent: the pages link to files beside it)."""
    res = subprocess.run(
        [python, "-m", "pip", "config", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    found: list[Path] = []
    for line in res.stdout.splitlines():
        key, sep, value = line.partition("=")
        if not sep or not key.endswith(("find-links", "index-url", "extra-index-url")):
            continue
        for item in value.strip().strip("'\"").split():
            if not item.startswith(("file://", "/")):
                continue
            path = Path(item.removeprefix("file://"))
            if key.endswith("index-url") and path.name == "simple":
                path = path.parent
            if path.is_dir() and path not in found:
                found.append(path)
    return found


@dataclass
class AirgapNode:
    directory: Path
    #: directories the node must not see (empty tmpfs over each, in the node's mount namespace)
    hide: Sequence[Path] = ()
    port: int = 22
    index: int = 0
    netns: str = ""
    host_if: str = ""
    sshd: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    user: str = field(default_factory=getpass.getuser)

    # -- addresses and files -----------------------------------------------------------------

    @property
    def address(self) -> str:
        return f"{SUBNET}.{self.index}.2"

    @property
    def gateway(self) -> str:
        return f"{SUBNET}.{self.index}.1"

    @property
    def subnet(self) -> str:
        return f"{SUBNET}.{self.index}.0/30"

    @property
    def client_key(self) -> Path:
        return self.directory / "client_ed25519"

    @property
    def host_key(self) -> Path:
        return self.directory / "ssh_host_ed25519_key"

    @property
    def sshd_log(self) -> Path:
        return self.directory / "sshd.log"

    def known_hosts_line(self) -> str:
        name = self.address if self.port == 22 else f"[{self.address}]:{self.port}"
        kind, key = Path(str(self.host_key) + ".pub").read_text().split()[:2]
        return f"{name} {kind} {key}\n"

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout: float = 20.0) -> AirgapNode:
        if shutil.which("ip") is None:
            raise NetnsUnavailable("iproute2 `ip` is not installed")
        sshd = find_sshd()
        if sshd is None:
            raise NetnsUnavailable("sshd not installed (openssh-server)")
        if shutil.which("nsenter") is None or shutil.which("ssh-keygen") is None:
            raise NetnsUnavailable("nsenter (util-linux) or ssh-keygen is missing")
        self.directory.mkdir(parents=True, exist_ok=True)
        self._create_namespace()
        try:
            self._configure_links()
            self._launch_sshd(sshd)
            assert self.sshd is not None
            wait_for_banner(
                self.address, self.port, time.monotonic() + timeout, self.sshd,
                self.sshd_log, self.netns,
            )  # fmt: skip
        except BaseException:
            self.close()
            raise
        return self

    def _create_namespace(self) -> None:
        """Take the first free 10.231.N.0/30 (N from 1 to 250, starting at a per-process
        offset) whose namespace name and veth name are free; `ip netns add` is the lock."""
        used = ip("-o", "-4", "addr", "show", check=False).stdout
        start = os.getpid() % 250
        for step in range(250):
            n = (start + step) % 250 + 1
            if f" {SUBNET}.{n}." in used:
                continue
            name = f"{PREFIX}-{n}"
            res = ip("netns", "add", name, check=False)
            if res.returncode != 0:
                if "exists" in res.stderr.lower():
                    continue
                raise NetnsUnavailable(f"`ip netns add` is not permitted: {res.stderr.strip()}")
            self.netns, self.index = name, n
            host_if = f"agac{n}h"
            res = ip("link", "add", host_if, "type", "veth", "peer", "name", f"agac{n}n",
                     check=False)  # fmt: skip
            if res.returncode != 0:
                ip("netns", "del", name, check=False)
                self.netns = ""
                if "exists" in res.stderr.lower():
                    continue
                raise NetnsUnavailable(f"cannot create a veth pair: {res.stderr.strip()}")
            self.host_if = host_if
            return
        raise RuntimeError(f"no free {SUBNET}.N.0/30 for a test namespace")

    def _configure_links(self) -> None:
        inner = f"agac{self.index}n"
        ip("link", "set", inner, "netns", self.netns)
        ip("addr", "add", f"{self.gateway}/30", "dev", self.host_if)
        ip("link", "set", self.host_if, "up")
        ip("-n", self.netns, "addr", "add", f"{self.address}/30", "dev", inner)
        ip("-n", self.netns, "link", "set", inner, "up")
        ip("-n", self.netns, "link", "set", "lo", "up")

    def _launch_sshd(self, sshd: str) -> None:
        if os.geteuid() == 0:
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
        for key, comment in ((self.client_key, "airgap-client"), (self.host_key, self.netns)):
            if not key.exists():
                keygen(key, comment=comment)
        authorized = self.directory / "authorized_keys"
        authorized.write_text(Path(str(self.client_key) + ".pub").read_text())
        authorized.chmod(0o600)
        config = self.directory / "sshd_config"
        config.write_text(
            _SSHD_CONFIG.format(
                address=self.address,
                port=self.port,
                host_key=self.host_key,
                dir=self.directory,
                authorized_keys=authorized,
            )
        )
        # `ip netns exec` gives the command a mount namespace of its own (slave to this one):
        # the tmpfs mounts below are seen by sshd and its descendants only.
        hide = "".join(
            f"mount -t tmpfs -o size=1m,mode=0755 agentctl-airgap-hidden {shlex.quote(str(d))} "
            "|| exit 97\n"
            for d in self.hide
        )
        script = f'set -e\n{hide}exec "$@"\n'
        log = self.sshd_log.open("ab")
        with log:
            self.sshd = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, "sh", "-c", script, "sh",
                 sshd, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )  # fmt: skip

    # -- inside the node ---------------------------------------------------------------------

    def exec(
        self, argv: Sequence[str], *, timeout: float = 60, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run `argv` in the node's network and mount namespaces (sshd's own), not over SSH."""
        assert self.sshd is not None and self.sshd.poll() is None, "sshd is not running"
        return subprocess.run(
            ["nsenter", "--target", str(self.sshd.pid), "--net", "--mount", "--", *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
            stdin=subprocess.DEVNULL,
        )

    def pids(self) -> list[int]:
        if not self.netns:
            return []
        res = ip("netns", "pids", self.netns, check=False)
        return [int(p) for p in res.stdout.split() if p.isdigit()]

    def accepted_logins(self) -> int:
        """How many SSH logins sshd has accepted so far (from its VERBOSE log)."""
        if not self.sshd_log.exists():
            return 0
        return self.sshd_log.read_text(errors="replace").count("Accepted publickey")

    # -- teardown ----------------------------------------------------------------------------

    def close(self) -> None:
        """Kill every process in the namespace, delete it and the veth; safe to call twice."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            self._kill(self.pids(), sig)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                if self.sshd is not None:
                    self.sshd.poll()  # reap it: a zombie is no longer in the namespace
                if not self.pids():
                    break
                time.sleep(0.1)
        if self.sshd is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.sshd.wait(timeout=5)
            self.sshd = None
        if self.netns:
            ip("netns", "del", self.netns, check=False)
            self.netns = ""
        if self.host_if:
            # deleting the namespace destroys the inner end and with it the pair; be sure
            if ip("link", "show", self.host_if, check=False).returncode == 0:
                ip("link", "del", self.host_if, check=False)
            self.host_if = ""

    @staticmethod
    def _kill(pids: Iterable[int], sig: signal.Signals) -> None:
        for pid in pids:
            try:
                os.kill(pid, sig)
            except OSError as exc:
                if exc.errno != errno.ESRCH:
                    raise
