"""Discrete-event replay (`--mode sim`): N simulated engines behind the real router code.

One virtual clock and one event heap. An engine that has work and is idle runs `step(now)`; the
step's results land at `now + duration`: first tokens and finishes update the router's
`LoadTracker` and the request records, KV events go into the router's `BlockIndex` (per-worker
monotonic sequence numbers, optionally after a propagation delay), and the engine reports its
running / waiting / KV usage to the tracker after every step. Each arriving request is routed by
the policy from `WorkerState`s built out of index overlaps and load views, `record_route` is
called, and the request is queued on the chosen engine. Closed-loop sessions get their next
request from the workload `Driver` on finish.

Ties at one instant are ordered: step results, then KV events, then arrivals, then engine
wake-ups, so that everything arriving at t is visible to (and joins) the step starting at t.
Everything is deterministic for a seed: no wall clock, no set iteration, a sequence number on
every heap entry.

Speed (the WEKA corpus is ~94M blocks): hashes travel as tuples, never per-block objects; the
per-block work is in C (`BlockIndex.overlaps`, tuple slicing in the driver) except where a policy
needs more: the refcounted in-flight blocks that only `dynamo` reads are maintained only for it,
and the index is only consulted by policies that look at overlaps.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentctl.serving.bench.metrics import (
    OracleCache,
    PolicyResult,
    RequestRecord,
    WorkerTotals,
    summarize,
)
from agentctl.serving.bench.workload import Driver, Workload
from agentctl.serving.costmodel import CostModel
from agentctl.serving.engine import EngineConfig, EngineCore, RequestTooLarge, StepResult
from agentctl.serving.router import (
    BlockIndex,
    LoadTracker,
    WorkerState,
    make_policy,
)

#: width of the utilisation histogram's buckets, virtual seconds
_BUCKET_S = 10.0

#: heap entry kinds, in their tie order at one instant
_STEP_END, _KV, _ARRIVE, _WAKE = 0, 1, 2, 3

#: what each policy reads beyond the load views (unknown policies get everything)
_NEEDS: dict[str, tuple[bool, bool]] = {
    # name: (index overlaps, in-flight block refcounts)
    "round-robin": (False, False),
    "least-loaded": (False, False),
    "session": (False, False),
    "sglang": (False, False),  # keeps its own approximate tree, as SGLang does
    "dynamo": (True, True),
    "kv": (True, False),
}


@dataclass(frozen=True)
class SimOptions:
    """Knobs of one simulation beyond the workload, policy and cluster shape."""

    #: seconds between an engine step's end and its KV events reaching the index
    kv_event_delay_s: float = 0.0
    #: stop the clock here (an overloaded run); requests not finished are reported as such
    max_time_s: float = math.inf
    #: keep the engines' events out of the index even for policies that read it
    disable_events: bool = False
    #: an engine reports running / waiting / KV usage after every step that changed them
    #: (KV usage to 0.1%), and at least this often while it is stepping
    report_interval_s: float = 1.0


def default_engine_config() -> EngineConfig:
    return EngineConfig()


def run_sim(
    workload: Workload,
    *,
    policy_name: str,
    workers: int = 8,
    engine_config: EngineConfig | None = None,
    cost: CostModel | None = None,
    seed: int = 0,
    policy_opts: Mapping[str, Any] | None = None,
    options: SimOptions | None = None,
    progress: Callable[[float, int, int], None] | None = None,
    keep_records: bool = False,
) -> PolicyResult:
    """Replay `workload` through `workers` simulated engines routed by `policy_name`.

    `seed` seeds the policy (and the workload's session arrivals, via `workload.seed` when the
    caller sets it). `progress(now, issued, finished)` is called every 4096 arrivals;
    `keep_records` keeps the per-request records on the result."""
    if workers < 1:
        raise ValueError("workers must be at least 1")
    cfg = engine_config or default_engine_config()
    cost = cost or CostModel()
    opts = options or SimOptions()
    wall0 = time.perf_counter()
    cpu0 = time.process_time()

    names = [f"w{i}" for i in range(workers)]
    needs_overlap, needs_refs = _NEEDS.get(policy_name, (True, True))
    use_index = needs_overlap and not opts.disable_events
    engines = [EngineCore(_with_events(cfg, use_index), cost) for _ in names]
    index = BlockIndex()
    load = LoadTracker(block_size=cfg.block_size, token_budget=cfg.max_num_batched_tokens)
    for name in names:
        index.add_worker(name, cfg.capacity_blocks)
        load.add_worker(name, cfg.capacity_blocks, cfg.max_num_batched_tokens)
    policy = make_policy(policy_name, **_policy_options(policy_name, cost, seed, policy_opts))
    bs = cfg.block_size
    capacity_tokens = cfg.capacity_blocks * bs
    event_seq = [-1] * workers  # vLLM numbers from 0; the index expects 0 first
    busy = [False] * workers
    steps = [0] * workers
    idle_steps = [0] * workers
    # engine time per 10 s of virtual time (all workers summed): utilisation over the loaded
    # part of a run, which the long tail of the last conversations would otherwise dilute
    busy_s: list[float] = []
    prefill_s: list[float] = []
    delay = opts.kv_event_delay_s
    report_every = opts.report_interval_s
    reported: list[tuple[int, int, float]] = [(-1, -1, -1.0)] * workers
    reported_at = [-math.inf] * workers

    driver = Driver(workload)
    records: dict[str, RequestRecord] = {}
    all_records: list[RequestRecord] = []
    oracle = OracleCache(bs)
    heap: list[tuple[float, int, int, int, Any]] = []
    counter = 0
    for t, ticket in driver.start():
        counter += 1
        heap.append((t, _ARRIVE, counter, ticket, None))
    heapq.heapify(heap)
    push = heapq.heappush
    pop = heapq.heappop

    def start_step(i: int, now: float, order: int) -> None:
        res = engines[i].step(now)
        steps[i] += 1
        duration = res.duration_s
        if duration > 0.0:
            idle_steps[i] = 0
        else:
            # a step that only preempts takes no time; an engine that keeps scheduling nothing
            # would spin at one instant forever
            idle_steps[i] += 1
            if idle_steps[i] > 1000:
                raise RuntimeError(f"engine {names[i]} made no progress at t={now}")
        bucket = int(now // _BUCKET_S)
        while len(busy_s) <= bucket:
            busy_s.append(0.0)
            prefill_s.append(0.0)
        busy_s[bucket] += duration
        prefill_s[bucket] += cost.prefill_s(res.prefill_tokens)
        busy[i] = True
        push(heap, (now + duration, _STEP_END, order, i, res))

    issued = finished_n = 0
    now = 0.0
    while heap:
        now, kind, _, a, payload = pop(heap)
        if now > opts.max_time_s:
            now = opts.max_time_s
            break
        if kind == _STEP_END:
            i = a
            res: StepResult = payload
            eng = engines[i]
            w = names[i]
            for rid, cached in res.first_tokens:
                rec = records[rid]
                rec.first_token_s = now
                rec.cached_tokens = cached
                load.on_first_token(rid, now)
            if res.events and use_index:
                event_seq[i] += 1
                if delay > 0.0:
                    counter += 1
                    push(heap, (now + delay, _KV, counter, i, (event_seq[i], res.events)))
                else:
                    index.apply(w, event_seq[i], res.events, now)
            for rid in res.finished:
                rec = records.pop(rid)
                rec.finish_s = now
                finished_n += 1
                load.on_finish(rid, now)
                for t, ticket in driver.done(rid, now):
                    counter += 1
                    push(heap, (t, _ARRIVE, counter, ticket, None))
            state = (eng.num_running, eng.num_waiting, round(eng.kv_usage, 3))
            if state != reported[i] or now - reported_at[i] >= report_every:
                load.on_engine_report(w, state[0], state[1], eng.kv_usage, now)
                reported[i] = state
                reported_at[i] = now
            busy[i] = False
            if eng.has_work():
                if heap and heap[0][0] <= now:
                    # something else happens at this instant: let it land first
                    counter += 1
                    push(heap, (now, _WAKE, counter, i, None))
                else:
                    counter += 1
                    start_step(i, now, counter)
        elif kind == _ARRIVE:
            got = driver.issue(a, now)
            if isinstance(got, list):  # a sub-agent session starts
                for t, ticket in got:
                    counter += 1
                    push(heap, (t, _ARRIVE, counter, ticket, None))
                continue
            spec = got
            issued += 1
            rec = RequestRecord(
                request_id=spec.request_id,
                arrival_s=now,
                prompt_tokens=spec.prompt_tokens,
                output_tokens=spec.max_tokens,
                session_id=spec.session_id,
            )
            all_records.append(rec)
            if progress is not None and issued % 4096 == 0:
                progress(now, issued, finished_n)
            if spec.prompt_tokens + spec.max_tokens > capacity_tokens:
                rec.rejected = True
                rec.reject_reason = "prompt and output exceed a worker's KV capacity"
                for t, ticket in driver.done(spec.request_id, now):
                    counter += 1
                    push(heap, (t, _ARRIVE, counter, ticket, None))
                continue
            oracle.observe(spec.block_hashes, spec.prompt_tokens)
            hashes = spec.block_hashes
            overlaps = index.overlaps(hashes, now) if use_index and hashes else {}
            states = [
                WorkerState(
                    id=name,
                    index=j,
                    load=load.view(name, now),
                    overlap_blocks=overlaps.get(name, 0),
                    cached_blocks=index.cached_blocks(name) if use_index else 0,
                    capacity_blocks=cfg.capacity_blocks,
                    block_size=bs,
                    active_shared_blocks=(
                        load.shared_active_blocks(name, hashes) if needs_refs else 0
                    ),
                )
                for j, name in enumerate(names)
            ]
            decision = policy.choose(spec, states, now)
            w = decision.worker
            i = names.index(w)
            if use_index:
                index.record_route(w, hashes, now)
            load.on_route(
                w,
                spec.request_id,
                spec.prompt_tokens,
                overlaps.get(w, 0) * bs,
                spec.expected_output,
                now,
                block_hashes=hashes if needs_refs else (),
            )
            try:
                engines[i].add_request(spec, now)
            except RequestTooLarge as exc:
                load.on_finish(spec.request_id, now)
                rec.rejected = True
                rec.reject_reason = str(exc)
                for t, ticket in driver.done(spec.request_id, now):
                    counter += 1
                    push(heap, (t, _ARRIVE, counter, ticket, None))
                continue
            rec.worker = w
            records[spec.request_id] = rec
            if not busy[i]:
                counter += 1
                push(heap, (now, _WAKE, counter, i, None))
        elif kind == _WAKE:
            i = a
            if busy[i] or not engines[i].has_work():
                continue
            counter += 1
            start_step(i, now, counter)
        else:  # _KV
            seq_no, events = payload
            index.apply(names[a], seq_no, events, now)

    totals = {
        name: WorkerTotals(
            prefix_cache_queries=eng.prefix_cache_queries,
            prefix_cache_hits=eng.prefix_cache_hits,
            prefill_tokens=eng.total_prefill_tokens,
            preemptions=eng.num_preemptions,
        )
        for name, eng in zip(names, engines, strict=True)
    }
    extra: dict[str, float] = {
        "issued": float(issued),
        "unfinished": float(len(records)),
        "steps": float(sum(steps)),
        "preemptions": float(sum(t.preemptions for t in totals.values())),
        "virtual_s": now,
        # mean share of time the engines spent stepping / prefilling, from the start until 90%
        # of the requests had arrived (the loaded part of the run)
        "busy": _utilisation(busy_s, all_records, workers),
        "prefill_busy": _utilisation(prefill_s, all_records, workers),
    }
    if use_index:
        extra["index_blocks"] = float(index.stats().confirmed_blocks)
        st = index.stats()
        extra["index_gaps"] = float(st.gaps)
        extra["index_resets"] = float(st.resets)
    measured = {"index_bytes": float(index.memory_bytes())} if use_index else {}
    return summarize(
        policy_name,
        all_records,
        workers=names,
        oracle_hit_rate=oracle.hit_rate,
        totals=totals,
        extra=extra,
        wall_s=time.perf_counter() - wall0,
        cpu_s=time.process_time() - cpu0,
        keep_records=keep_records,
        measured=measured,
    )


def _utilisation(per_bucket: list[float], records: list[RequestRecord], workers: int) -> float:
    """Engine time over capacity from 0 until 90% of the requests had arrived."""
    if not records:
        return 0.0
    arrivals = sorted(r.arrival_s for r in records)
    until = arrivals[min(len(arrivals) - 1, int(0.9 * len(arrivals)))]
    full = int(until // _BUCKET_S)
    used = sum(per_bucket[:full])
    if full < len(per_bucket):
        used += per_bucket[full] * (until - full * _BUCKET_S) / _BUCKET_S
    return used / (workers * until) if until > 0 else 0.0


def _with_events(cfg: EngineConfig, record: bool) -> EngineConfig:
    if cfg.record_events == record:
        return cfg
    from dataclasses import replace

    return replace(cfg, record_events=record)


def _policy_options(
    name: str, cost: CostModel, seed: int, extra: Mapping[str, Any] | None
) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if name == "kv":
        opts.update(cost=cost, seed=seed)
    elif name == "dynamo":
        opts.update(seed=seed)
    opts.update(extra or {})
    return opts


def compare(
    workload: Workload | Callable[[], Workload],
    policies: Sequence[str],
    *,
    workers: int = 8,
    engine_config: EngineConfig | None = None,
    cost: CostModel | None = None,
    seed: int = 0,
    policy_opts: Mapping[str, Mapping[str, Any]] | None = None,
    options: SimOptions | None = None,
    progress: Callable[[str, PolicyResult], None] | None = None,
) -> list[PolicyResult]:
    """Run every policy on the same workload, cluster and seed, so ratios between them mean
    something. `workload` may be a factory (called once per policy) or a `Workload`, which is
    immutable and simply reused."""
    results: list[PolicyResult] = []
    for name in policies:
        wl = workload() if callable(workload) else workload
        res = run_sim(
            wl,
            policy_name=name,
            workers=workers,
            engine_config=engine_config,
            cost=cost,
            seed=seed,
            policy_opts=(policy_opts or {}).get(name),
            options=options,
        )
        results.append(res)
        if progress is not None:
            progress(name, res)
    return results
