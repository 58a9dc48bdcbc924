"""`python -m agentctl.serving admin ...`: the router's admin API from the router's own node.

The control side runs this over SSH on the router node, so the admin token (a file only root
and the service read) never leaves the node and the admin API can stay on loopback. Every
subcommand prints one JSON object; exit 0 on success, 1 on an error (router unreachable, unknown
worker, refused token), 2 on bad usage, 3 when `wait-idle` times out.

    admin --config router.yaml workers
    admin --config router.yaml drain w0 w1       # no new requests; in-flight ones finish
    admin --config router.yaml wait-idle w0 w1 --timeout 120
    admin --config router.yaml undrain w0 w1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported when a command runs: `--help` and the parser stay light
    import httpx

__all__ = ["add_admin_args", "run_admin"]


def add_admin_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="the router's config (URL and token from it)")
    p.add_argument("--url", help="router base URL (default: from --config, else :8080)")
    p.add_argument("--token-file", help="admin token file (default: from --config)")
    sub = p.add_subparsers(dest="admin_command", required=True, metavar="ACTION")
    sub.add_parser("workers", help="list the workers and their state")
    for name, help_text in (
        ("drain", "stop routing new requests to these workers"),
        ("undrain", "route to these workers again"),
        ("wait-idle", "wait until these workers have no request in flight"),
    ):
        sp = sub.add_parser(name, help=help_text)
        sp.add_argument("workers", nargs="+", metavar="WORKER")
        if name == "wait-idle":
            sp.add_argument("--timeout", type=float, default=120.0)


def _target(args: argparse.Namespace) -> tuple[str, str | None]:
    url, token_file = args.url, args.token_file
    if args.config:
        from agentctl.serving.config import load_router_config

        cfg = load_router_config(args.config)
        host = "127.0.0.1" if cfg.host in ("0.0.0.0", "::", "") else cfg.host  # noqa: S104
        url = url or f"http://{host}:{cfg.port}"
        token_file = token_file or cfg.admin_token_file
    return url or "http://127.0.0.1:8080", token_file


def _emit(doc: dict[str, Any]) -> None:
    print(json.dumps(doc, sort_keys=True))


def run_admin(args: argparse.Namespace) -> int:
    import httpx

    from agentctl.serving.config import ConfigError

    try:
        url, token_file = _target(args)
        headers = {}
        if token_file:
            headers["Authorization"] = "Bearer " + Path(token_file).read_text().strip()
    except (ConfigError, OSError) as exc:
        _emit({"ok": False, "error": str(exc)})
        return 2
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=10.0) as client:
            return _run(client, args)
    except httpx.HTTPError as exc:
        _emit({"ok": False, "error": f"router at {url}: {type(exc).__name__}: {exc}"})
        return 1


def _workers(client: httpx.Client) -> dict[str, dict[str, Any]]:
    r = client.get("/admin/workers")
    r.raise_for_status()
    return {w["id"]: w for w in r.json()["workers"]}


def _run(client: httpx.Client, args: argparse.Namespace) -> int:
    import httpx

    cmd = args.admin_command
    try:
        known = _workers(client)
    except httpx.HTTPStatusError as exc:
        _emit({"ok": False, "error": f"HTTP {exc.response.status_code}: {exc.response.text}"})
        return 1
    if cmd == "workers":
        _emit({"ok": True, "workers": list(known.values())})
        return 0
    unknown = [w for w in args.workers if w not in known]
    if unknown:
        _emit({"ok": False, "error": f"unknown worker(s): {', '.join(unknown)}"})
        return 1
    if cmd in ("drain", "undrain"):
        want = cmd == "drain"
        changed = []
        for w in args.workers:
            if known[w]["draining"] != want:
                client.post(f"/admin/workers/{w}/{cmd}").raise_for_status()
                changed.append(w)
        _emit({"ok": True, "action": cmd, "changed": changed, "workers": args.workers})
        return 0
    deadline = time.monotonic() + args.timeout
    while True:
        known = _workers(client)
        busy = {w: known[w]["in_flight"] for w in args.workers if known[w]["in_flight"]}
        if not busy:
            _emit({"ok": True, "action": "wait-idle", "workers": args.workers})
            return 0
        if time.monotonic() >= deadline:
            _emit({"ok": False, "error": "still busy", "in_flight": busy})
            return 3
        time.sleep(0.25)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="agentctl-serving admin", description=__doc__)
    add_admin_args(p)
    return run_admin(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
