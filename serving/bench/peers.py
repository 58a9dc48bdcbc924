"""`bench live`: agentctl's routers against a real peer router, measured by a real client.

What is compared. The same slice of a Mooncake trace (the first `--requests` rows, default 300,
of the conversation trace; `--trace FILE` for another) is replayed on its timestamps by NVIDIA's
aiperf (`--custom-dataset-type mooncake_trace --fixed-schedule`, streaming completions) through
each router in turn: agentctl's `kv` and `round-robin` policies and, with `--peer sglang-router`,
sglang-router (`--policy cache_aware`, the Rust router). Every router gets FRESH simulated
engine workers (`--workers`, default 4; empty caches, zeroed counters), so no row inherits
another's cache.

How. The trace carries `hash_ids`, not text: aiperf synthesises each id as 512 tokens of its
corpus (equal ids, equal text), so rows that share leading ids share a text prefix. The workers
tokenize that text (with the same offline tokenizer aiperf used, `peer_tokenizer.py`, when the
`tokenizers` package is importable here; else the built-in one) and cache 64-token blocks; the
hit rate is then what the engines themselves count. Per router:

- client TTFT p50 / p99: aiperf's `profile_export_aiperf.json`;
- engine TTFT p50: the workers' `vllm:time_to_first_token_seconds` histograms, summed over
  workers, as Prometheus's `histogram_quantile` (only as fine as the buckets near it);
- router added p50: client TTFT p50 minus engine TTFT p50 (what the router and its HTTP hops
  add to the median request);
- own p50 / p99 (agentctl's routers): the router's own measure of its share of each request's
  TTFT, `agentctl_router_added_latency_seconds` (body read to send to the worker, plus first
  token received to relayed), per request; the rest of "added" is the HTTP hops and, on a
  small host, the client, workers and router waiting for a CPU;
- hit%: the workers' `vllm:prefix_cache_hits` over `vllm:prefix_cache_queries`, summed;
- errors: requests aiperf counted as failed;
- ratios against round-robin (`x p50`, `x p99`: round-robin's TTFT over the router's, higher
  is better; `hit x`: the router's hit rate over round-robin's);
- agentctl's own prediction: `bench replay --mode sim` of the same slice (hit rate of `kv` and
  `round-robin`, and the oracle's bound), for comparing live with simulated.

Metrics are sampled from the workers just before aiperf starts and just after it ends and the
difference is used, so a router's start-up probes do not count. Everything runs on loopback on
the wall clock; on a small shared host expect noise between runs: compare rows of one run.

The peers (aiperf, sglang-router) run from their own cached virtualenvs (`peer_env.py`),
installed once with `--install-peers`; without them the command says how and exits 2.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import httpx

from agentctl.serving.bench.aiperf_client import (
    AiperfSummary,
    aiperf_argv,
    aiperf_env,
    load_profile_export,
)
from agentctl.serving.bench.peer_env import (
    PEERS,
    PeerEnv,
    PeerUnavailable,
    default_peers_dir,
    find_env,
    install_env,
)
from agentctl.serving.bench.prom import (
    EngineSample,
    Histogram,
    parse_engine_metrics,
    parse_histogram,
)
from agentctl.serving.cluster import ClusterError, ClusterSpec, LocalCluster, free_port

__all__ = [
    "AGENTCTL_ROUTERS",
    "PEER_ROUTERS",
    "RouterRow",
    "add_live_args",
    "format_table",
    "make_row",
    "ratios",
    "run_live_bench",
    "sglang_router_argv",
    "slice_trace",
]

AGENTCTL_ROUTERS = ("kv", "round-robin")
PEER_ROUTERS = ("sglang-router",)
MODEL = "agentctl-sim"
SCHEMA = "agentctl.bench.live/1"
#: the slice the repository ships (tests/fixtures/traces/README.md)
DEFAULT_TRACE = (
    Path(__file__).resolve().parents[2]
    / "tests"
    / "fixtures"
    / "traces"
    / "mooncake_conversation_head1500.jsonl"
)


#: an agentctl router's own share of each request's TTFT (serving/router/proxy.py)
ROUTER_ADDED = "agentctl_router_added_latency_seconds"


# ---- pure parts -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RouterRow:
    """One router's result: the client's view, the engines' view, and the difference."""

    router: str
    requests: int
    errors: int
    client_ttft_ms_p50: float
    client_ttft_ms_p99: float
    engine_ttft_ms_p50: float
    added_ms_p50: float
    hit_rate: float
    #: cached prompt tokens the client saw in `usage`, percent (a cross-check of hit_rate)
    usage_cached_pct: float
    prompt_tokens: int
    wall_s: float = 0.0
    note: str = ""
    #: agentctl's routers only: their own measure of their share of each TTFT
    #: (agentctl_router_added_latency_seconds), per request rather than by distributions
    router_ms_p50: float = math.nan
    router_ms_p99: float = math.nan

    @property
    def ok(self) -> bool:
        return not self.note and self.errors == 0


def make_row(
    router: str,
    client: AiperfSummary,
    engines: EngineSample,
    *,
    wall_s: float = 0.0,
    own: Histogram | None = None,
) -> RouterRow:
    """Combine aiperf's summary and the workers' metric difference over the run (and, for
    agentctl's routers, their own added-latency histogram over it)."""
    engine_p50 = 1000.0 * engines.ttft.quantile(0.5)
    own_p50 = own_p99 = math.nan
    if own is not None and own.count > 0:
        own_p50, own_p99 = 1000.0 * own.quantile(0.5), 1000.0 * own.quantile(0.99)
    return RouterRow(
        router=router,
        requests=client.requests,
        errors=client.errors,
        client_ttft_ms_p50=client.ttft_ms_p50,
        client_ttft_ms_p99=client.ttft_ms_p99,
        engine_ttft_ms_p50=engine_p50,
        added_ms_p50=client.ttft_ms_p50 - engine_p50,
        hit_rate=engines.hit_rate,
        usage_cached_pct=client.usage_cached_pct,
        prompt_tokens=int(engines.prefix_cache_queries),
        wall_s=wall_s,
        router_ms_p50=own_p50,
        router_ms_p99=own_p99,
    )


def failed_row(router: str, note: str, *, wall_s: float = 0.0) -> RouterRow:
    nan = math.nan
    return RouterRow(router, 0, 0, nan, nan, nan, nan, nan, nan, 0, wall_s, note)


def _over(a: float, b: float) -> float:
    return a / b if b > 0 and not math.isnan(a) and not math.isnan(b) else math.nan


def ratios(rows: Sequence[RouterRow], base: str = "round-robin") -> dict[str, dict[str, float]]:
    """Per router: `x_ttft_p50` / `x_ttft_p99` (the base's client TTFT over the router's: 2.0 is
    half the latency) and `hit_x` (the router's hit rate over the base's). NaN where the base
    did not run or a figure is missing."""
    ref = next((r for r in rows if r.router == base and not r.note), None)
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        if ref is None or r.note:
            out[r.router] = {"x_ttft_p50": math.nan, "x_ttft_p99": math.nan, "hit_x": math.nan}
            continue
        out[r.router] = {
            "x_ttft_p50": _over(ref.client_ttft_ms_p50, r.client_ttft_ms_p50),
            "x_ttft_p99": _over(ref.client_ttft_ms_p99, r.client_ttft_ms_p99),
            "hit_x": _over(r.hit_rate, ref.hit_rate),
        }
    return out


def slice_trace(lines: Sequence[str], n: int, rate_scale: float = 1.0) -> list[str]:
    """The first `n` non-blank rows of a Mooncake trace, each `timestamp` divided by
    `rate_scale` (2.0 replays twice as fast; `hash_ids` untouched). Raises `ValueError` on a
    row that is not a Mooncake row."""
    if n < 1:
        raise ValueError("the slice needs at least one request")
    if not rate_scale > 0:
        raise ValueError("rate_scale must be > 0")
    out: list[str] = []
    for lineno, line in enumerate(lines, 1):
        if len(out) >= n:
            break
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"line {lineno}: not JSON: {exc}") from None
        if not isinstance(row, dict) or not isinstance(row.get("hash_ids"), list):
            raise ValueError(f"line {lineno}: not a Mooncake row (no hash_ids list)")
        if "timestamp" not in row or "input_length" not in row:
            raise ValueError(f"line {lineno}: not a Mooncake row (no timestamp / input_length)")
        if rate_scale != 1.0:
            row["timestamp"] = round(float(row["timestamp"]) / rate_scale)
        out.append(json.dumps(row))
    return out


def sglang_router_argv(
    python: str | Path,
    *,
    host: str,
    port: int,
    worker_urls: Sequence[str],
    prometheus_port: int,
    policy: str = "cache_aware",
) -> list[str]:
    """sglang-router in front of `worker_urls` (checked against sglang-router 0.3.2's
    `python -m sglang_router.launch_router --help`)."""
    return [
        str(python), "-m", "sglang_router.launch_router",
        "--host", host, "--port", str(port),
        "--worker-urls", *worker_urls,
        "--policy", policy,
        "--prometheus-host", host, "--prometheus-port", str(prometheus_port),
        "--log-level", "warn",
    ]  # fmt: skip


def _ms(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:,.0f}"


def _ms2(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:,.1f}"


def _pct(x: float) -> str:
    return "-" if math.isnan(x) else f"{100.0 * x:.1f}%"


def _x(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.2f}"


def format_table(rows: Sequence[RouterRow], sim: Mapping[str, Mapping[str, float]]) -> str:
    """The report: one line per router, then the simulator's prediction."""
    rat = ratios(rows)
    head = (
        "router",
        "done",
        "err",
        "TTFT p50",
        "TTFT p99",
        "engine p50",
        "added p50",
        "own p50",
        "own p99",
        "hit%",
        "x p50",
        "x p99",
        "hit x",
    )
    body: list[tuple[str, ...]] = []
    for r in rows:
        q = rat[r.router]
        body.append(
            (
                r.router,
                str(r.requests - r.errors),
                str(r.errors),
                _ms(r.client_ttft_ms_p50),
                _ms(r.client_ttft_ms_p99),
                _ms(r.engine_ttft_ms_p50),
                _ms(r.added_ms_p50),
                _ms2(r.router_ms_p50),
                _ms2(r.router_ms_p99),
                _pct(r.hit_rate),
                _x(q["x_ttft_p50"]),
                _x(q["x_ttft_p99"]),
                _x(q["hit_x"]),
            )
        )
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    lines = [
        "  ".join(
            h.ljust(w) if i == 0 else h.rjust(w)
            for i, (h, w) in enumerate(zip(head, widths, strict=True))
        )
    ]
    for b in body:
        lines.append(
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(b, widths, strict=True))
            )
        )
    for r in rows:
        if r.note:
            lines.append(f"{r.router}: {r.note}")
    if sim:
        parts = [
            f"{name} {_pct(v['hit_rate'])} (bound {_pct(v['oracle_hit_rate'])})"
            for name, v in sim.items()
        ]
        lines.append("bench replay --mode sim, same slice and workers: hit " + ", ".join(parts))
    lines.append(
        "TTFT in ms (client: aiperf; engine: workers' histograms; own: agentctl's router's "
        "own share, per request); --help explains"
    )
    return "\n".join(lines)


# ---- I/O: processes -------------------------------------------------------------------------


def scrape(worker_urls: Mapping[str, str]) -> EngineSample:
    """The workers' counters and TTFT histogram, summed."""
    samples = []
    for url in worker_urls.values():
        r = httpx.get(url + "/metrics", timeout=10.0)
        r.raise_for_status()
        samples.append(parse_engine_metrics(r.text))
    return EngineSample.total(samples)


def _router_own(router_url: str) -> Histogram:
    """An agentctl router's own added-latency histogram."""
    r = httpx.get(router_url + "/metrics", timeout=10.0)
    r.raise_for_status()
    return parse_histogram(r.text, ROUTER_ADDED)


def _stop(p: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGTERM the process group started for `p`, then SIGKILL it after `grace_s`."""
    if p.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(p.pid, signal.SIGTERM)
    try:
        p.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def _spawn(
    argv: list[str], log: Path, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with open(log, "ab") as f:
        return subprocess.Popen(
            argv,
            stdout=f,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            start_new_session=True,  # its own group: `_stop` ends its children too
        )


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


def _wait_ready(url: str, p: subprocess.Popen[bytes], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if p.poll() is not None:
            return False
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(url + "/readiness", timeout=2.0).status_code == 200:
                return True
        time.sleep(0.2)
    return False


@dataclass
class LiveSetup:
    """What every router's run shares."""

    trace_file: Path
    workdir: Path
    aiperf: PeerEnv
    peers: dict[str, PeerEnv]
    workers: int
    seed: int
    timeout_s: float
    tokenizer: Path | None
    log: TextIO = field(default=sys.stderr)


def run_router(router: str, setup: LiveSetup) -> RouterRow:
    """Fresh workers, `router` in front of them, aiperf through it; everything stopped after."""
    rdir = setup.workdir / router
    rdir.mkdir(parents=True, exist_ok=True)
    peer = router in PEER_ROUTERS
    tok = ["--tokenizer", str(setup.tokenizer)] if setup.tokenizer else []
    spec = ClusterSpec(
        workers=setup.workers,
        policy="round-robin" if peer else router,
        policy_options={"seed": setup.seed} if router == "kv" else {},
        events=not peer,
        router=not peer,
        worker_args=tok,
        router_args=tok,
    )
    started = time.perf_counter()
    proc: subprocess.Popen[bytes] | None = None
    try:
        with LocalCluster(spec, workdir=rdir / "cluster") as cluster:
            try:
                if peer:
                    host = "127.0.0.1"
                    port = free_port(host)
                    argv = sglang_router_argv(
                        setup.peers[router].python,
                        host=host,
                        port=port,
                        worker_urls=list(cluster.worker_urls.values()),
                        prometheus_port=free_port(host),
                    )
                    proc = _spawn(argv, rdir / "router.log")
                    url = f"http://{host}:{port}"
                    if not _wait_ready(url, proc, 60.0):
                        return failed_row(
                            router, "did not become ready:\n" + _tail(rdir / "router.log")
                        )
                else:
                    url = cluster.router_url
                before = scrape(cluster.worker_urls)
                own_before = None if peer else _router_own(url)
                art = rdir / "aiperf"
                argv = aiperf_argv(
                    setup.aiperf.bin("aiperf"),
                    url=url,
                    model=MODEL,
                    input_file=setup.trace_file,
                    artifact_dir=art,
                    seed=setup.seed,
                )
                client = _spawn(argv, rdir / "aiperf.log", aiperf_env(setup.aiperf.hf_home))
                try:
                    rc = client.wait(timeout=setup.timeout_s)
                except subprocess.TimeoutExpired:
                    _stop(client)
                    return failed_row(router, f"aiperf ran past --timeout {setup.timeout_s:g}s")
                finally:
                    _stop(client)
                after = scrape(cluster.worker_urls)
                own = None if own_before is None else _router_own(url).minus(own_before)
            finally:
                if proc is not None:
                    _stop(proc)
    except ClusterError as exc:
        return failed_row(router, f"workers did not start: {exc}")
    wall = time.perf_counter() - started
    if rc != 0:
        return failed_row(
            router, f"aiperf exited {rc}:\n" + _tail(rdir / "aiperf.log"), wall_s=wall
        )
    try:
        summary = load_profile_export(art)
    except (OSError, ValueError) as exc:
        return failed_row(router, f"no aiperf export: {exc}", wall_s=wall)
    return make_row(router, summary, after.minus(before), wall_s=wall, own=own)


def sim_prediction(trace_file: Path, workers: int, seed: int) -> dict[str, dict[str, float]]:
    """`bench replay --mode sim` of the same slice: agentctl's routers' predicted hit rates."""
    from agentctl.serving.bench.sim import compare
    from agentctl.serving.bench.workload import load_workload

    wl = load_workload(trace_file, seed=seed)
    results = compare(wl, list(AGENTCTL_ROUTERS), workers=workers, seed=seed)
    return {
        r.policy: {
            "hit_rate": r.hit_rate,
            "oracle_hit_rate": r.oracle_hit_rate,
            "ttft_ms_p50": r.ttft_ms.p50,
        }
        for r in results
    }


# ---- the command ----------------------------------------------------------------------------

DESCRIPTION = __doc__.split("\n\n", 1)[1] if __doc__ else ""


def add_live_args(ap: argparse.ArgumentParser) -> None:
    """The options of `bench live`; the module docstring is the help's body."""
    ap.description = "Replay a Mooncake trace slice with aiperf through agentctl's routers " + (
        "and peer routers, fresh workers each, and compare.\n\n" + DESCRIPTION
    )
    ap.formatter_class = argparse.RawDescriptionHelpFormatter
    ap.epilog = (
        "Exit codes: 0 every router ran without errors; 1 a router's run failed or had errors;\n"
        "2 bad options, or a peer is not installed (the message says how) or cannot be.\n\n"
        "Example (the table in issue 14):\n"
        "  agentctl bench live --install-peers --peer sglang-router"
    )
    ap.add_argument(
        "--peer",
        action="append",
        dest="peers",
        choices=PEER_ROUTERS,
        default=None,
        help="a peer router to compare with, repeatable (default: none)",
    )
    ap.add_argument(
        "--router",
        action="append",
        dest="routers",
        choices=AGENTCTL_ROUTERS,
        default=None,
        help=f"an agentctl policy to run, repeatable (default: {', '.join(AGENTCTL_ROUTERS)})",
    )
    ap.add_argument(
        "--trace",
        default=str(DEFAULT_TRACE),
        metavar="FILE",
        help="Mooncake trace .jsonl (default: the conversation-trace slice in tests/fixtures)",
    )
    ap.add_argument(
        "--requests", type=int, default=300, metavar="N", help="replay the first N rows (300)"
    )
    ap.add_argument(
        "--workers", type=int, default=4, metavar="N", help="fresh sim workers per router (4)"
    )
    ap.add_argument(
        "--rate-scale",
        type=float,
        default=1.0,
        metavar="X",
        help="arrival speed-up: row i is sent at timestamp_i / X (default 1.0)",
    )
    ap.add_argument(
        "--peers-dir",
        default=None,
        metavar="DIR",
        help="where the peers' venvs live (default ~/.cache/agentctl/peers)",
    )
    ap.add_argument(
        "--install-peers",
        action="store_true",
        help="pip-install the missing peers (aiperf, and each --peer) from PyPI into "
        "--peers-dir first",
    )
    ap.add_argument(
        "--timeout",
        type=float,
        default=1200.0,
        metavar="S",
        help="longest one router's aiperf run may take, seconds (default 1200)",
    )
    ap.add_argument(
        "--keep",
        default=None,
        metavar="DIR",
        help="keep every run's logs and aiperf artifacts in DIR (default: a temporary "
        "directory, removed unless a run failed)",
    )
    ap.add_argument("--seed", type=int, default=0, metavar="N", help="seed (default 0)")
    ap.add_argument("--json", action="store_true", help="print one JSON envelope on stdout")


def _tokenizer_for_workers(aiperf: PeerEnv) -> Path | None:
    """aiperf's tokenizer when this Python can load a tokenizer.json (`tokenizers`), else
    None (the workers' built-in tokenizer)."""
    try:
        import tokenizers  # noqa: F401
    except ImportError:
        return None
    return aiperf.tokenizer_json if aiperf.tokenizer_json.is_file() else None


def _envs(names: Sequence[str], peers_dir: Path, install: bool, log: TextIO) -> dict[str, PeerEnv]:
    envs: dict[str, PeerEnv] = {}
    for name in names:
        spec = PEERS[name]
        try:
            envs[name] = find_env(spec, peers_dir)
        except PeerUnavailable:
            if not install:
                raise
            print(f"# installing {spec.requirement} into {peers_dir}", file=log, flush=True)
            envs[name] = install_env(spec, peers_dir, log=log)
    return envs


def _nan_free(obj: Any) -> Any:
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _nan_free(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_nan_free(v) for v in obj]
    return obj


def run_live_bench(args: argparse.Namespace, log: TextIO = sys.stderr) -> int:
    peers: list[str] = list(dict.fromkeys(args.peers or []))
    routers = list(dict.fromkeys(args.routers or AGENTCTL_ROUTERS)) + peers
    if args.workers < 1 or args.requests < 1:
        print("error: --workers and --requests must be at least 1", file=log)
        return 2
    peers_dir = Path(args.peers_dir).expanduser() if args.peers_dir else default_peers_dir()
    try:
        envs = _envs(["aiperf", *peers], peers_dir, args.install_peers, log)
    except PeerUnavailable as exc:
        print(f"error: {exc}", file=log)
        return 2
    try:
        with open(args.trace) as f:
            rows = slice_trace(f.readlines(), args.requests, args.rate_scale)
    except (OSError, ValueError) as exc:
        print(f"error: {args.trace}: {exc}", file=log)
        return 2
    keep = args.keep is not None
    workdir = Path(args.keep) if keep else Path(tempfile.mkdtemp(prefix="agentctl-bench-live-"))
    workdir.mkdir(parents=True, exist_ok=True)
    trace_file = workdir / "trace.jsonl"
    trace_file.write_text("\n".join(rows) + "\n")
    tokenizer = _tokenizer_for_workers(envs["aiperf"])
    setup = LiveSetup(
        trace_file=trace_file,
        workdir=workdir,
        aiperf=envs["aiperf"],
        peers=envs,
        workers=args.workers,
        seed=args.seed,
        timeout_s=args.timeout,
        tokenizer=tokenizer,
        log=log,
    )
    print(
        f"# {len(rows)} requests of {args.trace}, {args.workers} fresh workers per router, "
        f"tokenizer {'aiperf-shared ' + str(tokenizer) if tokenizer else 'built-in'}",
        file=log,
        flush=True,
    )
    sim = sim_prediction(trace_file, args.workers, args.seed)
    results: list[RouterRow] = []
    for router in routers:
        print(f"# {router}: starting", file=log, flush=True)
        row = run_router(router, setup)
        results.append(row)
        status = (
            "ok" if row.ok else (row.note.splitlines()[0] if row.note else f"{row.errors} errors")
        )
        print(f"# {router}: {status} in {row.wall_s:.0f}s", file=log, flush=True)
    ok = all(r.ok for r in results)
    if not ok and not keep:
        print(f"# logs and artifacts kept in {workdir}", file=log)
    elif not keep:
        shutil.rmtree(workdir, ignore_errors=True)
    versions = {name: env.spec.version for name, env in envs.items()}
    if args.json:
        rat = ratios(results)
        doc = {
            "ok": ok,
            "data": {
                "trace": str(args.trace),
                "requests": len(rows),
                "workers": args.workers,
                "rate_scale": args.rate_scale,
                "seed": args.seed,
                "tokenizer": "aiperf-shared" if tokenizer else "builtin",
                "peers": versions,
                "results": [{**asdict(r), **rat[r.router]} for r in results],
                "sim": sim,
            },
            "errors": [f"{r.router}: {r.note}" for r in results if r.note],
            "meta": {
                "tool": "agentctl",
                "version": _version(),
                "schema": SCHEMA,
                "collected_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
        }
        print(json.dumps(_nan_free(doc), sort_keys=True))
    else:
        peers_text = ", ".join(f"{k} {v}" for k, v in versions.items())
        print(
            f"{len(rows)} requests, {args.workers} fresh workers per router, "
            f"rate x{args.rate_scale:g}, seed {args.seed} ({peers_text})"
        )
        print(format_table(results, sim))
    return 0 if ok else 1


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("agentctl")
    except PackageNotFoundError:
        return "0.0.0+unknown"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m agentctl.serving bench live")
    add_live_args(ap)
    return run_live_bench(ap.parse_args(argv))
