"""One host's diagnostics end to end: choose the probes, run them on the node, judge, bundle.

The CLI fans these out over the fleet and stores what they return; they take a Connector and
an inventory Host, so they run the same over SSH and on the local connector.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agentctl.ctl.connector import Become, Connector
from agentctl.ctl.diag.bundle import BundleResult, write_bundle
from agentctl.ctl.diag.l1 import (
    CheckResult,
    L1Context,
    L1Thresholds,
    context_from_vars,
    evaluate,
    l1_probes,
    overall,
)
from agentctl.ctl.diag.l2probes import L2_PROBES, OPTIONAL_PROBES
from agentctl.ctl.diag.probe import ProbeResult, ProbeSpec
from agentctl.ctl.diag.reboot import REBOOT_PROBES, RebootReport, analyze
from agentctl.ctl.diag.remote import Answer, RedactOptions, run_probes
from agentctl.ctl.inventory import Host

L1_SCHEMA = "agentctl.diag.l1/1"
REBOOT_SCHEMA = "agentctl.diag.reboot_cause/1"


@dataclass(frozen=True)
class L1Report:
    host: str
    verdict: str
    checks: tuple[CheckResult, ...]
    probes: dict[str, str]  # probe name -> status, every probe, shown in the output
    duration_s: float
    collected_at: datetime
    node: dict[str, Any] = field(default_factory=dict)
    #: the replay set when the host's GPUs are replayed (`agentctl_gpu_replay`), else None
    gpu_replay: str | None = None

    def counts(self) -> dict[str, int]:
        out = {"pass": 0, "warn": 0, "fail": 0, "skip": 0}
        for c in self.checks:
            out[c.verdict] = out.get(c.verdict, 0) + 1
        return out

    def summary(self) -> str:
        bad = [c for c in self.checks if c.verdict in ("fail", "warn")]
        bad.sort(key=lambda c: c.verdict != "fail")
        if not bad:
            head = f"{self.verdict}: all {len(self.checks)} checks pass or do not apply"
            return head + (f" (GPUs replayed: {self.gpu_replay})" if self.gpu_replay else "")
        return f"{self.verdict}: " + "; ".join(f"{c.name}: {c.reason}" for c in bad[:3])

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": L1_SCHEMA,
            "host": self.host,
            "verdict": self.verdict,
            "counts": self.counts(),
            "collected_at": self.collected_at.isoformat(),
            "duration_s": round(self.duration_s, 3),
            "checks": [c.to_json() for c in self.checks],
            "probes": dict(self.probes),
            **({"replayed": _replayed_json(self.gpu_replay)} if self.gpu_replay else {}),
        }


def _replayed_json(set_name: str) -> dict[str, Any]:
    """What the report says about a replayed GPU: the set and where its recordings come from."""
    from agentctl.collectors.gpu import recorded

    try:
        return recorded.describe(set_name)
    except recorded.ReplayError:
        return {"set": set_name, "title": "unknown replay set"}


def l1_context(host: Host, now: datetime | None = None) -> L1Context:
    return context_from_vars(
        host.name, host.roles, host.vars, host.expected_gpus, now or datetime.now(UTC),
        address=host.address,
    )  # fmt: skip


def judge_l1(
    host: str,
    results: Mapping[str, ProbeResult],
    ctx: L1Context,
    thresholds: L1Thresholds,
    *,
    duration_s: float = 0.0,
    node: Mapping[str, Any] | None = None,
) -> L1Report:
    checks = tuple(evaluate(results, ctx, thresholds))
    return L1Report(
        host=host,
        verdict=overall(checks),
        checks=checks,
        probes={k: v.status.value for k, v in sorted(results.items())},
        duration_s=duration_s,
        collected_at=ctx.now,
        node=dict(node or {}),
        gpu_replay=ctx.gpu_replay.set_name if ctx.gpu_replay else None,
    )


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def node_python(host: Host) -> str:
    """The interpreter that runs the probe runner on the node (stdlib only, 3.8 or newer)."""
    return str(host.vars.get("agentctl_diag_python") or "python3")


def redact_options(host: Host, become: Become | None, pseudonymize: bool = False) -> RedactOptions:
    secrets = [s for s in (become.password if become else None, host.become_password) if s]
    names = [host.name] + ([] if _is_ip(host.address) else [host.address])
    return RedactOptions(
        pseudonymize=pseudonymize,
        hostnames=tuple(names) if pseudonymize else (),
        extra_secrets=tuple(secrets),
    )


def run_l1(
    conn: Connector, host: Host, thresholds: L1Thresholds, *, become: Become | None = None
) -> L1Report:
    ctx = l1_context(host)
    started = time.monotonic()
    answer = run_probes(conn, l1_probes(ctx, thresholds), become=become,
                        redact=redact_options(host, become), python=node_python(host))  # fmt: skip
    return judge_l1(host.name, answer.results, ctx, thresholds,
                    duration_s=time.monotonic() - started, node=answer.node)  # fmt: skip


def reboot_json(report: RebootReport, host: str) -> dict[str, Any]:
    return {"schema": REBOOT_SCHEMA, "host": host, **report.to_json()}


def run_reboot_cause(
    conn: Connector, host: Host, *, become: Become | None = None
) -> tuple[RebootReport, Answer]:
    answer = run_probes(conn, REBOOT_PROBES, become=become, redact=redact_options(host, become),
                        python=node_python(host))  # fmt: skip
    return analyze(answer.results), answer


def l2_probes(
    host: Host, ctx: L1Context, thresholds: L1Thresholds, optional: Sequence[str] = ()
) -> list[ProbeSpec]:
    """L1's and reboot-cause's probes (so the bundle can be judged offline), then L2's own;
    the first spec of a name wins."""
    root = str(host.vars.get("agentctl_install_root", "/opt/agentctl"))
    extra = [
        replace(p, glob=f"{root}/etc/*") if p.name == "l2_agentctl_config" else p for p in L2_PROBES
    ]
    chosen = [OPTIONAL_PROBES[name] for name in optional]
    out: dict[str, ProbeSpec] = {}
    for p in [*l1_probes(ctx, thresholds), *REBOOT_PROBES, *extra, *chosen]:
        out.setdefault(p.name, p)
    return list(out.values())


@dataclass(frozen=True)
class L2Outcome:
    bundle: BundleResult
    l1: L1Report
    reboot: RebootReport
    probe_statuses: dict[str, str]


def run_l2(
    conn: Connector,
    host: Host,
    out_dir: Path,
    thresholds: L1Thresholds,
    *,
    become: Become | None = None,
    optional: Sequence[str] = (),
    pseudonymize: bool = False,
    total_cap: int | None = None,
    tool_version: str = "",
) -> L2Outcome:
    ctx = l1_context(host)
    specs = l2_probes(host, ctx, thresholds, optional)
    started = time.monotonic()
    answer = run_probes(conn, specs, become=become,
                        redact=redact_options(host, become, pseudonymize),
                        python=node_python(host))  # fmt: skip
    l1 = judge_l1(host.name, answer.results, ctx, thresholds,
                  duration_s=time.monotonic() - started, node=answer.node)  # fmt: skip
    reboot = analyze(answer.results)
    kwargs: dict[str, Any] = {} if total_cap is None else {"total_cap": total_cap}
    # pseudonymized: the bundle names the host by its pseudonym too (the mapping stays here)
    shown = answer.mapping.get(host.name, "host") if pseudonymize else host.name
    bundle = write_bundle(
        out_dir, shown, specs, answer, l1={**l1.to_json(), "host": shown},
        reboot=reboot_json(reboot, shown), tool_version=tool_version, at=ctx.now, **kwargs,
    )  # fmt: skip
    statuses = {k: v.status.value for k, v in answer.results.items()}
    return L2Outcome(bundle, l1, reboot, statuses)
