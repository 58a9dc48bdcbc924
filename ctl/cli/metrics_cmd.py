"""`agentctl metrics serve|show`: the fleet's latest stored values as a Prometheus endpoint,
with dcgm-exporter names for GPU fields and vLLM names for worker gauges (see
agentctl.collectors.exporter for the mapping and the series naming).

`serve` answers `GET /metrics` from the store on every scrape (no caching, no background
work) and `GET /health` with `ok`; Ctrl-C or SIGTERM stops it with exit code 0.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Annotated, Any

import typer

from agentctl.ctl.cli.main import state
from agentctl.ctl.envelope import utc_now_iso
from agentctl.ctl.errors import AgentctlError

if TYPE_CHECKING:  # the exporter and the store (SQLAlchemy) load when a command runs
    from agentctl.collectors.exporter import GpuInfo
    from agentctl.collectors.store import Store
    from agentctl.collectors.store.timeseries import LatestValue

app = typer.Typer(
    help="The fleet's latest telemetry as Prometheus metrics (dcgm-exporter and vLLM names).",
    no_args_is_help=True,
)

DEFAULT_PORT = 9400  # dcgm-exporter's
#: the exporter's DEFAULT_MAX_AGE in seconds, here for `--help`, which must not import the
#: exporter (tests/cli/test_startup.py keeps the two equal)
DEFAULT_MAX_AGE_S = 300.0

MaxAge = Annotated[
    float,
    typer.Option(
        "--max-age", help="Seconds after which a value is stale and not exported.", min=0.001
    ),
]


def snapshot(store: Store, max_age: timedelta) -> tuple[datetime, list[LatestValue], str]:
    """(now, the fresh latest values, their exposition) read from the store once."""
    from agentctl.collectors.exporter import gpu_info_from_facts, render_exposition

    now = datetime.now(UTC)
    latest = store.fleet_now(("gpu", "serving."), max_age=max_age, now=now)
    info: dict[str, dict[int, GpuInfo]] = {}
    for node in sorted({lv.node for lv in latest if lv.series.startswith("gpu")}):
        snap = store.latest_facts(node)
        info[node] = gpu_info_from_facts(snap.facts if snap is not None else None)
    return now, latest, render_exposition(latest, now, max_age=max_age, gpu_info=info)


@app.command("show")
def show(max_age: MaxAge = DEFAULT_MAX_AGE_S) -> None:
    """Print the current exposition once (with --json: the latest values and the text)."""
    st = state()
    now, latest, text = snapshot(st.store(), timedelta(seconds=max_age))
    values: list[dict[str, Any]] = []
    for lv in latest:
        d = asdict(lv)
        d["ts"] = utc_now_iso(lv.ts)
        values.append(d)
    st.output.emit(
        {"at": utc_now_iso(now), "max_age_s": max_age, "values": values, "exposition": text},
        schema="agentctl.metrics/1",
    )
    if not st.output.json_mode:
        sys.stdout.write(text)
        sys.stdout.flush()
    if not latest:
        from agentctl.ctl.cli.hints import empty_store

        empty_store(st, f"samples newer than {max_age:g}s",
                    "`agentctl -i INVENTORY collect` gathers them")  # fmt: skip


def make_server(store: Store, host: str, port: int, max_age: timedelta) -> ThreadingHTTPServer:
    """A threaded HTTP server for /metrics and /health (not started)."""
    from agentctl.collectors.exporter import CONTENT_TYPE

    lock = threading.Lock()  # one store query at a time: scrapes are rare and cheap

    class Handler(BaseHTTPRequestHandler):
        server_version = "agentctl-metrics"

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                try:
                    with lock:
                        _, _, text = snapshot(store, max_age)
                except AgentctlError as exc:
                    self._reply(503, f"store unavailable: {exc}\n", "text/plain; charset=utf-8")
                    return
                self._reply(200, text, CONTENT_TYPE)
            elif path in ("/health", "/healthz"):
                self._reply(200, "ok\n", "text/plain; charset=utf-8")
            else:
                self._reply(404, "not found: try /metrics\n", "text/plain; charset=utf-8")

        def _reply(self, code: int, body: str, content_type: str) -> None:
            data = body.encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return  # quiet: a scrape every few seconds would flood stderr

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option("--port", help="Port (0: any free one; 9400 is dcgm-exporter's).", min=0),
    ] = DEFAULT_PORT,
    max_age: MaxAge = DEFAULT_MAX_AGE_S,
) -> None:
    """Serve GET /metrics (Prometheus text) and /health until Ctrl-C."""
    st = state()
    store = st.store()
    try:
        server = make_server(store, host, port, timedelta(seconds=max_age))
    except OSError as exc:
        raise AgentctlError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            hint="pick another --port, or stop what holds this one",
        ) from exc
    bound_host, bound_port = server.server_address[:2]
    shown = f"[{bound_host!s}]" if ":" in str(bound_host) else str(bound_host)
    print(f"serving metrics on http://{shown}:{bound_port}/metrics", file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (main turns it into KeyboardInterrupt)
        print("stopped", file=sys.stderr, flush=True)
    finally:
        server.server_close()
