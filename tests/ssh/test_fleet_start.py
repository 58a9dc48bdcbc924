"""`LocalFleet.start()` is all or nothing: when one node cannot start, none keeps running."""

from __future__ import annotations

import socket

import pytest

from agentctl.ctl.fleet import FleetError, LocalFleet, find_sshd


@pytest.mark.skipif(find_sshd() is None, reason="sshd not installed")
def test_a_node_that_cannot_start_stops_the_ones_that_did(tmp_path):
    fl = LocalFleet(tmp_path / "fleet", 2, prefix="aon", first_address=240)
    with socket.socket() as busy:  # node 2's port is taken: its sshd cannot listen
        busy.bind((fl.nodes[1].address, 0))
        busy.listen()
        fl.nodes[1].port = busy.getsockname()[1]
        with pytest.raises(FleetError):
            fl.start(timeout=10)
    assert all(n.process is None for n in fl.nodes)
    with (
        pytest.raises(OSError),
        socket.create_connection((fl.nodes[0].address, fl.nodes[0].port), timeout=1),
    ):
        pass
