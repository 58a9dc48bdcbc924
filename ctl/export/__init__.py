"""`agentctl export`: the store's inventory, events, diagnostics and runs as bounded,
versioned, redacted JSON Lines in ECS (default), OCSF, Splunk HEC or ServiceNow IRE shape,
and their delivery to a collector through a local spool (`deliver`).

    export(store, "ecs", "events", since, out) -> ExportSummary
    verify_file(path) -> Verification
    deliver(path_or_records, url, token, spool_dir, ...) -> DeliveryReport
"""

from __future__ import annotations

from agentctl.ctl.export.bounds import Limits
from agentctl.ctl.export.formats import FORMATS, SCHEMA
from agentctl.ctl.export.pipeline import ExportSummary, export
from agentctl.ctl.export.post import (
    TARGETS,
    Backoff,
    DeliveryReport,
    deliver,
    detect_target,
    spool_name,
)
from agentctl.ctl.export.records import KINDS
from agentctl.ctl.export.spool import SpoolError
from agentctl.ctl.export.writer import Verification, verify_file

__all__ = [
    "FORMATS",
    "KINDS",
    "SCHEMA",
    "TARGETS",
    "Backoff",
    "DeliveryReport",
    "ExportSummary",
    "Limits",
    "SpoolError",
    "Verification",
    "deliver",
    "detect_target",
    "export",
    "spool_name",
    "verify_file",
]
