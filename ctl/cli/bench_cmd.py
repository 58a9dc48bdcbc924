"""`agentctl bench fanout | replay | live | soak`: measured and reported (soak also says whether
each scenario met its bar)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.table import Table

from agentctl.ctl.cli.main import state
from agentctl.ctl.cli.output import plain
from agentctl.ctl.cli.serve_cmd import PASS_THROUGH, run_serving

app = typer.Typer(help="Benchmarks (run on demand, not in the test suite).", no_args_is_help=True)


@app.command("fanout")
def fanout(
    hosts: Annotated[int, typer.Option("--hosts", min=1, max=500)] = 50,
    forks: Annotated[int | None, typer.Option("--forks", "-f", min=1)] = None,
    repeat: Annotated[int, typer.Option("--repeat", min=1, max=20)] = 1,
) -> None:
    """An ad-hoc command and a facts run over N loopback sshd hosts; Ansible and pyinfra too
    when installed, on the same hosts and inventory, with ratios against agentctl."""
    from agentctl.ctl.bench import run_fanout_bench

    st = state()
    results = run_fanout_bench(hosts=hosts, forks=forks, repeat=repeat)
    ours = {m.job: m.best for m in results if m.tool == "agentctl"}
    rows: list[dict[str, Any]] = []
    for m in results:
        ratio = m.best / ours[m.job] if ours.get(m.job) else float("nan")
        rows.append(
            {
                "tool": m.tool,
                "job": m.job,
                "best_s": round(m.best, 3),
                "median_s": round(m.median, 3),
                "runs": m.seconds,
                "ok": m.ok,
                "x_agentctl": round(ratio, 2),
                "note": m.note,
            }
        )
    st.output.emit(
        {"hosts": hosts, "forks": forks or hosts, "results": rows},
        schema="agentctl.bench.fanout/1",
        ok=all(m.ok for m in results),
    )
    table = Table(
        title=f"Fan-out over {hosts} loopback sshd hosts, forks={forks or hosts}",
        title_justify="left",
    )
    for col in ("tool", "job", "best s", "median s", "time vs agentctl", "ok"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            plain(r["tool"]),
            plain(r["job"]),
            f"{r['best_s']:.2f}",
            f"{r['median_s']:.2f}",
            f"{r['x_agentctl']:.2f}x",
            "yes" if r["ok"] else plain(f"no: {r['note']}"),
        )
    st.output.print(table)


class Mode(StrEnum):
    SIM = "sim"
    LIVE = "live"


POLICIES = ("round-robin", "least-loaded", "session", "dynamo", "sglang", "kv")

# The report's columns, as `python -m agentctl.serving bench replay --help` explains them
# (serving/bench/cli.py LEGEND; tests/cli/test_startup.py checks both name every column).
# `\b` keeps click from rewrapping the paragraph.
REPLAY_EPILOG = """\b
The report has one row per policy:
  policy    the routing policy
  done      requests completed
  rej       requests rejected (a prompt no worker can hold)
  hit%      prefix-cache hit rate as the engines count it: prompt tokens found
            cached at a request's first admission over prompt tokens admitted
            (vLLM's prefix_cache_hits over prefix_cache_queries)
  oracle%   the hit rate of one infinite cache that sees every request in
            arrival order: a ceiling no policy, worker count or cache beats
  capt%     hit% / oracle%: the share of the reachable hit rate captured
  ttft p50, p90, p99
            time to first token (arrival at the router to first token)
  itl p50   inter-token latency, the median over requests
  e2e p50   end-to-end latency (arrival to last token), the median
  tok/s     output tokens of completed requests per second, first arrival to
            last finish
  imbal     prefill imbalance: the busiest worker's prefill tokens over the
            workers' mean (1.00 is perfectly even)
  x p50, x p99
            round-robin's TTFT p50 / p99 over the policy's: 2.00 is half the
            latency (higher is better; '-' when round-robin did not run)
Latencies are in milliseconds of trace time in both modes. With --json each policy
also carries a `timeline`: per window of trace time, fleet-wide and per worker,
requests, token-weighted hit rate and TTFT p50/p90 (the web dashboard's serving page
charts the demo's replay from it).

\b
Try it in a clone on the slice agentctl ships (six Claude Code conversations):
  agentctl bench replay ctl/data/weka_cc_sample6.jsonl.xz --workers 4
"""


@app.command("replay", epilog=REPLAY_EPILOG)
def replay(
    trace: Annotated[
        str,
        typer.Argument(
            help="Mooncake .jsonl, or WEKA Claude Code .jsonl or .jsonl.xz (detected from the "
            "first line)."
        ),
    ],
    mode: Annotated[
        Mode,
        typer.Option(
            "--mode",
            help="sim: simulated engines on a virtual clock, deterministic for --seed; live: a "
            "real router and worker processes on loopback per policy, on the wall clock.",
        ),
    ] = Mode.SIM,
    workers: Annotated[int, typer.Option("--workers", help="Engine workers.")] = 8,
    policies: Annotated[
        list[str] | None,
        typer.Option(
            "--policy",
            help=f"A policy to replay, repeatable (default all six: {', '.join(POLICIES)}).",
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit",
            "--sessions",
            help="Conversations (WEKA) or rows (Mooncake) to read (default: all).",
        ),
    ] = None,
    skip: Annotated[
        int, typer.Option("--skip", help="Conversations (WEKA) or rows to skip first.")
    ] = 0,
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency",
            help="WEKA: keep this many conversations active, the next starting when one ends "
            "(default: all start at once, at their trace times).",
        ),
    ] = None,
    session_rate: Annotated[
        float | None,
        typer.Option(
            "--session-rate",
            help="WEKA: start conversations as a Poisson process of this many a second (seeded).",
        ),
    ] = None,
    think_scale: Annotated[
        float,
        typer.Option(
            "--think-scale",
            help="WEKA: multiplier on the think time between a request's finish and the next "
            "request (0.05 packs the same turns 20x tighter).",
        ),
    ] = 1.0,
    rate_scale: Annotated[
        float,
        typer.Option(
            "--rate-scale",
            help="Mooncake: arrival speed-up (a request arrives at its timestamp / this).",
        ),
    ] = 1.0,
    capacity_blocks: Annotated[
        int,
        typer.Option("--capacity-blocks", help="KV cache per worker, in 64-token blocks."),
    ] = 16384,
    time_scale: Annotated[
        float,
        typer.Option(
            "--time-scale",
            help="sim: multiplier on every engine step time; live: wall seconds per trace second.",
        ),
    ] = 1.0,
    max_wall: Annotated[
        float | None,
        typer.Option(
            "--max-wall",
            help="live: stop sending after this many wall seconds; requests in flight finish "
            "(default: no limit).",
        ),
    ] = None,
    kv_event_delay: Annotated[
        float,
        typer.Option(
            "--kv-event-delay",
            help="sim: seconds from an engine step to its KV events reaching the router's index.",
        ),
    ] = 0.0,
    seed: Annotated[
        int,
        typer.Option("--seed", help="Seed of the session starts and the policies' choices."),
    ] = 0,
    json_: Annotated[
        bool,
        typer.Option("--json", help="Print one JSON envelope on stdout instead of the table."),
    ] = False,
) -> None:
    """Replay a Mooncake or WEKA Claude Code trace through every routing policy, with ratios
    against round-robin.

    Every policy replays the same workload and seed. It runs the serving package's own
    benchmark, `python -m agentctl.serving bench replay` (what a node runs without the control
    plane): progress on stderr, the report on stdout, its exit code ours (2: bad options or an
    unknown policy, 1: an unreadable trace).
    """
    args = ["bench", "replay", trace, "--mode", mode.value, "--workers", str(workers)]
    for name in policies or []:
        args += ["--policy", name]
    values: list[tuple[str, object]] = [
        ("--limit", limit),
        ("--skip", skip),
        ("--concurrency", concurrency),
        ("--session-rate", session_rate),
        ("--think-scale", think_scale),
        ("--rate-scale", rate_scale),
        ("--capacity-blocks", capacity_blocks),
        ("--time-scale", time_scale),
        ("--max-wall", max_wall),
        ("--kv-event-delay", kv_event_delay),
        ("--seed", seed),
    ]
    args += [part for flag, value in values if value is not None for part in (flag, str(value))]
    if json_ or state().json:
        args.append("--json")
    run_serving(args)


SOAK_SCENARIOS = ("ramp", "kill", "poison", "restart", "slowloris")


@app.command("soak")
def soak(
    scenario: Annotated[
        str,
        typer.Option(
            "--scenario",
            help=f"Comma-separated scenarios (default all: {','.join(SOAK_SCENARIOS)}).",
        ),
    ] = ",".join(SOAK_SCENARIOS),
    concurrency: Annotated[
        str, typer.Option("--concurrency", help="Ramp levels, concurrent streams.")
    ] = "64,500,2000",
    requests_factor: Annotated[
        int, typer.Option("--requests-factor", help="Ramp: requests per level = K x its level.")
    ] = 3,
    workers: Annotated[int, typer.Option("--workers", help="Engine workers.")] = 3,
    time_scale: Annotated[
        float, typer.Option("--time-scale", help="The workers' cost-model time scale.")
    ] = 1.0,
    stop_s: Annotated[float, typer.Option("--stop-s", help="Kill: seconds of SIGSTOP.")] = 20.0,
    slowloris_s: Annotated[
        float, typer.Option("--slowloris-s", help="Slowloris: seconds of trickled headers.")
    ] = 45.0,
    slowloris_conns: Annotated[
        int, typer.Option("--slowloris-conns", help="Slowloris: connections per target.")
    ] = 1500,
    restart_wait_s: Annotated[
        float, typer.Option("--restart-wait-s", help="Restart: seconds the index may take.")
    ] = 30.0,
    json_: Annotated[
        bool,
        typer.Option("--json", help="Print one JSON envelope on stdout instead of the table."),
    ] = False,
) -> None:
    """The serving stack under load, faults and bad input on loopback: concurrency ramps, a
    worker killed and one stopped mid-stream, a poison prompt, a router restart, slowloris.

    Runs `python -m agentctl.serving bench soak` (see its --help for every scenario's bar):
    exit code 0 when every scenario met its bar, 1 otherwise, 2 for bad options.
    """
    args = [
        "bench", "soak", "--scenario", scenario, "--concurrency", concurrency,
        "--requests-factor", str(requests_factor), "--workers", str(workers),
        "--time-scale", str(time_scale), "--stop-s", str(stop_s),
        "--slowloris-s", str(slowloris_s), "--slowloris-conns", str(slowloris_conns),
        "--restart-wait-s", str(restart_wait_s),
    ]  # fmt: skip
    if json_ or state().json:
        args.append("--json")
    run_serving(args)


@app.command("live", context_settings=PASS_THROUGH)
def live(ctx: typer.Context) -> None:
    """aiperf replays a Mooncake slice through agentctl's kv and round-robin routers and, with
    --peer sglang-router, sglang-router, fresh sim workers each: client and engine TTFT, router
    added latency, hit rate, ratios against round-robin (see `agentctl bench live --help`).

    It runs the serving package's `python -m agentctl.serving bench live` with the arguments
    passed through (its --help is this command's); the peers install into a cached venv
    outside the clone with --install-peers.
    """
    args = ["bench", "live", *ctx.args]
    if state().json and "--json" not in args:
        args.append("--json")
    run_serving(args)
