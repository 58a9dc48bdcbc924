"""`python -m agentctl.serving bench soak`: the options, the table and the `--json` envelope.

Exit codes: 0 when every scenario met its bar, 1 otherwise, 2 for bad arguments (or an
open-files limit too low for the run).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from typing import Any

from agentctl.serving.bench.soak import SCENARIOS, ScenarioResult, SoakOptions, run_scenario

DESCRIPTION = """\
The serving stack under load, faults and bad input, on loopback: each scenario starts a fresh
router and --workers simulated engine workers, drives them, stops them, and says whether it met
its bar. Scenarios: ramp (bounded concurrency ramps of small chat streams), kill (kill -9 one
worker, kill -STOP another, with 64 streams in flight), poison (a ~4.8 MiB prompt among 6
streams), restart (the router restarted under load: does its index come back?), slowloris
(connections that never finish their headers, to the router and a worker). Progress on stderr,
the report on stdout."""

LEGEND = """\
Columns: ok / failed (HTTP error or an SSE error event) / truncated (a stream that ended with
neither [DONE] nor an error event) / shed (429 or 503 with Retry-After) / migr (requests the
router moved to another worker: its agentctl_router_migrations_total over the run); ttft:
client time to first token, p50/p99 ms; added: client TTFT minus the engines' TTFT
(vllm:time_to_first_token_seconds), percentile by percentile - a comparison of distributions,
not per request, that includes the client's and the workers' share of a busy machine; router:
the router's own measure of its share of each request's TTFT (agentctl_router_added_latency_
seconds: body read to send, first token received to relayed). Exit code 0 when every scenario
met its bar."""


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 64,500,2000: {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers: {text!r}")
    return values


def _scenarios(text: str) -> tuple[str, ...]:
    names = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown scenario {', '.join(unknown) or text!r} (known: {', '.join(SCENARIOS)})"
        )
    return names


def add_soak_args(ap: argparse.ArgumentParser) -> None:
    d = SoakOptions()
    ap.description = DESCRIPTION
    ap.epilog = LEGEND
    ap.formatter_class = argparse.RawDescriptionHelpFormatter
    ap.add_argument(
        "--scenario",
        type=_scenarios,
        default=tuple(SCENARIOS),
        metavar="LIST",
        help=f"comma-separated scenarios (default all: {','.join(SCENARIOS)})",
    )
    ap.add_argument(
        "--concurrency",
        type=_int_list,
        default=d.concurrency,
        metavar="LIST",
        help="ramp levels, concurrent streams (default 64,500,2000)",
    )
    ap.add_argument(
        "--requests-factor",
        type=int,
        default=d.requests_factor,
        metavar="K",
        help="ramp: requests per level = K x its concurrency (default 3)",
    )
    ap.add_argument("--workers", type=int, default=d.workers, metavar="N", help="workers (3)")
    ap.add_argument(
        "--time-scale",
        type=float,
        default=d.time_scale,
        metavar="X",
        help="the workers' cost-model time scale (default 1.0: real-time step times)",
    )
    ap.add_argument(
        "--stop-s", type=float, default=d.stop_s, metavar="S", help="kill: SIGSTOP for S (20)"
    )
    ap.add_argument(
        "--slowloris-s",
        type=float,
        default=d.slowloris_s,
        metavar="S",
        help="slowloris: seconds the connections trickle headers (default 45)",
    )
    ap.add_argument(
        "--slowloris-conns",
        type=int,
        default=d.slowloris_conns,
        metavar="N",
        help="slowloris: connections to each of the router and a worker (default 1500)",
    )
    ap.add_argument(
        "--restart-wait-s",
        type=float,
        default=d.restart_wait_s,
        metavar="S",
        help="restart: how long the index may take to come back (default 30)",
    )
    ap.add_argument("--json", action="store_true", help="print one JSON envelope on stdout")


def options_of(args: argparse.Namespace) -> SoakOptions:
    """`SoakOptions` from parsed arguments; `ValueError` for values out of range."""
    if args.workers < 1:
        raise ValueError("--workers must be >= 1")
    if "kill" in args.scenario and args.workers < 3:
        raise ValueError("the kill scenario needs --workers >= 3 (one killed, one stopped)")
    if args.time_scale <= 0:
        raise ValueError("--time-scale must be > 0")
    for flag, v in (
        ("--requests-factor", args.requests_factor),
        ("--slowloris-conns", args.slowloris_conns),
    ):
        if v < 1:
            raise ValueError(f"{flag} must be >= 1")
    for flag, f in (
        ("--stop-s", args.stop_s),
        ("--slowloris-s", args.slowloris_s),
        ("--restart-wait-s", args.restart_wait_s),
    ):
        if f <= 0:
            raise ValueError(f"{flag} must be > 0")
    return SoakOptions(
        workers=args.workers,
        time_scale=args.time_scale,
        concurrency=args.concurrency,
        requests_factor=args.requests_factor,
        stop_s=args.stop_s,
        restart_wait_s=args.restart_wait_s,
        slowloris_s=args.slowloris_s,
        slowloris_conns=args.slowloris_conns,
    )


def files_needed(opts: SoakOptions, scenarios: tuple[str, ...]) -> int:
    """Open files the busiest process (router: a client side and a worker side per stream;
    the client: every slowloris socket) may hold at once, with headroom."""
    need = 1024
    if "ramp" in scenarios:
        need = max(need, 2 * max(opts.concurrency) + 1024)
    if "slowloris" in scenarios:
        need = max(need, 2 * opts.slowloris_conns + 1024)
    return need


def run_soak(args: argparse.Namespace) -> int:
    from agentctl.serving.bench.soak_client import raise_nofile

    try:
        opts = options_of(args)
        soft, _ = raise_nofile(files_needed(opts, args.scenario))
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"# open-files limit {soft} (inherited by the cluster's processes)", file=sys.stderr)
    results: list[ScenarioResult] = []
    for name in args.scenario:
        print(f"# {name}: starting", file=sys.stderr)
        res = run_scenario(name, opts, progress=lambda m: print(f"# {m}", file=sys.stderr))
        verdict = "met its bar" if res.passed else "did NOT meet its bar"
        print(f"# {name}: {verdict} ({res.figures.get('wall_s')}s)", file=sys.stderr)
        results.append(res)
    ok = all(r.passed for r in results)
    if args.json:
        print(json.dumps(envelope(results, opts), sort_keys=True, default=str))
    else:
        print_table(results)
    return 0 if ok else 1


def envelope(results: list[ScenarioResult], opts: SoakOptions) -> dict[str, Any]:
    from agentctl.serving.bench.cli import _version

    failed = [r for r in results if not r.passed]
    return {
        "ok": not failed,
        "data": {
            "workers": opts.workers,
            "time_scale": opts.time_scale,
            "scenarios": [r.to_json() for r in results],
        },
        "errors": [
            {
                "kind": "soak_bar_missed",
                "message": f"{r.name}: " + (r.error or f"did not meet its bar: {r.bar}"),
            }
            for r in failed
        ],
        "meta": {
            "tool": "agentctl",
            "version": _version(),
            "schema": "agentctl.bench.soak/1",
            "collected_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    }


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.1f}"
    return str(v)


_COLUMNS = (
    ("ok", "ok"),
    ("failed", "failed"),
    ("truncated", "trunc"),
    ("shed", "shed"),
    ("migrations_metric", "migr"),
    ("client_ttft_ms_p50", "ttft p50"),
    ("client_ttft_ms_p99", "ttft p99"),
    ("added_ms_p50", "added p50"),
    ("added_ms_p99", "added p99"),
    ("router_ms_p50", "router p50"),
    ("router_ms_p99", "router p99"),
)
_NOTES = (
    "stopped_back",
    "workers_seen_down",
    "workers_logged_down",
    "poison_status",
    "poison_s",
    "refused_while_down",
    "confirmed_before",
    "confirmed_after",
    "healthy_after_s",
    "index_recovered_after_s",
    "attempted",
    "refused",
    "closed_by_server",
    "open_at_end",
    "probes_served",
    "probes",
)


def print_table(results: list[ScenarioResult]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="bench soak", title_justify="left")
    table.add_column("scenario")
    table.add_column("case")
    for _, head in _COLUMNS:
        table.add_column(head, justify="right")
    table.add_column("notes")
    table.add_column("bar")
    for r in results:
        if r.error:
            table.add_row(r.name, "-", *("-" for _ in _COLUMNS), r.error, "NOT MET")
        for i, row in enumerate(r.rows):
            notes = ", ".join(f"{k}={_cell(row[k])}" for k in _NOTES if k in row)
            bar = ("met" if r.passed else "NOT MET") if i == 0 else ""
            table.add_row(
                r.name if i == 0 else "",
                str(row.get("case", "")),
                *(_cell(row.get(k)) for k, _ in _COLUMNS),
                notes,
                bar,
            )
    console = Console(file=sys.stdout, width=max(160, Console().width))
    console.print(table)
    for r in results:
        print(f"{r.name}: bar {'met' if r.passed else 'NOT met'}: {r.bar}")
    print(LEGEND)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m agentctl.serving bench soak")
    add_soak_args(ap)
    return run_soak(ap.parse_args(argv))
