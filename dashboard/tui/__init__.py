"""`agentctl watch`: a Textual TUI over the dashboard's read model, local or remote.

Everything under this package may import textual; nothing outside `agentctl.dashboard` may.
"""

from __future__ import annotations

from .app import WatchApp
from .source import DataSource, LocalSource, RemoteSource, SourceError

__all__ = ["DataSource", "LocalSource", "RemoteSource", "SourceError", "WatchApp"]
