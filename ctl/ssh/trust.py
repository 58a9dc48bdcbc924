"""Trust on first use, but only when asked: probe each hop's host key and report its state.

`agentctl hosts trust` shows what this finds and records keys only after confirmation. A hop
behind an unknown jump host cannot be reached yet; the caller trusts the jump host first and
probes again, so a chain is trusted hop by hop, never blindly.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Literal

import paramiko

from agentctl.ctl.errors import HostKeyError
from agentctl.ctl.ssh.known_hosts import KeyInfo, KnownHosts, describe
from agentctl.ctl.ssh.target import Target
from agentctl.ctl.ssh.transport import (
    Aborter,
    ConnectOptions,
    authenticate,
    fetch_host_key,
    handshake,
    open_socket,
)

KeyState = Literal["known", "unknown", "changed"]


@dataclass(frozen=True)
class HopKey:
    hop: Target
    info: KeyInfo
    state: KeyState


def probe_chain(
    target: Target,
    known_hosts: KnownHosts,
    opts: ConnectOptions,
    aborter: Aborter | None = None,
) -> list[HopKey]:
    """Host keys along the chain up to and including the first hop that is not known.

    Known jump hosts are connected to strictly (and authenticated) to reach the next hop.
    Raises UnreachableError / AuthError when a hop cannot be reached at all, and
    UnreachableError("aborted") once `aborter` is aborted.
    """
    found: list[HopKey] = []
    transports: list[paramiko.Transport] = []
    via: paramiko.Transport | None = None
    try:
        for hop in (*target.jumps, target):
            key = fetch_host_key(hop, opts, via, aborter)
            info = describe(hop.known_hosts_key, key)
            try:
                known_hosts.check(hop.known_hosts_key, key, label=hop.name)
                state: KeyState = "known"
            except HostKeyError as exc:
                state = "changed" if exc.changed else "unknown"
            found.append(HopKey(hop, info, state))
            if state != "known" or hop is target:
                break
            sock = open_socket(hop, opts, via, aborter)
            transport = handshake(hop, sock, known_hosts, opts, aborter)
            transports.append(transport)
            if aborter is not None:
                aborter.register(transport, hop.name)
            authenticate(transport, hop, opts, aborter)
            via = transport
    finally:
        for t in reversed(transports):
            if aborter is not None:
                aborter.unregister(t)
            t.close()
    return found


def record(known_hosts: KnownHosts, info: KeyInfo) -> bool:
    """Add a confirmed key; False if it was already there."""
    key = paramiko.PKey.from_type_string(info.key_type, base64.b64decode(info.base64))
    return known_hosts.add(info.host, key)
