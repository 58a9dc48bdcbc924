"""agentctl's control-plane core.

Errors, envelope, settings, inventory, SSH, fan-out, facts, and the CLI on top of them.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("agentctl")
except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    __version__ = "0.0.0+unknown"
