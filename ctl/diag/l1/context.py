"""What L1 knows about a host before probing it: inventory expectations, not observations.

Kept free of the inventory classes so a bundle (or a test) can build one from plain variables.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

DEFAULT_INSTALL_ROOT = "/opt/agentctl"
DEFAULT_ROUTER_PORT = 8080  # playbooks/deploy.yml
DEFAULT_WORKER_BASE_PORT = 8001
_WILDCARDS = frozenset({"", "0.0.0.0", "::", "[::]", "*"})  # noqa: S104 (matched, not bound)
_ADDRESS = re.compile(r"^[A-Za-z0-9._:%-]+$")
_ROOT = re.compile(r"^/[^\x00\n]*$")  # probes shell-quote it


@dataclass(frozen=True)
class ServingExpect:
    """The serving stack deploy.yml puts on this host: services `worker-N` and `router`."""

    router_port: int | None  # None: no router role
    worker_base_port: int
    workers: int  # 0: no worker role
    listen_address: str | None
    install_root: str

    def services(self) -> tuple[str, ...]:
        names = [f"worker-{i}" for i in range(self.workers)]
        return (*names, "router") if self.router_port is not None else tuple(names)

    def probe_address(self) -> str:
        """Where health is asked from the node itself: the listen address, or loopback when
        the services listen on every address (or none is known)."""
        addr = self.listen_address
        if addr is None or addr in _WILDCARDS:
            return "127.0.0.1"
        return f"[{addr.strip('[]')}]" if ":" in addr else addr

    def endpoints(self) -> tuple[tuple[str, str], ...]:
        """(service, health URL) per service; both the worker and router serve `/health`."""
        host = self.probe_address()
        out = [
            (f"worker-{i}", f"http://{host}:{self.worker_base_port + i}/health")
            for i in range(self.workers)
        ]
        if self.router_port is not None:
            out.append(("router", f"http://{host}:{self.router_port}/health"))
        return tuple(out)


@dataclass(frozen=True)
class GpuReplay:
    """The host's GPUs are replayed from a recording (`agentctl_gpu_replay`), printed by the
    deployed venv's `python` (see ctl/diag/l1/replay.py)."""

    set_name: str
    python: str


@dataclass(frozen=True)
class L1Context:
    host: str
    expected_gpus: int | None
    roles: frozenset[str]
    serving: ServingExpect | None
    now: datetime  # timezone-aware; the Xid window ends here
    gpu_replay: GpuReplay | None = None


def _int(value: Any, default: int, lo: int, hi: int) -> int:
    """Inventory values may be strings; anything unusable falls back to the default."""
    try:
        n = int(str(value).strip())
    except (TypeError, ValueError):
        return default
    return n if lo <= n <= hi else default


def _address(value: Any) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text if text and _ADDRESS.match(text.strip("[]")) else None


def serving_from_vars(
    roles: frozenset[str], vars: Mapping[str, Any], address: str | None = None
) -> ServingExpect | None:
    """The expectation for roles `router`/`worker`; None when the host serves nothing.

    The services listen where deploy.yml puts them: `agentctl_listen_address`, which defaults
    to `ansible_host`, the host's inventory address (`address` when vars lack it)."""
    if not roles & {"router", "worker"}:
        return None
    root = str(vars.get("agentctl_install_root") or DEFAULT_INSTALL_ROOT).rstrip("/")
    return ServingExpect(
        router_port=(
            _int(vars.get("agentctl_router_port"), DEFAULT_ROUTER_PORT, 1, 65535)
            if "router" in roles
            else None
        ),
        worker_base_port=_int(
            vars.get("agentctl_worker_base_port"), DEFAULT_WORKER_BASE_PORT, 1, 65535
        ),
        workers=_int(vars.get("agentctl_workers"), 1, 0, 256) if "worker" in roles else 0,
        listen_address=_address(
            vars.get("agentctl_listen_address") or vars.get("ansible_host") or address
        ),
        install_root=root if _ROOT.match(root) else DEFAULT_INSTALL_ROOT,
    )


def context_from_vars(
    host: str,
    roles: Iterable[str],
    vars: Mapping[str, Any],
    expected_gpus: int | None,
    now: datetime,
    *,
    address: str | None = None,
) -> L1Context:
    """Build the context from inventory variables; a naive `now` is taken as UTC. `address`
    is the host's inventory address (Host.address), used when vars carry no ansible_host."""
    role_set = frozenset(str(r) for r in roles)
    return L1Context(
        host=host,
        expected_gpus=expected_gpus if expected_gpus is None or expected_gpus >= 0 else None,
        roles=role_set,
        serving=serving_from_vars(role_set, vars, address),
        now=now if now.tzinfo is not None else now.replace(tzinfo=UTC),
        gpu_replay=_replay_from_vars(vars),
    )


def _replay_from_vars(vars: Mapping[str, Any]) -> GpuReplay | None:
    name = str(vars.get("agentctl_gpu_replay") or "").strip()
    if not name:
        return None
    root = str(vars.get("agentctl_install_root") or DEFAULT_INSTALL_ROOT).rstrip("/")
    root = root if _ROOT.match(root) else DEFAULT_INSTALL_ROOT
    python = str(vars.get("agentctl_python") or f"{root}/venv/bin/python")
    return GpuReplay(name, python if _ROOT.match(python) else f"{root}/venv/bin/python")
