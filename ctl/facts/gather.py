"""Gather facts from one host through any Connector: one script, one round trip."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from agentctl.ctl.connector import CommandResult, Connector
from agentctl.ctl.facts.base import FactFamily, Facts, compose_script, parse_all


@dataclass(frozen=True)
class Gathered:
    facts: Facts
    problems: dict[str, str]
    result: CommandResult


def gather_facts(
    conn: Connector, families: Mapping[str, FactFamily], *, timeout: float = 60.0
) -> Gathered:
    result = conn.run_shell(compose_script(families), timeout=timeout)
    facts, problems = parse_all(result.stdout, families)
    if not result.ok and not facts:
        problems["script"] = f"exit {result.exit_status}: {result.stderr.strip()[:200]}"
    return Gathered(facts, problems, result)
