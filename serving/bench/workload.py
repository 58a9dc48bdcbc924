"""Traces become timed `RequestSpec` arrivals: Mooncake open loop, WEKA conversations closed loop.

A `Workload` is built once (trace ids expanded to engine block hashes, delta-encoded per session so
the 94M-block WEKA corpus fits in a few hundred MB) and can then be replayed any number of times
under different load knobs (`with_load`) and policies. Timing lives in `Driver`, a small state
machine the simulator (or a live replayer) feeds with finishes and asks for arrivals, so the
closed-loop rules are written once:

- open loop (Mooncake): request i arrives at `timestamp_i / rate_scale`;
- closed loop (WEKA): a session's first request is issued when it starts (after its own
  `think_time`); request k+1 is issued when request k has finished plus `think_time * think_scale`;
  a sub-agent starts `(sub.t - end of the parent's previous request in the trace) * think_scale`
  after that parent request finishes, and runs as an extra concurrent session in the parent's
  hash namespace;
- conversations start at 0 (all at once, as their trace times say), or spread as a Poisson process
  of `session_rate` per second (seeded), or `concurrency` K at a time (the next one starts when a
  whole conversation, sub-agents included, has ended).
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from agentctl.serving.bench.traces import (
    MOONCAKE_BLOCK_SIZE,
    MooncakeRequest,
    WekaConversation,
    WekaRequest,
    WekaSubagent,
    detect_format,
    read_mooncake,
    read_weka,
)
from agentctl.serving.hashing import expand_trace_blocks
from agentctl.serving.types import BlockHash, RequestSpec

#: the simulated engine's default block size; traces are expanded to it
ENGINE_BLOCK_SIZE = 64


@dataclass(frozen=True, slots=True)
class PlannedRequest:
    """One request of a workload, delta-encoded against the previous request of its session."""

    prompt_tokens: int
    output_tokens: int
    #: open loop: arrival time in trace seconds; closed loop: think time before it, trace seconds
    delay_s: float
    #: leading engine blocks shared with the previous request of the same session
    shared: int
    #: engine block hashes after the shared ones
    tail: tuple[BlockHash, ...]


@dataclass(frozen=True, slots=True)
class Spawn:
    """A sub-session started `delay_s` (trace seconds) after request `after - 1` of its parent
    finishes (after the parent's start when `after` is 0)."""

    after: int
    delay_s: float
    session: Session


@dataclass(frozen=True, slots=True)
class Session:
    session_id: str
    requests: tuple[PlannedRequest, ...]
    children: tuple[Spawn, ...] = ()

    def num_requests(self) -> int:
        return len(self.requests) + sum(c.session.num_requests() for c in self.children)


@dataclass(frozen=True)
class Workload:
    """A replayable workload plus its load knobs (change them with `with_load`, cheaply)."""

    name: str
    mode: Literal["open", "closed"]
    block_size: int
    #: open loop: one single-request session per trace row, `delay_s` = arrival (trace seconds)
    #: closed loop: one root session per conversation
    sessions: tuple[Session, ...]
    rate_scale: float = 1.0
    think_scale: float = 1.0
    session_rate: float | None = None
    concurrency: int | None = None
    seed: int = 0
    info: dict[str, object] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if not self.rate_scale > 0:
            raise ValueError(f"rate_scale must be > 0, got {self.rate_scale}")
        if not self.think_scale >= 0:
            raise ValueError(f"think_scale must be >= 0, got {self.think_scale}")
        if self.session_rate is not None and not self.session_rate > 0:
            raise ValueError(f"session_rate must be > 0, got {self.session_rate}")
        if self.concurrency is not None and self.concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {self.concurrency}")
        if self.session_rate is not None and self.concurrency is not None:
            raise ValueError("give session_rate or concurrency, not both")

    def with_load(
        self,
        *,
        rate_scale: float | None = None,
        think_scale: float | None = None,
        session_rate: float | None = None,
        concurrency: int | None = None,
        seed: int | None = None,
    ) -> Workload:
        """Same requests, other load: for sweeps without re-reading and re-hashing the trace.

        `session_rate` and `concurrency` are alternatives: setting one clears the other."""
        if session_rate is not None and concurrency is not None:
            raise ValueError("give session_rate or concurrency, not both")
        rate, conc = self.session_rate, self.concurrency
        if session_rate is not None:
            rate, conc = session_rate, None
        if concurrency is not None:
            rate, conc = None, concurrency
        return replace(
            self,
            rate_scale=self.rate_scale if rate_scale is None else rate_scale,
            think_scale=self.think_scale if think_scale is None else think_scale,
            session_rate=rate,
            concurrency=conc,
            seed=self.seed if seed is None else seed,
        )

    def num_requests(self) -> int:
        return sum(s.num_requests() for s in self.sessions)

    def iter_requests(self) -> Iterable[tuple[str, int, tuple[BlockHash, ...], int]]:
        """(session id, index, full engine block hashes, prompt tokens) of every request, session by
        session (children after their parent): for statistics and tests."""
        stack = list(reversed(self.sessions))
        while stack:
            sess = stack.pop()
            prev: tuple[BlockHash, ...] = ()
            for i, req in enumerate(sess.requests):
                prev = prev[: req.shared] + req.tail
                yield sess.session_id, i, prev, req.prompt_tokens
            stack.extend(reversed([c.session for c in sess.children]))


def _common_prefix(a: Sequence[BlockHash], b: Sequence[BlockHash]) -> int:
    """Length of the common prefix, with C-level slice compares (no per-element Python loop)."""
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    lo, hi = 0, n - 1  # the answer is in [lo, hi]
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


class _SessionEncoder:
    """Delta-encodes a session's requests against their predecessor."""

    __slots__ = ("prev",)

    def __init__(self) -> None:
        self.prev: tuple[BlockHash, ...] = ()

    def encode(self, hashes: tuple[BlockHash, ...]) -> tuple[int, tuple[BlockHash, ...]]:
        shared = _common_prefix(self.prev, hashes)
        self.prev = hashes
        return shared, hashes[shared:]


# -- Mooncake -------------------------------------------------------------------------------


def mooncake_workload(
    rows: Iterable[MooncakeRequest],
    *,
    name: str = "mooncake",
    rate_scale: float = 1.0,
    engine_block_size: int = ENGINE_BLOCK_SIZE,
    namespace: str = "mooncake",
) -> Workload:
    """Open loop: every row is its own session, arriving at `timestamp / rate_scale`.

    Each 512-token trace id expands to 512/64 engine blocks; only the prompt's full engine blocks
    are kept (the last trace block is usually partial, and a partial block never hits)."""
    sessions: list[Session] = []
    for i, row in enumerate(rows):
        full = engine_hashes(
            row.hash_ids,
            prompt_tokens=row.input_length,
            trace_block_size=MOONCAKE_BLOCK_SIZE,
            engine_block_size=engine_block_size,
            namespace=namespace,
        )
        req = PlannedRequest(
            prompt_tokens=row.input_length,
            output_tokens=max(1, row.output_length),
            delay_s=row.timestamp_ms / 1000.0,
            shared=0,
            tail=full,
        )
        sessions.append(Session(session_id=f"r{i}", requests=(req,)))
    return Workload(
        name=name,
        mode="open",
        block_size=engine_block_size,
        sessions=tuple(sessions),
        rate_scale=rate_scale,
        info={"format": "mooncake", "trace_block_size": MOONCAKE_BLOCK_SIZE},
    )


def engine_hashes(
    hash_ids: Sequence[int],
    *,
    prompt_tokens: int,
    trace_block_size: int,
    engine_block_size: int,
    namespace: str,
) -> tuple[BlockHash, ...]:
    """Engine-block hashes of a prompt: the trace ids expanded, cut to the prompt's full blocks."""
    if not hash_ids:
        return ()
    return expand_trace_blocks(
        hash_ids,
        trace_block_size=trace_block_size,
        engine_block_size=engine_block_size,
        namespace=namespace,
        prompt_tokens=prompt_tokens,
    )


# -- WEKA -----------------------------------------------------------------------------------


def weka_workload(
    conversations: Iterable[WekaConversation],
    *,
    name: str = "weka",
    think_scale: float = 1.0,
    session_rate: float | None = None,
    concurrency: int | None = None,
    seed: int = 0,
    engine_block_size: int = ENGINE_BLOCK_SIZE,
) -> Workload:
    """Closed loop over conversations; sub-agents become child sessions in the parent namespace.

    Local-scope conversations hash in a namespace of their own id; all global-scope conversations
    share one namespace, so equal ids are equal blocks across them."""
    roots: list[Session] = []
    for conv in conversations:
        ns = "weka-global" if conv.hash_id_scope == "global" else f"weka:{conv.conv_id}"
        roots.append(
            _weka_session(
                conv.conv_id,
                conv.requests,
                conv.subagents,
                namespace=ns,
                trace_block_size=conv.block_size,
                engine_block_size=engine_block_size,
            )
        )
    wl = Workload(
        name=name,
        mode="closed",
        block_size=engine_block_size,
        sessions=tuple(roots),
        think_scale=think_scale,
        seed=seed,
        info={"format": "weka"},
    )
    if session_rate is not None or concurrency is not None:
        wl = wl.with_load(session_rate=session_rate, concurrency=concurrency)
    return wl


def _weka_session(
    session_id: str,
    requests: Sequence[WekaRequest],
    subagents: Sequence[WekaSubagent],
    *,
    namespace: str,
    trace_block_size: int,
    engine_block_size: int,
) -> Session:
    enc = _SessionEncoder()
    planned: list[PlannedRequest] = []
    for req in requests:
        full = engine_hashes(
            req.hash_ids,
            prompt_tokens=req.input_tokens,
            trace_block_size=trace_block_size,
            engine_block_size=engine_block_size,
            namespace=namespace,
        )
        shared, tail = enc.encode(full)
        planned.append(
            PlannedRequest(
                prompt_tokens=max(1, req.input_tokens),
                output_tokens=max(1, req.output_tokens),
                delay_s=req.think_time,
                shared=shared,
                tail=tail,
            )
        )
    children: list[Spawn] = []
    for sub in subagents:
        if sub.after > 0:
            prev = requests[sub.after - 1]
            delay = sub.t - (prev.t + (prev.api_time or 0.0))
        else:
            delay = sub.t
        child = _weka_session(
            f"{session_id}/{sub.agent_id}",
            sub.requests,
            sub.subagents,
            namespace=namespace,
            trace_block_size=trace_block_size,
            engine_block_size=engine_block_size,
        )
        children.append(Spawn(after=sub.after, delay_s=max(0.0, delay), session=child))
    return Session(session_id=session_id, requests=tuple(planned), children=tuple(children))


def load_workload(
    path: str | Path,
    *,
    limit: int | None = None,
    skip: int = 0,
    ids: Container[str] | None = None,
    rate_scale: float = 1.0,
    think_scale: float = 1.0,
    session_rate: float | None = None,
    concurrency: int | None = None,
    seed: int = 0,
    engine_block_size: int = ENGINE_BLOCK_SIZE,
) -> Workload:
    """Read a trace of either format (detected from its first line) into a `Workload`.

    `limit` counts rows (Mooncake) or conversations (WEKA)."""
    name = Path(path).name
    if detect_format(path) == "mooncake":
        rows: Iterable[MooncakeRequest] = read_mooncake(
            path, limit=None if limit is None else skip + limit
        )
        if skip:
            rows = (r for i, r in enumerate(rows) if i >= skip)
        return mooncake_workload(
            rows, name=name, rate_scale=rate_scale, engine_block_size=engine_block_size
        )
    return weka_workload(
        read_weka(path, limit=limit, skip=skip, ids=ids),
        name=name,
        think_scale=think_scale,
        session_rate=session_rate,
        concurrency=concurrency,
        seed=seed,
        engine_block_size=engine_block_size,
    )


# -- driving a workload on a clock ----------------------------------------------------------


@dataclass(slots=True)
class _Live:
    """A started session: where it is and the hashes of its previous request."""

    session: Session
    conv: int
    next_index: int = 0
    prev: tuple[BlockHash, ...] = ()


Arrival = tuple[float, int]
"""(virtual time, ticket): the ticket is handed back to `Driver.issue` at that time."""


class Driver:
    """Issues a workload's requests on a virtual clock, closed or open loop.

    Protocol: `start()` returns the first arrivals; at each arrival's time call `issue(ticket,
    now)` for the `RequestSpec`; when a request finishes (or is rejected) call `done(request_id,
    now)`, which returns the arrivals it enables. Arrivals are (time, ticket) pairs; tickets are
    ints so a simulator can keep them in a heap."""

    def __init__(self, workload: Workload) -> None:
        self.wl = workload
        self._tickets: dict[int, _Live] = {}
        self._pending_spawn: dict[int, tuple[Session, int]] = {}
        self._by_request: dict[str, _Live] = {}
        self._next_ticket = 0
        self._outstanding: list[int] = [0] * len(workload.sessions)
        self._next_conv = 0
        self.conversations_done = 0

    # tickets: a positive ticket is a request to issue; a negative one starts a spawned session
    def _ticket(self) -> int:
        self._next_ticket += 1
        return self._next_ticket

    def start(self) -> list[Arrival]:
        wl = self.wl
        n = len(wl.sessions)
        if wl.mode == "open":
            out: list[Arrival] = []
            for i, sess in enumerate(wl.sessions):
                live = _Live(sess, i)
                self._outstanding[i] = 1
                t = self._ticket()
                self._tickets[t] = live
                out.append((sess.requests[0].delay_s / wl.rate_scale, t))
            self._next_conv = n
            return out
        if wl.concurrency is not None:
            starts = [0.0] * min(n, wl.concurrency)
        elif wl.session_rate is not None:
            rng = random.Random(wl.seed)
            clock = 0.0
            starts = []
            for _ in range(n):
                starts.append(clock)
                clock += rng.expovariate(wl.session_rate)
        else:
            starts = [0.0] * n
        arrivals: list[Arrival] = []
        for start in starts:
            arrivals.extend(self._start_conversation(start))
        return arrivals

    def _start_conversation(self, now: float) -> list[Arrival]:
        conv = self._next_conv
        self._next_conv += 1
        return self._start_session(self.wl.sessions[conv], conv, now)

    def _start_session(self, sess: Session, conv: int, now: float) -> list[Arrival]:
        self._outstanding[conv] += 1
        live = _Live(sess, conv)
        out = self._spawns(live, 0, now)
        if sess.requests:
            t = self._ticket()
            self._tickets[t] = live
            out.append((now + sess.requests[0].delay_s * self.wl.think_scale, t))
        else:
            out.extend(self._session_ended(live, now))
        return out

    def _spawns(self, live: _Live, after: int, now: float) -> list[Arrival]:
        out: list[Arrival] = []
        for child in live.session.children:
            if child.after == after:
                t = -self._ticket()
                self._pending_spawn[t] = (child.session, live.conv)
                self._outstanding[live.conv] += 1  # keeps the conversation open until it starts
                out.append((now + child.delay_s * self.wl.think_scale, t))
        return out

    def issue(self, ticket: int, now: float) -> RequestSpec | list[Arrival]:
        """The request due now, or (for a sub-agent start) the arrivals the new session makes."""
        if ticket < 0:
            sess, conv = self._pending_spawn.pop(ticket)
            self._outstanding[conv] -= 1
            return self._start_session(sess, conv, now)
        live = self._tickets.pop(ticket)
        i = live.next_index
        req = live.session.requests[i]
        live.prev = hashes = live.prev[: req.shared] + req.tail
        rid = f"{live.session.session_id}#{i}"
        self._by_request[rid] = live
        return RequestSpec(
            request_id=rid,
            block_hashes=hashes,
            prompt_tokens=req.prompt_tokens,
            max_tokens=req.output_tokens,
            session_id=live.session.session_id,
            arrival_s=now,
        )

    def done(self, request_id: str, now: float) -> list[Arrival]:
        """A request finished (or was rejected) at `now`: what that enables."""
        live = self._by_request.pop(request_id)
        live.next_index += 1
        out = self._spawns(live, live.next_index, now) if self.wl.mode == "closed" else []
        if live.next_index < len(live.session.requests):
            t = self._ticket()
            self._tickets[t] = live
            delay = live.session.requests[live.next_index].delay_s * self.wl.think_scale
            out.append((now + delay, t))
        else:
            live.prev = ()
            out.extend(self._session_ended(live, now))
        return out

    def _session_ended(self, live: _Live, now: float) -> list[Arrival]:
        self._outstanding[live.conv] -= 1
        if self._outstanding[live.conv] > 0:
            return []
        self.conversations_done += 1
        if (
            self.wl.mode == "closed"
            and self.wl.concurrency is not None
            and self._next_conv < len(self.wl.sessions)
        ):
            return self._start_conversation(now)
        return []

    def finished(self) -> bool:
        return self.conversations_done == len(self.wl.sessions)


def replay_order(workload: Workload) -> list[tuple[float, RequestSpec]]:
    """Arrival order when every request takes zero time (tests and offline statistics)."""
    drv = Driver(workload)
    heap: list[tuple[float, int]] = list(drv.start())
    heapq.heapify(heap)
    out: list[tuple[float, RequestSpec]] = []
    while heap:
        now, ticket = heapq.heappop(heap)
        got = drv.issue(ticket, now)
        if isinstance(got, list):
            for a in got:
                heapq.heappush(heap, a)
            continue
        out.append((now, got))
        for a in drv.done(got.request_id, now):
            heapq.heappush(heap, a)
    return out
