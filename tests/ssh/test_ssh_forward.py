"""`SSHConnector.open_tcp`: a `direct-tcpip` forward through a real sshd to a real worker's
loopback-only `/metrics`, scraped with the collectors' HTTP GET (no mocks). The fleet nodes run
on this machine, so the worker's 127.0.0.1 port is what the node sees as its own loopback."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from agentctl.collectors.serving import ScrapeState, http_get_over, metrics_fetcher, parse
from agentctl.ctl.connect import Connections
from agentctl.ctl.errors import RemoteError
from agentctl.ctl.fleet import LocalFleet, find_sshd
from agentctl.ctl.inventory import load_inventory
from agentctl.ctl.settings import load_settings
from agentctl.ctl.ssh.connector import SSHConnector
from agentctl.serving.cluster import ClusterSpec, LocalCluster, free_port

pytestmark = pytest.mark.timeout(120)


@dataclass
class Nodes:
    fleet: LocalFleet
    connections: Connections

    def connect(self, name: str) -> SSHConnector:
        conn = self.connections.connect(self.connections.inventory.hosts[name])
        assert isinstance(conn, SSHConnector)
        return conn


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Nodes]:
    """fw01 allows TCP forwarding, nofw01 does not (AllowTcpForwarding no)."""
    if find_sshd() is None:
        pytest.skip("sshd not installed")
    tmp = tmp_path_factory.mktemp("fwd")
    fleet = LocalFleet(tmp / "fleet", 2, prefix="fw", first_address=170)
    fleet.nodes[1].name = "nofw01"
    fleet.nodes[1].forwarding = False
    try:  # start() may fail half-way, with some nodes up
        fleet.start()
        kh = fleet.write_known_hosts(tmp / "known_hosts")
        settings = load_settings(
            env={
                "AGENTCTL_KNOWN_HOSTS": str(kh),
                "AGENTCTL_USE_SSH_CONFIG": "false",
                "AGENTCTL_LOOK_FOR_KEYS": "false",
                "AGENTCTL_USE_AGENT": "false",
                "AGENTCTL_CONNECT_TIMEOUT": "5",
            }
        )
        inventory = load_inventory(fleet.write_inventory(tmp / "inventory.yml"))
        yield Nodes(fleet, Connections(settings, inventory))
    finally:
        fleet.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(ClusterSpec(workers=1, time_scale=0.01), workdir=tmp_path_factory.mktemp("cl"))
    c.start()
    try:
        yield c
    finally:
        c.stop()


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_metrics_of_a_loopback_worker_through_an_ssh_forward(
    nodes: Nodes, cluster: LocalCluster
) -> None:
    conn = nodes.connect("fw01")
    try:
        port = _port(cluster.worker_urls["w0"])
        status, body = http_get_over(
            conn.open_tcp("127.0.0.1", port, 10), "127.0.0.1", "/metrics", 10
        )
        assert status == 200
        exp = parse(body.decode())
        assert exp.value("vllm:prefix_cache_queries_total") is not None
        assert exp.histogram("vllm:time_to_first_token_seconds") is not None
        # the router too, and the collector's incremental state over the same forward
        state = ScrapeState(metrics_fetcher(conn.open_tcp, timeout=10))
        router = f"127.0.0.1:{_port(cluster.router_url)}"
        first = state.scrape_router(router)
        assert first.since_start and set(first.workers) == {"w0"}
        assert first.workers["w0"].healthy is True
        worker = state.scrape_worker(f"127.0.0.1:{port}")
        assert worker.kv_hit_rate is None  # no traffic yet: N/A, not 0
        # the channel is a fresh stream each time; the session still runs commands
        assert conn.run(["true"]).ok
    finally:
        conn.close()


def test_forward_to_a_closed_port_is_a_clear_error(nodes: Nodes) -> None:
    conn = nodes.connect("fw01")
    try:
        port = free_port()
        with pytest.raises(RemoteError, match=f"could not connect to 127.0.0.1:{port}") as info:
            conn.open_tcp("127.0.0.1", port, 10)
        assert info.value.host == "fw01"
    finally:
        conn.close()


def test_forward_on_a_node_without_tcp_forwarding_is_refused_not_hung(
    nodes: Nodes, cluster: LocalCluster
) -> None:
    conn = nodes.connect("nofw01")
    try:
        with pytest.raises(RemoteError, match=r"forwarding .* is disabled") as info:
            conn.open_tcp("127.0.0.1", _port(cluster.worker_urls["w0"]), 10)
        assert info.value.hint is not None and "AllowTcpForwarding" in info.value.hint
        assert conn.run(["true"]).ok  # the session survives a refused channel
    finally:
        conn.close()
