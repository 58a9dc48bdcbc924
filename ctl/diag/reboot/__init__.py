"""`agentctl diag reboot-cause`: why did a node last reboot? (pure: probes in, report out).

`REBOOT_PROBES` says what to read on the node; `analyze` turns the results (live over SSH or
from an L2 bundle) into a `RebootReport`; `render_text` is the human view.
"""

from agentctl.ctl.diag.reboot.classify import (
    CLASSES,
    CONFIDENCES,
    DEFAULT_POLICY,
    Evidence,
    MissingSource,
    RebootReport,
    Window,
    WindowPolicy,
    analyze,
    missing_sources,
    render_text,
)
from agentctl.ctl.diag.reboot.sources import PROBE_NAMES, REBOOT_PROBES

__all__ = [
    "CLASSES",
    "CONFIDENCES",
    "DEFAULT_POLICY",
    "PROBE_NAMES",
    "REBOOT_PROBES",
    "Evidence",
    "MissingSource",
    "RebootReport",
    "Window",
    "WindowPolicy",
    "analyze",
    "missing_sources",
    "render_text",
]
