"""Gather facts from one host through any Connector: one script, one round trip."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

from agentctl.ctl.connector import CommandResult, Connector, cap_output
from agentctl.ctl.facts.base import FactFamily, Facts, compose_script, parse_all


@dataclass(frozen=True)
class Gathered:
    facts: Facts
    problems: dict[str, str]
    result: CommandResult


#: What a fact script may print before parsing stops: far above any real host (a 384-thread
#: server's cpuinfo section is ~80 KB), far below what could hurt the control machine.
PARSE_LIMIT_BYTES = 16 * 1024 * 1024


def gather_facts(
    conn: Connector,
    families: Mapping[str, FactFamily],
    *,
    timeout: float = 60.0,
    keep_bytes: int = 4096,
) -> Gathered:
    """Parse the full output; hand back a result whose output is cut to `keep_bytes`.

    The storage cap must not apply before parsing (it drops the middle of the output, which
    would lose whole families); the raw script output itself is noise in a stored run.
    """
    result = conn.run_shell(compose_script(families), timeout=timeout, output_cap=PARSE_LIMIT_BYTES)
    facts, problems = parse_all(result.stdout, families)
    if result.truncated:
        problems["script"] = f"output over {PARSE_LIMIT_BYTES} bytes; later families cut"
    if not result.ok and not facts:
        problems["script"] = f"exit {result.exit_status}: {result.stderr.strip()[:200]}"
    stdout, cut_out = cap_output(result.stdout.encode(), keep_bytes)
    stderr, cut_err = cap_output(result.stderr.encode(), keep_bytes)
    kept = replace(result, stdout=stdout, stderr=stderr, truncated=cut_out or cut_err)
    return Gathered(facts, problems, kept)
