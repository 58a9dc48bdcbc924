"""Run probes on a node through any Connector: ship the runner and the redactor into a private
temporary directory, run them with the node's python3, read one JSON answer, clean up.

Nothing is installed and nothing stays behind; redaction happens on the node, so secrets never
cross the wire. A node without python3, a runner that dies, or an answer that is not the
expected JSON is a `DiagError` naming what happened, never a half-read result.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentctl.ctl.connector import Become, Connector
from agentctl.ctl.diag.probe import ProbeResult, ProbeSpec
from agentctl.ctl.errors import AgentctlError

HERE = Path(__file__).resolve().parent
RUNNER_FILES = ("node_runner.py", "redact.py")
#: probes run at once on the node (each is a short read; they mostly wait on the kernel)
PARALLEL = 8
#: the most an answer may bring back (an L2 bundle's redacted captures, as JSON)
ANSWER_CAP = 256 * 1024 * 1024
REMOTE_TMP = "/tmp/agentctl-diag."  # noqa: S108 - a mktemp -d template on the node


class DiagError(AgentctlError):
    kind = "diag"


@dataclass(frozen=True)
class RedactOptions:
    pseudonymize: bool = False
    hostnames: tuple[str, ...] = ()
    #: literal secret values to remove wherever they show (never logged; not in `repr`)
    extra_secrets: tuple[str, ...] = field(default=(), repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "pseudonymize": self.pseudonymize,
            "hostnames": list(self.hostnames),
            "extra_secrets": list(self.extra_secrets),
        }


@dataclass(frozen=True)
class Answer:
    results: dict[str, ProbeResult]
    node: dict[str, Any]
    redaction_counts: dict[str, int]
    #: original -> pseudonym; kept on the control side only, never inside a bundle
    mapping: dict[str, str] = field(repr=False)
    duration_s: float = 0.0


def answer_deadline(probes: Sequence[ProbeSpec], parallel: int = PARALLEL) -> float:
    """Seconds to wait for the whole answer: the slowest probe times the waves it may need."""
    if not probes:
        return 30.0
    waves = math.ceil(len(probes) / max(parallel, 1))
    return max(p.timeout for p in probes) * waves + 30.0


def parse_answer(text: str) -> Answer:
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise DiagError(
            f"the node's diagnostic runner answered something that is not JSON ({e})"
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("results"), list):
        raise DiagError("the node's diagnostic runner answered JSON without results")
    results = {}
    for item in doc["results"]:
        if isinstance(item, dict) and isinstance(item.get("name"), str):
            results[item["name"]] = ProbeResult.from_json(item)
    red = doc.get("redaction") or {}
    return Answer(
        results=results,
        node=dict(doc.get("node") or {}),
        redaction_counts={str(k): int(v) for k, v in (red.get("counts") or {}).items()},
        mapping={str(k): str(v) for k, v in (red.get("mapping") or {}).items()},
    )


def run_probes(
    conn: Connector,
    probes: Sequence[ProbeSpec],
    *,
    become: Become | None = None,
    redact: RedactOptions | None = None,
    python: str = "python3",
) -> Answer:
    """All `probes` on the node behind `conn`, at most `PARALLEL` at a time."""
    # mktemp -d: a fresh 0700 directory on the node, never a predictable name
    made = conn.run(["mktemp", "-d", f"{REMOTE_TMP}XXXXXXXX"], timeout=30)
    remote = made.stdout.strip()
    if not made.ok or not remote.startswith(REMOTE_TMP):
        raise DiagError(f"cannot make a temporary directory on the node: {made.stderr.strip()}",
                        host=conn.host)  # fmt: skip
    try:
        return _run_in(conn, remote, probes, become, redact or RedactOptions(), python)
    finally:
        conn.run(["rm", "-rf", "--", remote], timeout=30)


def _run_in(
    conn: Connector,
    remote: str,
    probes: Sequence[ProbeSpec],
    become: Become | None,
    redact: RedactOptions,
    python: str,
) -> Answer:
    spec = {
        "probes": [dict(p.to_json(), command=p.describe()) for p in probes],
        "parallel": PARALLEL,
        "redact": redact.to_json(),
    }
    with tempfile.TemporaryDirectory(prefix="agentctl-diag-") as tmp:
        local = Path(tmp) / "spec.json"
        local.write_text(json.dumps(spec))
        local.chmod(0o600)
        for name in RUNNER_FILES:
            conn.put(HERE / name, f"{remote}/{name}", mode=0o600)
        conn.put(local, f"{remote}/spec.json", mode=0o600)
    deadline = answer_deadline(probes)
    res = conn.run(
        [python, f"{remote}/node_runner.py", f"{remote}/spec.json"],
        become=become,
        timeout=deadline,
        output_cap=ANSWER_CAP,
    )
    if res.exit_status == 127:
        raise DiagError(f"{python} is not installed on the node; diagnostics need it",
                        host=conn.host, hint="provisioning installs python3")  # fmt: skip
    if not res.ok:
        why = res.stderr.strip()[-400:] or f"exit {res.exit_status}"
        raise DiagError(f"the diagnostic runner failed on the node: {why}", host=conn.host)
    if res.truncated:
        raise DiagError(f"the node's answer was larger than {ANSWER_CAP} bytes", host=conn.host)
    answer = parse_answer(res.stdout)
    missing = [p.name for p in probes if p.name not in answer.results]
    if missing:
        raise DiagError(f"the node's answer lacks probes: {', '.join(missing[:5])}", host=conn.host)
    return Answer(
        answer.results, answer.node, answer.redaction_counts, answer.mapping, res.duration_s
    )
