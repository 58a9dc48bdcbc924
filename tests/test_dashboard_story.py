"""The demo's story in the dashboards, over a real SQLite store written the way `collect` and
the demo write it: replayed GPUs (frames of the shipped H100 recording, labelled) beside a
router that has no GPU, host metrics for every node, staleness judged against the collection
interval, and the stored trace replay (KV-aware against round-robin) on the serving page, in the
read model, the web pages, the API and the TUI."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from rich.text import Text
from textual.widgets import DataTable, Static

from agentctl.collectors.gpu import recorded
from agentctl.collectors.store import EventRecord, NodeRecord, Sample, Store
from agentctl.ctl.collect import gpu_samples, node_gpu_samples
from agentctl.ctl.demo_story import (
    CONCENTRATION_NOTE,
    TIMELINE_WINDOWS,
    TIMELINE_WORKERS,
    concentration,
    replay_document,
    replay_sets,
    store_replay,
)
from agentctl.dashboard.readmodel import ReadModel, ServingView, replay_comparison
from agentctl.dashboard.serialize import from_json, to_json
from agentctl.dashboard.tui import LocalSource, WatchApp, cells
from agentctl.dashboard.tui.fleet_screen import FleetScreen
from agentctl.dashboard.tui.serving_screen import ServingScreen
from agentctl.dashboard.web import create_app
from agentctl.dashboard.web.auth import hash_password
from agentctl.dashboard.web.testdata import live_server

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
BENCH = Path(__file__).parent / "fixtures" / "serving_replay" / "bench_replay_live_weka2.json"
SET = "h100-xid48"
INTERVAL = 5.0


def build(store: Store) -> None:
    store.upsert_nodes([
        NodeRecord("node01", "127.0.0.2", 22, ("routers",), ("router",)),
        NodeRecord("node02", "127.0.0.3", 22, ("workers",), ("worker",)),
        NodeRecord("node03", "127.0.0.4", 22, ("workers",), ("worker",)),
    ])  # fmt: skip
    for n in ("node01", "node02", "node03"):  # facts saw no GPU on these (loopback) nodes
        store.record_facts(n, {"gpus": {"gpus": []}}, {}, NOW - timedelta(minutes=3))
    sets = replay_sets(["node02", "node03"])
    samples: list[Sample] = []
    for k in range(6):  # six passes, INTERVAL apart, the newest 2 s ago
        ts = NOW - timedelta(seconds=2 + INTERVAL * (5 - k))
        for i, node in enumerate(("node01", "node02", "node03")):
            for key, value in (("host.cpu_util_pct", 20.0 + k + i), ("host.mem_used_pct", 40.0),
                               ("host.load1", 1.25), ("host.disk_used_pct", 24.0),
                               ("host.cpus", 2.0)):  # fmt: skip
                samples.append(Sample(node, key, ts, value))
            if k:
                samples.append(Sample(node, "collect.interval_s", ts, INTERVAL))
        for node, rset in sets.items():
            # the first pass covered the agent traffic: node02's workers were busy
            phase = "load" if k == 0 and node == "node02" else "idle"
            frame = recorded.frame(recorded.replay_set(rset), phase, k, ts)
            samples += gpu_samples(node, frame.gpus, ts, frame.source)
            samples += node_gpu_samples(node, frame.gpus, ts, frame.source)
            for w in (0, 1):
                served = 12.0 if (k == 0 and node == "node02" and w == 0) else 0.0
                for key, value in (("requests", served), ("time_scale", 0.05),
                                   ("kv_hit_rate", 0.8), ("ttft_p50_s", 0.002)):  # fmt: skip
                    samples.append(Sample(node, f"serving.{node}-w{w}.{key}", ts, value))
    store.insert_samples(samples)
    store.rollup(NOW)
    store.record_events([
        EventRecord("node03", "xid", "xid:0000:55:00:48", NOW - timedelta(days=100), "critical",
                    "NVRM: Xid (PCI:0000:55:00): 48, An uncorrectable double bit error",
                    code=48, subject="0000:55:00",
                    data={"replayed": SET, "source": f"replay:{SET}"}),
    ])  # fmt: skip
    store.save_diag("node03", "l1", verdict="fail", created_at=NOW - timedelta(seconds=30),
                    summary=f"fail: gpu_xid: Replayed GPU ({SET}): Xid 48 ...",
                    data={"replayed": recorded.describe(SET)})  # fmt: skip
    bench = json.loads(BENCH.read_text())["data"]
    store_replay(store, bench, trace=bench["trace"], fleet_time_scale=0.05)


@dataclass
class Story:
    store: Store
    model: ReadModel
    url: str


@pytest.fixture(scope="module")
def story(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Story]:
    store = Store.open(f"sqlite:///{tmp_path_factory.mktemp('story')}/story.db")
    build(store)
    store.put_user("viewer", hash_password("viewer-pass-1"), "viewer")
    model = ReadModel(store, clock=lambda: NOW)
    app = create_app(model, actions=None, session_secret=secrets.token_bytes(32))
    with live_server(app) as url:
        yield Story(store, model, url)
    store.close()


@contextmanager
def _viewer(url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=url) as c:
        login = c.get("/login").text
        token = login.split('name="csrf_token" value="')[1].split('"')[0]
        r = c.post("/login", data={"username": "viewer", "password": "viewer-pass-1",
                                   "csrf_token": token, "next": "/"})  # fmt: skip
        assert r.status_code == 303
        yield c


# -- read model ----------------------------------------------------------------------------------


def test_fleet_counts_replayed_gpus_apart_and_a_router_without_gpus_is_fresh(story: Story) -> None:
    view = story.model.fleet()
    rows = {r.name: r for r in view.nodes}
    assert [r.stale for r in view.nodes] == [False, False, False]
    router = rows["node01"]
    assert router.gpu_source is None and router.replayed_gpus == 0 and not router.gpu_stale
    assert router.cpu_pct == 25.0 and router.load1 == 1.25 and router.disk_pct == 24.0
    for name in ("node02", "node03"):
        assert rows[name].gpu_count == 0 and rows[name].replayed_gpus == 1
    assert (
        rows["node03"].gpu_source == f"replay:{SET}" and rows["node02"].gpu_source == "replay:h100"
    )
    assert rows["node02"].interval_s == INTERVAL and rows["node02"].stale_after_s == 30.0
    totals = view.totals()
    assert totals["gpus"] == 0 and totals["replayed_gpus"] == 2 and totals["stale"] == 0
    assert view.stale_banner() == ""


def test_staleness_follows_the_interval_and_the_banner_says_what_it_means(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path}/stale.db")
    build(store)
    later = ReadModel(store, clock=lambda: NOW + timedelta(seconds=40))
    view = later.fleet()
    assert all(r.stale for r in view.nodes)  # 42 s > 3 x 5 s (and the 30 s floor)
    assert "no sample for over 3 collection intervals (every 5 s)" in view.nodes[0].stale_reason
    banner = view.stale_banner()
    assert banner.startswith("3 of 3 nodes sent nothing for over 3 collection intervals (30 s)")
    assert "agentctl collect --interval" in banner
    # host samples still arriving, GPU samples stopped: only the GPU data is stale
    store.insert_samples([Sample("node02", "host.cpu_util_pct", NOW + timedelta(seconds=39),
                                 30.0)])  # fmt: skip
    rows = {r.name: r for r in later.fleet().nodes}
    assert not rows["node02"].stale and rows["node02"].gpu_stale
    assert "no GPU sample" in rows["node02"].stale_reason
    assert rows["node01"].stale and not rows["node01"].gpu_stale  # a router: no GPU to miss
    store.close()


def test_node_pages_show_host_charts_everywhere_and_label_replayed_gpus(story: Story) -> None:
    assert story.model.default_range("node01") == "15m"  # a minutes-old fleet: no 24 h dot
    router = story.model.node("node01", "")
    assert router is not None and router.replay is None and router.gpus == ()
    assert router.range_name == "15m"
    assert [c.series for c in router.charts] == [
        "host.cpu_util_pct", "host.mem_used_pct", "host.load1", "host.disk_used_pct",
    ]  # fmt: skip
    assert all(len(c.points) == 6 for c in router.charts)
    node = story.model.node("node03", "15m")
    assert node is not None and node.replay is not None
    assert node.replay.set == SET and "another machine" in node.replay.kernel_log_note
    assert {r["repo"] for r in node.replay.recordings} >= {"utkuozdemir/nvidia_gpu_exporter"}
    gpu_charts = [c for c in node.charts if c.series.startswith("node.gpu")]
    assert len(gpu_charts) == 4 and {c.source for c in gpu_charts} == {f"replay:{SET}"}
    assert {c.source for c in node.charts if c.series.startswith("host.")} == {None}
    (gpu,) = node.gpus
    assert gpu.source == f"replay:{SET}" and gpu.values["power_draw_w"] == 69.0  # idle, frame 5


def test_serving_view_compares_policies_and_explains_the_numbers(story: Story) -> None:
    bench = json.loads(BENCH.read_text())["data"]
    by = {p["policy"]: p for p in bench["policies"]}
    view = story.model.serving("1h")
    rp = view.replay
    assert rp is not None and rp.time_scale == 0.25 and rp.workers == 2
    assert [p.policy for p in rp.policies] == ["round-robin", "kv"]
    assert rp.ttft_p50_ratio == pytest.approx(
        by["round-robin"]["ttft_ms"]["p50"] / by["kv"]["ttft_ms"]["p50"])  # fmt: skip
    kv = next(p for p in rp.policies if p.policy == "kv")
    assert kv.requests == by["kv"]["completed"] and kv.hit_rate == by["kv"]["hit_rate"]
    assert sum(kv.prefill_share.values()) == pytest.approx(1.0)
    workers = {w.worker: w for w in view.workers}
    assert workers["node02-w0"].requests == 12.0 and workers["node03-w1"].requests == 0.0
    assert workers["node02-w0"].time_scale == 0.05
    assert len(view.worker_charts) == 4
    notes = " ".join(view.notes)
    assert "measured by each engine" in notes and "time_scale 0.05" in notes
    assert "2 ms here is 40 ms of modelled GPU time" in notes
    assert "measured by the client" in notes and "time_scale 0.25" in notes
    assert "12 of 12 requests in the last 1h went to node02-w0" in notes


def test_the_replay_timeline_reaches_the_view_per_policy_and_worker(story: Story) -> None:
    bench = json.loads(BENCH.read_text())["data"]
    by = {p["policy"]: p["timeline"] for p in bench["policies"]}
    rp = story.model.serving("1h").replay
    assert rp is not None and rp.has_timeline
    for p in rp.policies:
        tl, raw = p.timeline, by[p.policy]
        assert tl is not None and tl.basis == "first token"
        assert (tl.t0_s, tl.window_s) == (raw["t0_s"], raw["window_s"])
        assert list(tl.fleet.requests) == raw["fleet"]["requests"]
        assert sum(tl.fleet.requests) == p.requests
        assert tl.fleet.hit_rate == tuple(
            None if v is None else pytest.approx(v, abs=1e-4) for v in raw["fleet"]["hit_rate"]
        )
        assert set(tl.workers) == {"w0", "w1"}
    assert rp.timeline_workers() == ("w0", "w1")
    start, end = rp.timeline_span()
    ends = [t["t0_s"] + t["window_s"] * t["windows"] for t in by.values()]
    assert start == 0.0 and end == max(ends)
    lines = dict(rp.timeline_lines("hit_rate", "w1", 100))
    assert list(lines) == ["round-robin", "kv"]
    w = by["kv"]["window_s"]
    assert [x for x, _ in lines["kv"]][:2] == [w / 2, 1.5 * w]  # window middles, trace seconds
    idle = [i for i, n in enumerate(by["kv"]["workers"]["w1"]["requests"]) if n == 0]
    assert idle and all(lines["kv"][i][1] is None for i in idle)  # no requests: a gap, not 0 %
    view = story.model.serving("1h")
    assert from_json(ServingView, to_json(view)) == view  # the remote TUI gets the same lines


def test_a_replay_stored_without_a_timeline_still_shows() -> None:
    bench = json.loads(BENCH.read_text())["data"]
    for p in bench["policies"]:
        del p["timeline"]
    _, data = replay_document(bench, trace="t.jsonl.xz", fleet_time_scale=None)
    rp = replay_comparison(data, NOW, "old")
    assert [p.timeline for p in rp.policies] == [None, None] and not rp.has_timeline
    assert rp.timeline_workers() == () and rp.window_label() == "-"


def test_the_stored_timeline_is_bounded() -> None:
    wide = 3 * TIMELINE_WINDOWS
    line = {"requests": [1] * wide, "prompt_tokens": [10] * wide, "cached_tokens": [5] * wide,
            "hit_rate": [0.123456789] * wide, "ttft_ms_p50": [float("nan")] * wide,
            "ttft_ms_p90": ["x"] * wide, "extra_series": [1] * wide}  # fmt: skip
    workers = {f"w{i:02d}": line for i in range(TIMELINE_WORKERS + 4)}
    good = {"t0_s": 0, "window_s": 2.0, "windows": wide, "fleet": line, "workers": workers}
    bad = {"t0_s": 0, "window_s": -1, "fleet": line}
    bench = {"policies": [{"policy": "kv", "timeline": good},
                          {"policy": "round-robin", "timeline": bad}]}  # fmt: skip
    _, data = replay_document(bench, trace="t", fleet_time_scale=None)
    kv, rr = data["policies"]
    tl = kv["timeline"]
    assert tl["windows"] == TIMELINE_WINDOWS and len(tl["workers"]) == TIMELINE_WORKERS
    assert tl["workers_omitted"] == 4
    assert set(tl["fleet"]) == {"requests", "prompt_tokens", "cached_tokens", "hit_rate",
                                "ttft_ms_p50", "ttft_ms_p90"}  # fmt: skip
    assert all(len(v) == TIMELINE_WINDOWS for v in tl["fleet"].values())
    assert tl["fleet"]["hit_rate"][0] == 0.1235 and tl["fleet"]["requests"][0] == 1
    assert set(tl["fleet"]["ttft_ms_p50"]) == {None} and set(tl["fleet"]["ttft_ms_p90"]) == {None}
    assert rr["timeline"] is None  # malformed: dropped, never guessed
    assert len(json.dumps(data, allow_nan=False)) < 200_000


def test_the_demo_helpers_store_and_explain_the_same_story() -> None:
    bench = json.loads(BENCH.read_text())["data"]
    title, data = replay_document(bench, trace="/x/weka_cc_sample6.jsonl.xz", fleet_time_scale=0.05)
    assert title == "Claude Code traces replayed live: kv against round-robin"
    assert data["trace"] == "weka_cc_sample6.jsonl.xz" and data["time_scale"] == 0.25
    assert all("measured" not in p and "wall_s" not in p for p in data["policies"])
    assert replay_sets(["a", "b", "c"]) == {"a": "h100", "b": "h100", "c": "h100-xid48"}
    assert concentration({"w0": 12, "w1": 0, "w2": 0, "w3": 0}) == ("w0", 12, 12)
    assert concentration({"w0": 3, "w1": 3}) is None and concentration({"w0": 2}) is None
    text = CONCENTRATION_NOTE.format(top=12, total=12, worker="node02-w0")
    assert text.startswith("12 of 12 agent requests went to node02-w0")


# -- web pages and API ------------------------------------------------------------------------


def test_pages_label_replayed_gpus_and_show_host_metrics(story: Story) -> None:
    with _viewer(story.url) as c:
        fleet = c.get("/").text
        assert "2 replayed GPUs" in fleet and "+1 replayed" in fleet
        assert 'class="banner"' not in fleet  # nobody is stale
        router_row = fleet.split('data-node="node01"')[1].split("</tr>")[0]
        assert "stale" not in router_row and "25 %" in router_row and "load 1.25 on 2" in router_row
        node = c.get("/nodes/node03").text
        assert '<a href="?range=15m" class="active"' in node
        assert 'data-replayed="h100-xid48"' in node and "utkuozdemir/nvidia_gpu_exporter" in node
        assert "not measurements of this machine" in node
        xid_row = node.split('data-event="xid:48"')[1].split("</tr>")[0]
        assert 'class="badge replayed"' in xid_row
        assert node.count('class="badge replayed"') >= 6  # count, 4 charts, GPU row, the Xid
        router = c.get("/nodes/node01", params={"range": "1h"}).text
        assert 'data-series="host.cpu_util_pct"' in router
        assert 'data-series="node.gpu_util_avg"' not in router  # no GPU charts on a router
        assert "replay-banner" not in router
        serving = c.get("/serving").text
        assert 'data-policy="kv"' in serving and 'data-policy="round-robin"' in serving
        assert "x lower</b> than round-robin" in serving
        assert "measured by the client" in serving and "measured by each engine" in serving
        assert "went to node02-w0" in serving
        assert serving.count('class="chart-box" data-series="serving.') == 8
        over = serving.split("<h3>Over the run</h3>")[1].split("</section>")[0]
        assert "trace time in seconds from the replay's start" in over
        assert "divided by its time_scale 0.25" in over and "windows of 5 s" in over
        assert "TTFT here is the client's" in over and "not the fleet's" in over
        figures = over.split('<figure class="chart-box" data-timeline=')[1:]
        assert len(figures) == 6  # hit rate and TTFT p50: the fleet, then each of w0 and w1
        assert sum('data-worker="w1"' in f for f in figures) == 2
        for fig in figures:  # kv against round-robin on the same axes, both lines labelled
            assert fig.count('data-series="kv"') == fig.count('data-series="round-robin"') == 1
            assert ">kv</text>" in fig and ">round-robin</text>" in fig
            assert "<polyline" in fig.split('data-series="kv"')[1].split("</g>")[0]
            assert ">50 s</text>" in fig  # one x axis: the longer run's end
        api = c.get("/api/v1/serving", params={"range": "6h"}).json()
        assert api["data"]["range_name"] == "6h" and api["data"]["replay"]["policies"]
        assert api["data"]["replay"]["policies"][1]["timeline"]["workers"]["w1"]["requests"]
        fleet_api = c.get("/api/v1/fleet").json()["data"]
        assert fleet_api["totals"]["replayed_gpus"] == 2
        assert {n["name"]: n["gpu_source"] for n in fleet_api["nodes"]}["node03"] == f"replay:{SET}"


def test_a_stale_fleet_page_says_why(story: Story) -> None:
    later = ReadModel(story.store, clock=lambda: NOW + timedelta(minutes=5))
    app = create_app(later, actions=None, session_secret=secrets.token_bytes(32))
    with live_server(app) as url, _viewer(url) as c:
        page = c.get("/").text
    assert "nodes sent nothing for over 3 collection intervals" in page
    assert "15 min" not in page


# -- TUI --------------------------------------------------------------------------------------


def test_tui_marks_replayed_gpus_and_shows_the_replay(story: Story) -> None:
    app = WatchApp(LocalSource(story.model), clock=lambda: NOW, refresh_s=3600.0)

    async def main() -> None:
        async with app.run_test(size=(120, 36)) as pilot:
            await pilot.app.workers.wait_for_complete()
            await pilot.pause()
            assert isinstance(app.screen, FleetScreen)
            table: DataTable[Text] = app.screen.query_one("#fleet", DataTable)
            gpus = table.get_cell("node03", "gpus")
            assert gpus.plain == "0+1" + cells.REPLAY_MARK
            assert table.get_cell("node03", "util").plain.endswith(cells.REPLAY_MARK)
            assert table.get_cell("node01", "util").plain == cells.NONE
            assert table.get_cell("node01", "cpu").plain == "25%"
            await pilot.press("v")
            await pilot.app.workers.wait_for_complete()
            await pilot.pause()
            assert isinstance(app.screen, ServingScreen)
            replay: DataTable[Text] = app.screen.query_one("#replay", DataTable)
            assert [str(r.key.value) for r in replay.ordered_rows] == ["round-robin", "kv"]
            for policy in ("round-robin", "kv"):  # one line each, its hit rate over the run
                spark = replay.get_cell(policy, "hit rate over the run")
                assert set(spark.plain.strip()) <= set(cells.BLOCKS)
                assert len(spark.plain.strip()) == 10  # the recorded replay's 10 windows
            notes = str(app.screen.query_one("#notes", Static).render())
            assert "x lower than round-robin" in notes and "measured by the client" in notes

    asyncio.run(main())
