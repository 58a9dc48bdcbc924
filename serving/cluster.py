"""A router and N simulated engine workers as child processes on loopback.

The live replay benchmark, the demo and the live tests all need the same thing: the real
`python -m agentctl.serving worker|router` processes, on free ports, healthy before anyone sends a
request, and gone afterwards even when the caller fails. KV events travel over `ipc://` sockets
in a private temporary directory, so only the HTTP ports can collide with another program; a
process that dies at start-up (a port taken between probing and binding) is started again on
new ports, a bounded number of times.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

__all__ = ["ClusterError", "ClusterSpec", "LocalCluster", "Process", "free_port"]

#: start-up attempts per process (a port can be taken between probing and binding)
_START_ATTEMPTS = 3


class ClusterError(RuntimeError):
    """A process of the cluster did not come up; the message ends with its log's tail."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free at the moment of asking (the caller must cope with losing a race)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class Process:
    """One child process of the cluster and where it answers."""

    name: str
    argv: list[str]
    log: Path
    url: str
    popen: subprocess.Popen[bytes] | None = None
    events: str = ""
    replay: str = ""

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass(frozen=True)
class ClusterSpec:
    """What to start. Engine settings apply to every worker; `worker_args` / `router_args` pass
    any other flag of `python -m agentctl.serving worker|router` through."""

    workers: int = 2
    policy: str = "kv"
    policy_options: dict[str, Any] = field(default_factory=dict)
    time_scale: float = 1.0
    capacity_blocks: int | None = None
    block_size: int | None = None
    max_num_batched_tokens: int | None = None
    events: bool = True
    log_level: str = "warning"
    worker_args: Sequence[str] = ()
    router_args: Sequence[str] = ()
    host: str = "127.0.0.1"
    python: str = sys.executable
    #: False: the workers only, for a caller that puts another router in front of them
    #: (`bench live --peer sglang-router`)
    router: bool = True


class LocalCluster:
    """Start with `start()` (or `with LocalCluster(spec) as c:`), stop with `stop()`.

    `router_url` and `worker_urls` are set once started. Logs go to `workdir` (a temporary
    directory removed on stop unless the caller gave one)."""

    def __init__(self, spec: ClusterSpec, workdir: str | Path | None = None) -> None:
        if spec.workers < 1:
            raise ValueError("a cluster needs at least one worker")
        self.spec = spec
        self._own_dir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="agentctl-cluster-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workers: dict[str, Process] = {}
        self.router: Process | None = None

    # ---- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout_s: float = 60.0) -> None:
        try:
            for i in range(self.spec.workers):
                name = f"w{i}"
                self.workers[name] = self._start_healthy(
                    functools.partial(self._worker, name), timeout_s
                )
            if self.spec.router:
                self.router = self._start_healthy(
                    self._router, timeout_s, ready=lambda b: _all_workers_up(b, self.spec.workers)
                )
        except BaseException:
            self.stop()
            raise

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGINT everything (router first, so it stops sending), then wait, then kill."""
        procs = ([self.router] if self.router else []) + list(self.workers.values())
        for p in procs:
            if p.alive() and p.popen is not None:
                p.popen.send_signal(signal.SIGINT)
        deadline = time.monotonic() + grace_s
        for p in procs:
            if p.popen is None:
                continue
            try:
                p.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.popen.kill()
                p.popen.wait()
        if self._own_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def router_url(self) -> str:
        if self.router is None:
            raise ClusterError("the cluster is not started")
        return self.router.url

    @property
    def worker_urls(self) -> dict[str, str]:
        return {name: p.url for name, p in self.workers.items()}

    def restart_router(self, timeout_s: float = 60.0) -> None:
        """Stop the router (SIGINT) and start a new one in front of the same workers (on a
        new port: read `router_url` again). Tests of a router that restarts."""
        old = self.router
        if old is not None and old.popen is not None and old.alive():
            old.popen.send_signal(signal.SIGINT)
            try:
                old.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                old.popen.kill()
                old.popen.wait()
        self.router = self._start_healthy(
            self._router, timeout_s, ready=lambda b: _all_workers_up(b, self.spec.workers)
        )

    def kill_worker(self, name: str) -> None:
        """SIGKILL one worker (tests of a worker dying under load)."""
        p = self.workers[name]
        if p.popen is not None and p.alive():
            p.popen.kill()
            p.popen.wait()

    # ---- processes --------------------------------------------------------------------------

    def _worker(self, name: str) -> Process:
        s = self.spec
        port = free_port(s.host)
        argv = [
            s.python, "-m", "agentctl.serving", "worker",
            "--host", s.host, "--port", str(port),
            "--time-scale", repr(s.time_scale), "--log-level", s.log_level,
        ]  # fmt: skip
        for flag, value in (
            ("--capacity-blocks", s.capacity_blocks),
            ("--block-size", s.block_size),
            ("--max-num-batched-tokens", s.max_num_batched_tokens),
        ):
            if value is not None:
                argv += [flag, str(value)]
        events = replay = ""
        if s.events:
            events = f"ipc://{self.workdir / (name + '.events')}"
            replay = f"ipc://{self.workdir / (name + '.replay')}"
            argv += ["--events", events, "--replay", replay]
        argv += list(s.worker_args)
        url = f"http://{s.host}:{port}"
        return Process(name, argv, self.workdir / f"{name}.log", url, None, events, replay)

    def _router(self) -> Process:
        import json

        s = self.spec
        port = free_port(s.host)
        argv = [
            s.python, "-m", "agentctl.serving", "router",
            "--host", s.host, "--port", str(port), "--policy", s.policy,
            "--health-interval", "0.5", "--log-level", s.log_level,
            "--time-scale", repr(s.time_scale),
        ]  # fmt: skip
        if s.block_size is not None:
            argv += ["--block-size", str(s.block_size)]
        for key, value in s.policy_options.items():
            argv += ["--policy-option", f"{key}={json.dumps(value)}"]
        for name, w in self.workers.items():
            flag = f"{w.url},id={name}"
            if s.capacity_blocks is not None:
                flag += f",capacity={s.capacity_blocks}"
            if s.max_num_batched_tokens is not None:
                flag += f",budget={s.max_num_batched_tokens}"
            if w.events:
                flag += f",events={w.events},replay={w.replay}"
            argv += ["--worker", flag]
        argv += list(s.router_args)
        return Process("router", argv, self.workdir / "router.log", f"http://{s.host}:{port}")

    def _start_healthy(
        self,
        make: Callable[[], Process],
        timeout_s: float,
        ready: Callable[[dict[str, Any]], bool] | None = None,
    ) -> Process:
        last: Process | None = None
        for _ in range(_START_ATTEMPTS):
            p = make()
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            with open(p.log, "ab") as log:
                p.popen = subprocess.Popen(
                    p.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
                )
            if _wait_healthy(p, timeout_s, ready):
                return p
            last = p
            if p.alive() and p.popen is not None:  # up but never healthy: not a port race
                p.popen.kill()
                p.popen.wait()
                break
        assert last is not None
        raise ClusterError(f"{last.name} did not become healthy:\n{last.log_tail()}")


def _all_workers_up(body: dict[str, Any], n: int) -> bool:
    workers = body.get("workers") or []
    return len(workers) == n and all(w.get("healthy") for w in workers)


def _wait_healthy(
    p: Process, timeout_s: float, ready: Callable[[dict[str, Any]], bool] | None
) -> bool:
    """True once `/health` answers 200 (and `ready` agrees); False if the process exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not p.alive():
            return False
        with contextlib.suppress(httpx.TransportError, ValueError):
            r = httpx.get(p.url + "/health", timeout=2.0)
            if r.status_code == 200 and (ready is None or ready(r.json())):
                return True
        time.sleep(0.05)
    return False
