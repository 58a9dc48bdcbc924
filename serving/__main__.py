"""`python -m agentctl.serving <command>`: run a piece of the serving stack on a node by itself.

Commands live in `COMMANDS` (name -> help, add-arguments, run); each run function imports its
server lazily, so `--help` stays fast and one command's dependencies never load for another.
The `router` command is registered there too (see the marked place below).

    python -m agentctl.serving worker --config worker.yaml
    python -m agentctl.serving worker --port 8001 --time-scale 0.01 \\
        --events tcp://127.0.0.1:5557 --replay tcp://127.0.0.1:5558
    python -m agentctl.serving router --port 8080 --policy kv \\
        --worker http://127.0.0.1:8001,events=tcp://127.0.0.1:5557,replay=tcp://127.0.0.1:5558
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

__all__ = ["COMMANDS", "main"]

AddArgs = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]


# ---- worker ---------------------------------------------------------------------------------


def _add_worker_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML/JSON worker config (flags override it)")
    p.add_argument("--host", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default 8000)")
    p.add_argument("--model", help="served model name (default agentctl-sim)")
    p.add_argument("--tokenizer", metavar="PATH", help="tokenizer.json (default: built-in)")
    eng = p.add_argument_group("engine")
    eng.add_argument("--block-size", type=int, help="tokens per KV block (default 64)")
    eng.add_argument("--capacity-blocks", type=int, help="KV cache size in blocks (16384)")
    eng.add_argument("--max-num-batched-tokens", type=int, help="token budget per step (8192)")
    eng.add_argument("--max-num-seqs", type=int, help="max running sequences (256)")
    eng.add_argument(
        "--time-scale", type=float, help="multiplier on every step time (1.0; tests: 0.01)"
    )
    ev = p.add_argument_group("KV events (vLLM wire format)")
    ev.add_argument("--events", metavar="ENDPOINT", help="ZMQ PUB endpoint to bind")
    ev.add_argument("--replay", metavar="ENDPOINT", help="ZMQ ROUTER replay endpoint to bind")
    ev.add_argument("--events-topic", help="ZMQ topic (default empty)")
    ev.add_argument(
        "--events-no-instance-id",
        action="store_const",
        const=False,
        dest="events_instance_id",
        help="send vLLM's exact 3-element batches, without the worker's boot nonce",
    )
    srv = p.add_argument_group("server")
    srv.add_argument("--max-body-bytes", type=int, help="request body limit (16 MiB)")
    srv.add_argument("--default-max-tokens", type=int, help="max_tokens when unset (256)")
    srv.add_argument("--max-tokens-cap", type=int, help="refuse requests for more tokens (32768)")
    srv.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"])
    srv.add_argument("--access-log", action="store_true", help="log every request")
    _add_limit_args(srv, per_ip_default=8192)


def _add_limit_args(p: argparse._ActionsContainer, *, per_ip_default: int) -> None:
    p.add_argument("--header-timeout", type=float, help="seconds to send a request's headers (10)")
    p.add_argument(
        "--keepalive-timeout", type=float, help="seconds an idle connection stays open (30)"
    )
    p.add_argument(
        "--max-connections-per-ip",
        type=int,
        help=f"connections one address may hold, 0: no cap ({per_ip_default})",
    )


def _limit_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "header_timeout_s": args.header_timeout,
        "keepalive_timeout_s": args.keepalive_timeout,
        "max_connections_per_ip": args.max_connections_per_ip,
    }


def _run_worker(args: argparse.Namespace) -> int:
    from agentctl.serving.config import ConfigError, load_worker_config
    from agentctl.serving.tokenizer import TokenizerUnavailable

    overrides: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "model": args.model,
        "tokenizer": args.tokenizer,
        "engine.block_size": args.block_size,
        "engine.capacity_blocks": args.capacity_blocks,
        "engine.max_num_batched_tokens": args.max_num_batched_tokens,
        "engine.max_num_seqs": args.max_num_seqs,
        "cost.time_scale": args.time_scale,
        "events.endpoint": args.events,
        "events.replay_endpoint": args.replay,
        "events.topic": args.events_topic,
        "events.send_instance_id": args.events_instance_id,
        "max_body_bytes": args.max_body_bytes,
        "default_max_tokens": args.default_max_tokens,
        "max_tokens_cap": args.max_tokens_cap,
        "log_level": args.log_level,
        **_limit_overrides(args),
    }
    try:
        cfg = load_worker_config(args.config).with_overrides(overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if cfg.events.replay_endpoint and not cfg.events.endpoint:
        print("error: --replay needs --events", file=sys.stderr)
        return 2

    from agentctl.serving.server import serve
    from agentctl.serving.worker.app import create_app

    try:
        app = create_app(cfg)
    except TokenizerUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    serve(app, cfg, access_log=bool(args.access_log))
    return 0


# ---- router ---------------------------------------------------------------------------------


def _add_router_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML/JSON router config (flags override it)")
    p.add_argument("--host", help="listen address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="listen port (default 8080)")
    p.add_argument(
        "--worker",
        action="append",
        default=[],
        metavar="URL[,events=EP,replay=EP,id=NAME,capacity=N,budget=N,topic=T]",
        help="a worker (repeatable; added to the config file's workers)",
    )
    p.add_argument("--policy", help="routing policy (default kv)")
    p.add_argument(
        "--policy-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="policy keyword option, VALUE parsed as JSON when possible (repeatable)",
    )
    p.add_argument("--block-size", type=int, help="the workers' KV block size (default 64)")
    p.add_argument("--tokenizer", metavar="PATH", help="the workers' tokenizer.json")
    p.add_argument("--health-interval", type=float, help="seconds between health polls (1.0)")
    p.add_argument(
        "--time-scale", type=float, help="the workers' cost-model time scale (1.0), for kv"
    )
    p.add_argument("--max-body-bytes", type=int, help="request body limit (16 MiB)")
    p.add_argument("--default-max-tokens", type=int, help="max_tokens when unset (256)")
    p.add_argument("--connect-timeout", type=float, help="seconds to connect to a worker (10.0)")
    p.add_argument(
        "--max-in-flight", type=int, help="requests in flight past which new ones are shed (4096)"
    )
    p.add_argument("--max-tokens-cap", type=int, help="refuse requests for more tokens (32768)")
    p.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"])
    p.add_argument("--access-log", action="store_true", help="log every request")
    _add_limit_args(p, per_ip_default=4096)


def _parse_worker_flag(value: str) -> dict[str, Any]:
    url, *opts = [part.strip() for part in value.split(",")]
    if not url:
        raise ValueError(f"--worker {value!r}: missing URL")
    keys = {
        "events": "events",
        "replay": "replay",
        "id": "id",
        "capacity": "capacity_blocks",
        "capacity_blocks": "capacity_blocks",
        "budget": "token_budget",
        "topic": "topic",
    }
    out: dict[str, Any] = {"url": url}
    for opt in opts:
        key, sep, val = opt.partition("=")
        if not sep or key not in keys:
            raise ValueError(f"--worker {value!r}: bad option {opt!r} (known: {', '.join(keys)})")
        out[keys[key]] = val
    return out


def _parse_option(value: str) -> tuple[str, Any]:
    import json

    key, sep, val = value.partition("=")
    if not sep or not key:
        raise ValueError(f"--policy-option {value!r}: expected KEY=VALUE")
    try:
        return key, json.loads(val)
    except ValueError:
        return key, val


def _run_router(args: argparse.Namespace) -> int:
    from agentctl.serving.config import ConfigError, load_router_config
    from agentctl.serving.tokenizer import TokenizerUnavailable

    try:
        cfg = load_router_config(args.config)
        workers = [w.model_dump() for w in cfg.workers]
        workers += [_parse_worker_flag(v) for v in args.worker]
        options = dict(cfg.policy_options)
        options.update(_parse_option(v) for v in args.policy_option)
        cfg = cfg.with_overrides(
            {
                "host": args.host,
                "port": args.port,
                "policy": args.policy,
                "policy_options": options,
                "block_size": args.block_size,
                "tokenizer": args.tokenizer,
                "health_interval_s": args.health_interval,
                "time_scale": args.time_scale,
                "max_body_bytes": args.max_body_bytes,
                "default_max_tokens": args.default_max_tokens,
                "connect_timeout_s": args.connect_timeout,
                "max_in_flight": args.max_in_flight,
                "max_tokens_cap": args.max_tokens_cap,
                "log_level": args.log_level,
                "workers": workers,
                **_limit_overrides(args),
            }
        )
    except (ConfigError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    from agentctl.serving.router.app import create_app
    from agentctl.serving.server import serve

    try:
        app = create_app(cfg)
    except (TokenizerUnavailable, ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    serve(app, cfg, access_log=bool(args.access_log))
    return 0


# ---- bench ----------------------------------------------------------------------------------


def _add_bench_args(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="bench_command", metavar="BENCH", required=True)
    replay = sub.add_parser(
        "replay", help="replay a trace through every routing policy, vs round-robin"
    )
    from agentctl.serving.bench.cli import add_replay_args

    add_replay_args(replay)
    soak = sub.add_parser(
        "soak", help="the stack under load, faults and bad input (on demand; exit 1: bar missed)"
    )
    from agentctl.serving.bench.soak_cli import add_soak_args

    add_soak_args(soak)
    live = sub.add_parser(
        "live", help="aiperf through agentctl's routers and peer routers (sglang-router)"
    )
    from agentctl.serving.bench.peers import add_live_args

    add_live_args(live)


def _run_bench(args: argparse.Namespace) -> int:
    if args.bench_command == "soak":
        from agentctl.serving.bench.soak_cli import run_soak

        return run_soak(args)
    if args.bench_command == "live":
        from agentctl.serving.bench.peers import run_live_bench

        return run_live_bench(args)
    from agentctl.serving.bench.cli import run_replay

    return run_replay(args)


# ---- supervise ------------------------------------------------------------------------------


def _add_supervise_args(p: argparse.ArgumentParser) -> None:
    from agentctl.serving.supervisor import add_arguments

    add_arguments(p)


def _run_supervise(args: argparse.Namespace) -> int:
    from agentctl.serving.supervisor import run_cli

    return run_cli(args)


# ---- admin ----------------------------------------------------------------------------------


def _add_admin_args(p: argparse.ArgumentParser) -> None:
    from agentctl.serving.admin import add_admin_args

    add_admin_args(p)


def _run_admin(args: argparse.Namespace) -> int:
    from agentctl.serving.admin import run_admin

    return run_admin(args)


# ---- registry -------------------------------------------------------------------------------

COMMANDS: dict[str, tuple[str, AddArgs, Run]] = {
    "worker": (
        "run a simulated engine worker (OpenAI API, KV events)",
        _add_worker_args,
        _run_worker,
    ),
    "router": (
        "run the KV-aware router in front of workers (OpenAI API)",
        _add_router_args,
        _run_router,
    ),
    "bench": (
        "benchmarks: `bench replay TRACE` (every policy), `bench live` (aiperf, peer routers), "
        "`bench soak` (load and faults)",
        _add_bench_args,
        _run_bench,
    ),
    "admin": (
        "the router's admin API from its node: workers, drain, undrain, wait-idle (JSON out)",
        _add_admin_args,
        _run_admin,
    ),
    "supervise": (
        "run services without systemd: `supervise start|stop|status|restart` (JSON out)",
        _add_supervise_args,
        _run_supervise,
    ),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `only`, just that command's arguments are built (each command's
    module is imported to build them, and `supervise` runs over SSH on every deploy step:
    it should not pay for the benchmark's imports)."""
    parser = argparse.ArgumentParser(
        prog="python -m agentctl.serving", description="agentctl serving stack"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (help_text, add_args, _) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only is None or name == only:
            add_args(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    only = args_list[0] if args_list and args_list[0] in COMMANDS else None
    args = build_parser(only).parse_args(args_list)
    _, _, run = COMMANDS[args.command]
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
