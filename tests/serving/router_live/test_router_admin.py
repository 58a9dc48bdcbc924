"""The router's admin API behind a token, `serving admin` from the node, drains that persist."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from agentctl.serving.cluster import ClusterSpec, LocalCluster

pytestmark = pytest.mark.timeout(120)
TOKEN = "t0k3n-for-tests-0123456789abcdef"


def _admin(config: Path, *args: str) -> tuple[int, dict[str, object]]:
    out = subprocess.run(
        [sys.executable, "-m", "agentctl.serving", "admin", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return out.returncode, json.loads(out.stdout)


def test_admin_token_drain_persists_across_router_restart(tmp_path: Path) -> None:
    token = tmp_path / "router.token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    state = tmp_path / "router-state.json"
    # the config file gives port, token and state file; the cluster adds the workers by flag
    cfg_path = tmp_path / "router.yaml"
    spec = ClusterSpec(workers=2, time_scale=0.01, router_args=["--config", str(cfg_path)])
    cluster = LocalCluster(spec, workdir=tmp_path / "cluster")
    doc = {"router": {"admin_token_file": str(token), "state_file": str(state)}}
    cfg_path.write_text(yaml.safe_dump(doc))
    with cluster:
        url = cluster.router_url
        assert httpx.get(url + "/admin/workers").status_code == 401
        bad = httpx.get(url + "/admin/workers", headers={"Authorization": "Bearer nope"})
        assert bad.status_code == 401 and bad.json()["error"]["type"] == "authentication_error"
        # `serving admin` reads the URL from --url and the token from the config file
        port = url.rsplit(":", 1)[1]
        doc["router"]["port"] = int(port)
        cfg_path.write_text(yaml.safe_dump(doc))
        code, out = _admin(cfg_path, "drain", "w0")
        assert code == 0 and out["changed"] == ["w0"]
        code, out = _admin(cfg_path, "drain", "w0")
        assert code == 0 and out["changed"] == []  # idempotent
        assert json.loads(state.read_text()) == {"draining": ["w0"]}
        code, out = _admin(cfg_path, "wait-idle", "w0", "--timeout", "5")
        assert code == 0
        code, out = _admin(cfg_path, "drain", "nope")
        assert code == 1 and "unknown worker" in str(out["error"])
        # traffic avoids the drained worker
        body = {"prompt": "hello there", "max_tokens": 2}
        for _ in range(4):
            r = httpx.post(url + "/v1/completions", json=body, timeout=30)
            assert r.status_code == 200 and r.headers["x-agentctl-worker"] == "w1"
        # the router restarts: the drain is still there
        assert cluster.router is not None and cluster.router.popen is not None
        cluster.router.popen.terminate()
        cluster.router.popen.wait(timeout=15)
        restarted = cluster._start_healthy(cluster._router, 30.0)
        cluster.router = restarted
        doc["router"]["port"] = int(restarted.url.rsplit(":", 1)[1])
        cfg_path.write_text(yaml.safe_dump(doc))
        code, out = _admin(cfg_path, "workers")
        assert code == 0
        by = {w["id"]: w for w in out["workers"]}  # type: ignore[attr-defined]
        assert by["w0"]["draining"] is True and by["w1"]["draining"] is False
        code, out = _admin(cfg_path, "undrain", "w0")
        assert code == 0 and out["changed"] == ["w0"]
        assert json.loads(state.read_text()) == {"draining": []}


def test_unreadable_token_file_stops_the_router_with_a_clear_error(tmp_path: Path) -> None:
    cfg = tmp_path / "router.yaml"
    cfg.write_text(yaml.safe_dump({"router": {"admin_token_file": str(tmp_path / "missing")}}))
    out = subprocess.run(
        [sys.executable, "-m", "agentctl.serving", "router", "--config", str(cfg), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2
    assert "admin_token_file" in out.stderr and "missing" in out.stderr
