"""A fact family is a POSIX sh snippet plus a pure parser of its output.

All families selected for a run are joined into one remote script (one round trip per host),
whose output is split back into sections by markers. Parsers never do I/O, so they are tested
on outputs recorded from real hosts (tests/fixtures/facts/).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

Facts = dict[str, Any]

MARKER = "@@agentctl-fact"
_MARKER_RE = re.compile(MARKER + r":(?P<name>[a-z0-9_]+):(?P<what>begin|end)(?::(?P<rc>-?\d+))?$")


@dataclass(frozen=True)
class FactFamily:
    #: key under which the parsed result is stored, e.g. "os", "gpus"
    name: str
    #: POSIX sh, read-only, must finish quickly; stderr is discarded by the runner
    script: str
    #: pure: raw section text -> JSON-serialisable value
    parse: Callable[[str], Any]
    #: one line for `agentctl facts --help` and docs
    doc: str = ""


def compose_script(families: Mapping[str, FactFamily] | list[FactFamily]) -> str:
    """One script that prints each family's section between begin/end markers with its rc."""
    items = list(families.values()) if isinstance(families, Mapping) else list(families)
    parts = ['export LC_ALL=C PATH="$PATH:/usr/sbin:/sbin:/usr/local/sbin"']
    for fam in items:
        parts.append(f"echo '{MARKER}:{fam.name}:begin'")
        parts.append(f"( {fam.script}\n) </dev/null 2>/dev/null; rc=$?")
        parts.append(f'echo; echo "{MARKER}:{fam.name}:end:$rc"')
    return "\n".join(parts) + "\n"


def split_sections(output: str) -> dict[str, tuple[str, int | None]]:
    """Inverse of compose_script: family name -> (raw text, exit status or None if cut off)."""
    sections: dict[str, tuple[str, int | None]] = {}
    current: str | None = None
    buf: list[str] = []
    for line in output.splitlines():
        m = _MARKER_RE.match(line)
        if m:
            name, what, rc = m.group("name"), m.group("what"), m.group("rc")
            if what == "begin":
                current, buf = name, []
            elif what == "end" and current == name:
                # compose_script echoes a newline before the end marker, so a snippet without a
                # trailing newline cannot glue onto it; trailing blank lines carry no data.
                while buf and buf[-1] == "":
                    buf.pop()
                text = "\n".join(buf)
                status = int(rc) if rc is not None else None
                sections[name] = (text, status)
                current = None
            continue
        if current is not None:
            buf.append(line)
    if current is not None:
        sections[current] = ("\n".join(buf), None)
    return sections


def parse_all(output: str, families: Mapping[str, FactFamily]) -> tuple[Facts, dict[str, str]]:
    """Parse every section; a parser error is reported per family, never fatal for the host."""
    facts: Facts = {}
    problems: dict[str, str] = {}
    sections = split_sections(output)
    for name, fam in families.items():
        if name not in sections:
            problems[name] = "no output (script cut off)"
            continue
        raw, _status = sections[name]
        try:
            facts[name] = fam.parse(raw)
        except Exception as exc:  # a parser bug must not lose the other families
            problems[name] = f"parse error: {type(exc).__name__}: {exc}"
    return facts, problems
