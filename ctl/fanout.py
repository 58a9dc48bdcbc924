"""Bounded, batched, failure-aware parallel execution over hosts.

The shape follows Fabric's GroupResult and Ansible's recap: every selected host ends in exactly
one state (ok / changed / failed / unreachable / skipped). Unreachable (no session) is kept
apart from failed (a session, but the task failed), and only connection failures are retried.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import resource
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Generic, TypeVar

from agentctl.ctl.connector import CommandResult, Connector
from agentctl.ctl.errors import (
    AgentctlError,
    AuthError,
    ExitCode,
    HostKeyError,
    UnreachableError,
    UsageError,
)

H = TypeVar("H")


class Status(StrEnum):
    OK = "ok"
    CHANGED = "changed"
    FAILED = "failed"
    UNREACHABLE = "unreachable"
    SKIPPED = "skipped"


@dataclass
class TaskOutput:
    """What a task returns for one host: its state, the last command and any parsed data."""

    status: Status
    result: CommandResult | None = None
    data: Any = None
    message: str | None = None


@dataclass
class HostOutcome:
    host: str
    status: Status
    result: CommandResult | None = None
    data: Any = None
    error: AgentctlError | None = None
    message: str | None = None
    attempts: int = 0
    duration_s: float = 0.0

    @property
    def error_kind(self) -> str | None:
        return self.error.kind if self.error else None


@dataclass
class Recap:
    outcomes: list[HostOutcome] = field(default_factory=list)
    aborted: bool = False
    interrupted: bool = False

    def count(self, status: Status) -> int:
        return sum(1 for o in self.outcomes if o.status is status)

    def counts(self) -> dict[str, int]:
        return {s.value: self.count(s) for s in Status}

    def hosts(self, *statuses: Status) -> list[str]:
        return [o.host for o in self.outcomes if o.status in statuses]

    @property
    def ok(self) -> bool:
        return not self.interrupted and all(
            o.status in (Status.OK, Status.CHANGED) for o in self.outcomes
        )

    @property
    def exit_code(self) -> ExitCode:
        """The worst outcome wins, in a fixed order (README: exit codes).

        130 interrupted > 5 host key or auth refused > 3 some hosts failed (or the run was
        aborted by --max-fail-percent) > 4 some unreachable, none failed > 0.
        """
        if self.interrupted:
            return ExitCode.INTERRUPTED
        if any(isinstance(o.error, HostKeyError | AuthError) for o in self.outcomes):
            return ExitCode.HOST_KEY_OR_AUTH
        if self.count(Status.FAILED) or self.aborted:
            return ExitCode.HOSTS_FAILED
        if self.count(Status.UNREACHABLE):
            return ExitCode.UNREACHABLE
        return ExitCode.OK


def default_forks(n_hosts: int) -> int:
    """pyinfra's formula: min(20 x CPUs, hosts, (open-file limit - 10) / 3)."""
    cpus = os.cpu_count() or 1
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    fd_cap = max(1, (soft - 10) // 3) if soft != resource.RLIM_INFINITY else 10_000
    return max(1, min(20 * cpus, n_hosts, fd_cap))


def parse_batches(spec: str | None, n_hosts: int) -> list[int]:
    """Ansible `serial`: "1,10%,100%" -> batch sizes; the last size repeats until done."""
    if n_hosts == 0:
        return []
    if spec is None:
        return [n_hosts]
    sizes: list[int] = []
    for part in spec.split(","):
        part = part.strip()
        try:
            if part.endswith("%"):
                pct = float(part[:-1])
                if not 0 < pct <= 100:
                    raise ValueError
                size = max(1, math.floor(n_hosts * pct / 100))
            else:
                size = int(part)
                if size < 1:
                    raise ValueError
        except ValueError:
            raise UsageError(
                f"invalid --batch element {part!r}: use a positive count or a percentage"
            ) from None
        sizes.append(size)
    out: list[int] = []
    remaining = n_hosts
    i = 0
    while remaining > 0:
        size = min(sizes[min(i, len(sizes) - 1)], remaining)
        out.append(size)
        remaining -= size
        i += 1
    return out


@dataclass(frozen=True)
class FanoutOptions:
    forks: int | None = None
    batch: str | None = None
    max_fail_percent: float = 100.0
    connect_retries: int = 2
    retry_backoff: float = 0.5


Connect = Callable[[H], Connector]
Task = Callable[[Connector, H], TaskOutput]
OnDone = Callable[[HostOutcome], None]


class FanOut(Generic[H]):
    """Run `task` on every host with `connect`, honouring forks, batches and the fail budget."""

    def __init__(
        self,
        connect: Connect[H],
        task: Task[H],
        *,
        name_of: Callable[[H], str],
        options: FanoutOptions | None = None,
        on_done: OnDone | None = None,
        on_cancel: Callable[[], None] | None = None,
    ) -> None:
        self.connect = connect
        self.task = task
        self.name_of = name_of
        self.options = options or FanoutOptions()
        self.on_done = on_done
        #: aborts connections still being set up (the connector factory knows them)
        self.on_cancel = on_cancel
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._live: set[Connector] = set()

    def cancel(self) -> None:
        """Stop starting hosts, and hang up running sessions so their threads return now."""
        self._cancel.set()
        if self.on_cancel is not None:
            with contextlib.suppress(Exception):
                self.on_cancel()
        with self._lock:
            live = list(self._live)
        for conn in live:
            with contextlib.suppress(Exception):
                conn.close()

    def run(self, hosts: Sequence[H]) -> Recap:
        """Every host ends in exactly one outcome, whatever interrupts the run and wherever."""
        recap = Recap()
        forks = self.options.forks or default_forks(len(hosts))
        batches = parse_batches(self.options.batch, len(hosts))
        futures: dict[Future[HostOutcome], str] = {}
        seen: set[str] = set()
        pool = ThreadPoolExecutor(max_workers=max(1, forks), thread_name_prefix="fanout")
        forced = False
        try:
            start = 0
            for i, size in enumerate(batches):
                batch = hosts[start : start + size]
                start += size
                first = len(recap.outcomes)
                self._run_batch(pool, batch, futures, recap, seen)
                if self._cancel.is_set():
                    break
                more = i + 1 < len(batches)
                if more and self._over_budget(recap.outcomes[first:]):
                    recap.aborted = True
                    break
        except KeyboardInterrupt:
            forced = self._cancel.is_set()  # a second Ctrl-C: do not wait for stragglers
            self.cancel()
        finally:
            pool.shutdown(wait=not forced, cancel_futures=True)
        if self._cancel.is_set():
            recap.interrupted = True
        # Outcomes that finished while we were being interrupted are kept, not lost.
        for fut, name in futures.items():
            if name not in seen and fut.done() and not fut.cancelled():
                self._record(fut.result(), recap, seen)
        for host in hosts:
            name = self.name_of(host)
            if name not in seen:
                why = "interrupted" if recap.interrupted else "not run: --max-fail-percent exceeded"
                self._record(HostOutcome(name, Status.SKIPPED, message=why), recap, seen)
        order = {self.name_of(h): i for i, h in enumerate(hosts)}
        recap.outcomes.sort(key=lambda o: order.get(o.host, 0))
        return recap

    def _record(self, outcome: HostOutcome, recap: Recap, seen: set[str]) -> None:
        # Into the recap first: a Ctrl-C landing inside on_done (a store write) loses nothing.
        seen.add(outcome.host)
        recap.outcomes.append(outcome)
        if self.on_done:
            self.on_done(outcome)

    def _over_budget(self, outcomes: Sequence[HostOutcome]) -> bool:
        if not outcomes:
            return False
        bad = sum(1 for o in outcomes if o.status in (Status.FAILED, Status.UNREACHABLE))
        return 100.0 * bad / len(outcomes) > self.options.max_fail_percent

    def _run_batch(
        self,
        pool: ThreadPoolExecutor,
        batch: Sequence[H],
        futures: dict[Future[HostOutcome], str],
        recap: Recap,
        seen: set[str],
    ) -> None:
        pending: set[Future[HostOutcome]] = set()
        for host in batch:
            fut = pool.submit(self._one, host)
            futures[fut] = self.name_of(host)
            pending.add(fut)
        while pending:
            try:
                done, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            except KeyboardInterrupt:
                if self._cancel.is_set():
                    raise  # a second Ctrl-C: stop waiting for anything
                self.cancel()
                for fut in pending:
                    fut.cancel()
                continue
            for fut in done:
                if not fut.cancelled():
                    self._record(fut.result(), recap, seen)

    def _one(self, host: H) -> HostOutcome:
        name = self.name_of(host)
        started = time.monotonic()
        attempts = 0

        def outcome(status: Status, **kw: Any) -> HostOutcome:
            return HostOutcome(
                name, status, attempts=attempts, duration_s=time.monotonic() - started, **kw
            )

        while True:
            if self._cancel.is_set():
                return outcome(Status.SKIPPED, message="interrupted before it started")
            attempts += 1
            try:
                conn = self.connect(host)
            except UnreachableError as exc:
                if attempts <= self.options.connect_retries and not self._cancel.is_set():
                    # Full jitter: spread reconnects so a flapping switch is not hammered.
                    time.sleep(random.uniform(0, self.options.retry_backoff * 2 ** (attempts - 1)))
                    continue
                return outcome(Status.UNREACHABLE, error=exc, message=exc.message)
            except AgentctlError as exc:  # host key, auth: no session, and retrying cannot help
                return outcome(Status.UNREACHABLE, error=exc, message=exc.message)
            except Exception as exc:  # a connector bug must not crash the run or hide the host
                return outcome(
                    Status.UNREACHABLE, message=f"internal error: {type(exc).__name__}: {exc}"
                )
            break
        with self._lock:
            self._live.add(conn)
        try:
            if self._cancel.is_set():
                return outcome(Status.SKIPPED, message="interrupted before it started")
            out = self.task(conn, host)
            return outcome(out.status, result=out.result, data=out.data, message=out.message)
        except AgentctlError as exc:
            if self._cancel.is_set():
                # We hung up on it: it may have partly run, so --rerun-failed picks it up.
                return outcome(Status.FAILED, message="interrupted while running")
            if isinstance(exc, UnreachableError):  # session lost mid-task: never retried
                return outcome(Status.UNREACHABLE, error=exc, message=exc.message)
            return outcome(Status.FAILED, error=exc, message=exc.message)
        except Exception as exc:  # a bug in a task must not take the other hosts down
            return outcome(Status.FAILED, message=f"internal error: {type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._live.discard(conn)
            conn.close()
