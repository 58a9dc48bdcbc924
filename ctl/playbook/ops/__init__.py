"""Every playbook operation by name."""

from __future__ import annotations

from typing import Any

from agentctl.ctl.playbook.ops.base import HostContext, OpArgs, Operation, Plan
from agentctl.ctl.playbook.ops.commands import Command, WaitFor
from agentctl.ctl.playbook.ops.files import Directory, File, Sync, Template
from agentctl.ctl.playbook.ops.python import Pip
from agentctl.ctl.playbook.ops.router import RouterWorkers
from agentctl.ctl.playbook.ops.service import Service
from agentctl.ctl.playbook.ops.system import Package, User

OPERATIONS: dict[str, Operation[Any]] = {
    op.name: op
    for op in (
        Directory(),
        File(),
        Template(),
        Sync(),
        Command(),
        WaitFor(),
        Package(),
        User(),
        Pip(),
        RouterWorkers(),
        Service(),
    )
}

__all__ = ["OPERATIONS", "HostContext", "OpArgs", "Operation", "Plan"]
