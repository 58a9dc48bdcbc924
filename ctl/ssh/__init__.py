"""The SSH layer: the only place in agentctl that imports paramiko."""

import logging

from agentctl.ctl.ssh.config import load_ssh_config
from agentctl.ctl.ssh.connector import SSHConnector
from agentctl.ctl.ssh.known_hosts import KeyInfo, KnownHosts
from agentctl.ctl.ssh.target import HostValues, Target, parse_jump_chain, resolve_target
from agentctl.ctl.ssh.transport import Aborter, ConnectOptions, fetch_host_key

# paramiko logs from its transport threads, with a full traceback for every connection that
# fails ("Exception (client): ..."). With no handler anywhere, logging's last-resort handler
# prints those on stderr, over the operator's terminal and over --json output. Give paramiko a
# handler of its own that drops them, and keep them away from the root logger; the CLI may
# attach a real handler to "paramiko" for -v. (Runs at import of agentctl.ctl.ssh, before any
# of its submodules can open a connection.)
_paramiko_log = logging.getLogger("paramiko")
if not any(isinstance(h, logging.NullHandler) for h in _paramiko_log.handlers):
    _paramiko_log.addHandler(logging.NullHandler())
_paramiko_log.propagate = False

__all__ = [
    "Aborter",
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
