"""Playbooks: YAML data describing a host's desired state, applied idempotently over SSH."""

from __future__ import annotations

from agentctl.ctl.playbook.engine import HostRun, PlaybookRunner, TaskResult, inventory_context
from agentctl.ctl.playbook.model import Playbook, TaskSpec, load_playbook
from agentctl.ctl.playbook.ops import OPERATIONS

__all__ = [
    "OPERATIONS",
    "HostRun",
    "Playbook",
    "PlaybookRunner",
    "TaskResult",
    "TaskSpec",
    "inventory_context",
    "load_playbook",
]
