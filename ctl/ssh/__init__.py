"""The SSH layer: the only place in agentctl that imports paramiko."""

from agentctl.ctl.ssh.config import load_ssh_config
from agentctl.ctl.ssh.connector import SSHConnector
from agentctl.ctl.ssh.known_hosts import KeyInfo, KnownHosts
from agentctl.ctl.ssh.target import HostValues, Target, parse_jump_chain, resolve_target
from agentctl.ctl.ssh.transport import ConnectOptions, fetch_host_key

__all__ = [
    "ConnectOptions",
    "HostValues",
    "KeyInfo",
    "KnownHosts",
    "SSHConnector",
    "Target",
    "fetch_host_key",
    "load_ssh_config",
    "parse_jump_chain",
    "resolve_target",
]
