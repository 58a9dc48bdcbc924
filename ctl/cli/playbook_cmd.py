"""`provision`, `deploy`, `lifecycle PHASE`, `drain` / `undrain` and `playbook run FILE`.

All of them run a playbook over the fan-out: plan first (check mode), show it, ask once, then
apply (pyinfra's rule). `--check` / `--diff` stop after the plan; `--yes` skips the question;
`--json` never asks: without `--yes` it prints the plan's envelope and applies nothing. Each
pass is a stored run with per-host, per-task results.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from agentctl.ctl.cli.facts_cmd import node_record
from agentctl.ctl.cli.fanout_cmd import (
    Batch,
    Forks,
    MaxFail,
    RerunFailed,
    Timeout,
    execute,
    fanout_options,
    finish,
    select_hosts,
)
from agentctl.ctl.cli.main import state
from agentctl.ctl.cli.output import StepProgress
from agentctl.ctl.cli.state import State
from agentctl.ctl.errors import PlaybookError, UsageError
from agentctl.ctl.fanout import Status

if TYPE_CHECKING:  # the playbook engine (Jinja2), SSH and the store load when a command runs
    from agentctl.ctl.bundle import VerifiedBundle
    from agentctl.ctl.connect import Connections
    from agentctl.ctl.inventory import Host
    from agentctl.ctl.playbook import Playbook, PlaybookRunner
    from agentctl.ctl.runner import RunReport

PHASES = ("receive", "provision", "deploy", "monitor", "maintenance", "incident", "decommission")

Check = Annotated[bool, typer.Option("--check", help="Only show the plan; change nothing.")]
Diff = Annotated[bool, typer.Option("--diff", help="Show file diffs (implies --check).")]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Apply without asking.")]
ExtraVars = Annotated[
    list[str] | None,
    typer.Option("--extra-vars", "-e", help="KEY=VALUE (VALUE as JSON when it parses); wins."),
]
Tags = Annotated[list[str] | None, typer.Option("--tags", help="Only tasks with these tags.")]
SkipTags = Annotated[list[str] | None, typer.Option("--skip-tags", help="Skip these tags.")]
Hosts = Annotated[list[str] | None, typer.Argument(help="Host patterns (default: all).")]
Wheelhouse = Annotated[
    Path | None,
    typer.Option("--wheelhouse", help="Wheelhouse with requirements.lock, for offline installs."),
]
Bundle = Annotated[
    Path | None,
    typer.Option(
        "--bundle", help="An air-gapped bundle (directory or .tar): verified, then installed."
    ),
]
BundleKey = Annotated[
    Path | None,
    typer.Option("--pubkey", help="Public key the bundle's signature must verify against."),
]


def playbook_dir() -> Path:
    """The playbooks shipped in the package (`agentctl.playbooks`)."""
    return Path(str(files("agentctl.playbooks")))


def load_playbook(name_or_path: str) -> Playbook:
    from agentctl.ctl.playbook import OPERATIONS
    from agentctl.ctl.playbook import load_playbook as _load

    p = Path(name_or_path)
    if not p.suffix:
        p = playbook_dir() / f"{name_or_path}.yml"
        if not p.exists():
            raise UsageError(f"no playbook named {name_or_path!r} (phases: {', '.join(PHASES)})")
    return _load(p, OPERATIONS, template_dirs=(playbook_dir() / "templates",))


def parse_extra_vars(values: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise UsageError(f"--extra-vars {item!r}: expected KEY=VALUE")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def run_playbook(
    st: State,
    playbook: Playbook,
    *,
    hosts: list[Host],
    check: bool,
    diff: bool,
    yes: bool,
    extra_vars: dict[str, Any],
    timeout: float | None,
    forks: int | None,
    batch: str | None,
    max_fail: float | None,
    command: str,
    rerun_of: int | None = None,
    emit: bool = True,
) -> RunReport:
    """Plan (and unless --check, confirm and apply) `playbook` on `hosts`. `emit=False` leaves
    the JSON envelope to the caller (a command made of several passes prints one)."""
    from agentctl.ctl.connect import Connections
    from agentctl.ctl.playbook import PlaybookRunner, inventory_context

    inv = st.inventory()
    hostvars, groups = inventory_context(inv)
    conns = Connections(st.settings(), inv)
    if not (check or diff):  # nodes being managed are nodes the store knows
        st.store().upsert_nodes(node_record(h) for h in hosts)
    options = fanout_options(st, forks, batch, max_fail)
    deadline = timeout or st.settings().command_timeout

    def runner(check_mode: bool, scratch: Path) -> PlaybookRunner:
        return PlaybookRunner(
            playbook,
            check=check_mode,
            hostvars=hostvars,
            groups=groups,
            become_for=lambda h: conns.become_for(h, sudo=True),
            timeout=deadline,
            extra_vars=extra_vars,
            scratch=scratch,
        )

    run_options = {
        "playbook": playbook.name,
        "extra_vars": sorted(extra_vars),
        "rerun_of": rerun_of,
    }
    plan_only = check or diff or (st.json and not yes)
    with tempfile.TemporaryDirectory(prefix="agentctl-pb-") as tmp:
        scratch = Path(tmp)
        if yes and not plan_only:
            return _pass(st, runner(False, scratch), playbook, hosts, options, command,
                         run_options, conns, diff, emit)  # fmt: skip
        plan = _pass(
            st, runner(True, scratch), playbook, hosts, options, command + " --check",
            {**run_options, "check": True}, conns, diff, emit,
        )  # fmt: skip
        if plan_only or not plan.recap.ok:
            return plan
        changes = sum(o.status is Status.CHANGED for o in plan.recap.outcomes)
        if changes == 0:
            st.output.info("[green]nothing to change[/green]")
            return plan
        if not st.output.interactive:
            raise UsageError(
                "no terminal to confirm on: re-run with --yes to apply, or --check to plan"
            )
        if not typer.confirm(f"Apply these changes on {changes} host(s)?", default=False):
            st.output.info("not applied")
            raise typer.Exit(1)
        return _pass(st, runner(False, scratch), playbook, hosts, options, command,
                     run_options, Connections(st.settings(), inv), diff, emit)  # fmt: skip


def _pass(
    st: State,
    runner: PlaybookRunner,
    playbook: Playbook,
    hosts: list[Host],
    options: Any,
    command: str,
    run_options: dict[str, Any],
    conns: Connections,
    diff: bool,
    emit: bool = True,
) -> RunReport:
    kind = playbook.name + (" --check" if runner.check else "")
    title = playbook.name + (" (plan)" if runner.check else "")
    with StepProgress(st.output, title, [h.name for h in hosts], len(playbook.tasks)) as steps:
        runner.on_task = lambda host, r: steps.step(host, r.line or r.task, r.task, r.status,
                                                    r.duration_s)  # fmt: skip
        return execute(
            st,
            kind=kind,
            hosts=hosts,
            task=runner.fanout_task(),
            options=options,
            command=command,
            run_options=run_options,
            schema="agentctl.playbook/1",
            render=lambda report: _render(
                st, report, diff=diff, verbose=st.verbose, short=steps.live_lines
            ),
            conns=conns,
            emit=emit,
            host_progress=False,
        )


def _render(st: State, report: RunReport, *, diff: bool, verbose: int, short: bool = False) -> None:
    """Per host: what changed (or would), what failed, and with --diff the file diffs.
    `short`: the steps were printed as they finished; repeat only what failed."""
    if st.json:
        return
    keep = ("failed", "unknown") if short and not (verbose or diff) else None
    for o in report.recap.outcomes:
        data = o.data if isinstance(o.data, dict) else None
        if data is None:
            continue
        shown = [t for t in data["tasks"]
                 if (t["status"] in keep if keep else t["status"] != "ok" or verbose)]  # fmt: skip
        if not shown:
            continue
        st.output.info(f"[bold]{escape(o.host)}[/bold]")
        for t in shown:
            colour = {"changed": "yellow", "failed": "red", "skipped": "dim",
                      "unknown": "cyan"}.get(t["status"], "green")  # fmt: skip
            line = f"  [{colour}]{t['status']:8}[/{colour}] {escape(t['task'])}"
            st.output.info(line)
            for change in t["changes"]:
                st.output.info(f"             {escape(change)}")
            if t["message"] and t["status"] in ("failed", "unknown", "skipped"):
                st.output.info(f"             [dim]{escape(t['message'])}[/dim]")
            if diff and t["diff"]:
                st.output.info(escape(t["diff"]).rstrip())


def _playbook_hosts(st: State, playbook: Playbook, patterns: list[str] | None,
                    rerun_failed: int | None) -> list[Host]:  # fmt: skip
    if rerun_failed is not None:
        return select_hosts(st, rerun_failed)
    hosts = st.select(patterns)
    allowed = {h.name for h in st.inventory().select(playbook.hosts)}
    chosen = [h for h in hosts if h.name in allowed]
    if not chosen:
        raise UsageError(f"no selected host matches the playbook's hosts ({playbook.hosts!r})")
    return chosen


def _phase(
    phase: str,
    hosts: list[str] | None,
    *,
    check: bool,
    diff: bool,
    yes: bool,
    extra_vars: list[str] | None,
    tags: list[str] | None,
    skip_tags: list[str] | None,
    timeout: float | None,
    forks: int | None,
    batch: str | None,
    max_fail: float | None,
    rerun_failed: int | None,
    more_vars: dict[str, Any] | None = None,
) -> None:
    st = state()
    pb = load_playbook(phase)
    if tags or skip_tags:
        pb = pb.select(set(tags) if tags else None, set(skip_tags) if skip_tags else None)
    chosen = _playbook_hosts(st, pb, hosts, rerun_failed)
    ev = {**(more_vars or {}), **parse_extra_vars(extra_vars)}
    report = run_playbook(
        st, pb, hosts=chosen, check=check, diff=diff, yes=yes, extra_vars=ev,
        timeout=timeout, forks=forks, batch=batch, max_fail=max_fail,
        command=f"{phase} " + " ".join(hosts or []), rerun_of=rerun_failed,
    )  # fmt: skip
    finish(report)


def provision(
    hosts: Hosts = None,
    check: Check = False,
    diff: Diff = False,
    yes: Yes = False,
    wheelhouse: Wheelhouse = None,
    bundle: Bundle = None,
    pubkey: BundleKey = None,
    extra_vars: ExtraVars = None,
    tags: Tags = None,
    skip_tags: SkipTags = None,
    timeout: Timeout = None,
    forks: Forks = None,
    batch: Batch = None,
    max_fail_percent: MaxFail = None,
    rerun_failed: RerunFailed = None,
) -> None:
    """Packages, driver pin, user, directories, and the agentctl serving package on nodes.

    With --bundle, the bundle is verified here first (every file against SHA256SUMS and the
    manifest, the signature against --pubkey): nothing is installed from a bundle that fails.
    Its wheels go up by SFTP and install with pip --no-index --require-hashes; its apt
    repository, when it has one, becomes the nodes' package source for this bundle."""
    more: dict[str, Any] = {}
    if wheelhouse is not None and bundle is not None:
        raise UsageError("give --wheelhouse or --bundle, not both")
    with contextlib.ExitStack() as stack:
        if bundle is not None:
            verified = _verified_bundle(bundle, pubkey, stack)
            wheelhouse = verified.wheels_dir
            state().output.info(
                f"bundle verified: {len(verified.checked)} files, signature "
                f"{escape(verified.signature)}"
            )
            if verified.apt_dir is not None:
                more["agentctl_bundle_apt"] = str(verified.apt_dir)
        if wheelhouse is not None:
            if not (wheelhouse / "requirements.lock").is_file():
                raise UsageError(f"--wheelhouse {wheelhouse}: no requirements.lock in it")
            more["agentctl_wheelhouse"] = str(wheelhouse.resolve())
        _phase("provision", hosts, check=check, diff=diff, yes=yes, extra_vars=extra_vars,
               tags=tags, skip_tags=skip_tags, timeout=timeout, forks=forks, batch=batch,
               max_fail=max_fail_percent, rerun_failed=rerun_failed, more_vars=more)  # fmt: skip


def _verified_bundle(
    path: Path, pubkey: Path | None, stack: contextlib.ExitStack
) -> VerifiedBundle:
    from agentctl.ctl.bundle import extract_bundle, verify_bundle

    if path.is_file():
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="agentctl-bundle-")))
        path = extract_bundle(path, tmp)
    return verify_bundle(path, pubkey)


def deploy(
    hosts: Hosts = None,
    check: Check = False,
    diff: Diff = False,
    yes: Yes = False,
    extra_vars: ExtraVars = None,
    tags: Tags = None,
    skip_tags: SkipTags = None,
    timeout: Timeout = None,
    forks: Forks = None,
    batch: Batch = None,
    max_fail_percent: MaxFail = None,
    rerun_failed: RerunFailed = None,
) -> None:
    """The router on router nodes and engine workers on worker nodes, health-checked."""
    _phase("deploy", hosts, check=check, diff=diff, yes=yes, extra_vars=extra_vars,
           tags=tags, skip_tags=skip_tags, timeout=timeout, forks=forks, batch=batch,
           max_fail=max_fail_percent, rerun_failed=rerun_failed)  # fmt: skip


def lifecycle(
    phase: Annotated[str, typer.Argument(help=f"One of: {', '.join(PHASES)}.")],
    hosts: Hosts = None,
    check: Check = False,
    diff: Diff = False,
    yes: Yes = False,
    extra_vars: ExtraVars = None,
    tags: Tags = None,
    skip_tags: SkipTags = None,
    timeout: Timeout = None,
    forks: Forks = None,
    batch: Batch = None,
    max_fail_percent: MaxFail = None,
    rerun_failed: RerunFailed = None,
) -> None:
    """Run one lifecycle phase's playbook (NVIDIA's fleet lifecycle)."""
    if phase not in PHASES:
        raise UsageError(f"unknown phase {phase!r}; phases: {', '.join(PHASES)}")
    if phase in ("maintenance", "decommission"):
        _drained_phase(phase, hosts, check=check, yes=yes, extra_vars=extra_vars,
                       timeout=timeout, forks=forks)  # fmt: skip
        return
    _phase(phase, hosts, check=check, diff=diff, yes=yes, extra_vars=extra_vars,
           tags=tags, skip_tags=skip_tags, timeout=timeout, forks=forks, batch=batch,
           max_fail=max_fail_percent, rerun_failed=rerun_failed)  # fmt: skip


def _drained_phase(
    phase: str,
    patterns: list[str] | None,
    *,
    check: bool,
    yes: bool,
    extra_vars: list[str] | None,
    timeout: float | None,
    forks: int | None,
) -> None:
    """Drain the nodes' workers on every router (waiting for in-flight requests), run the
    phase on the nodes, then undrain them (maintenance, only if it succeeded) or mark them
    retired in the store (decommission). Stops at the first pass that fails, saying where."""
    st = state()
    if not patterns:
        raise UsageError(f"lifecycle {phase} needs the nodes to act on (no default: all)")
    nodes = st.select(patterns)
    names = [h.name for h in nodes]
    ev = parse_extra_vars(extra_vars)
    if check:
        _phase(phase, patterns, check=True, diff=False, yes=False, extra_vars=extra_vars,
               tags=None, skip_tags=None, timeout=timeout, forks=forks, batch=None,
               max_fail=None, rerun_failed=None)  # fmt: skip
        return
    if not yes and not st.output.interactive:
        raise UsageError(f"lifecycle {phase} drains nodes: confirm with --yes")
    if not yes and not typer.confirm(f"{phase}: drain and act on {', '.join(names)}?"):
        raise typer.Exit(1)
    passes: list[tuple[str, RunReport]] = []

    def done(ok: bool, extra: dict[str, Any] | None = None) -> None:
        data = {"phase": phase, "nodes": names, **(extra or {}),
                "passes": [{"step": n, **r.to_dict()} for n, r in passes]}  # fmt: skip
        st.output.emit(data, schema="agentctl.lifecycle/1", ok=ok)
        worst = max((int(r.recap.exit_code) for _, r in passes), default=0)
        if worst:
            raise typer.Exit(worst)

    workers = [h.name for h in nodes if "worker" in h.roles]
    if workers and _routers(st):
        rep = _drain_pass(st, workers, True, True, timeout, emit=False)
        passes.append(("drain", rep))
        if not rep.recap.ok:
            done(False)
            return
    rep = run_playbook(
        st, load_playbook(phase), hosts=nodes, check=False, diff=False, yes=True,
        extra_vars=ev, timeout=timeout, forks=forks, batch=None, max_fail=None,
        command=f"lifecycle {phase} " + " ".join(names), emit=False,
    )  # fmt: skip
    passes.append((phase, rep))
    if not rep.recap.ok:
        st.output.info(f"[red]{phase} failed: the nodes stay drained[/red]")
        done(False)
        return
    extra: dict[str, Any] = {}
    if phase == "maintenance" and workers and _routers(st):
        undo = _drain_pass(st, workers, False, False, timeout, emit=False)
        passes.append(("undrain", undo))
    if phase == "decommission":
        extra["retired"] = st.store().retire_nodes(names)
        st.output.info(f"retired: {escape(', '.join(extra['retired']) or '-')}")
    done(all(r.recap.ok for _, r in passes), extra)


def _routers(st: State) -> list[Host]:
    return [h for h in st.inventory().hosts.values() if "router" in h.roles]


def _drain_pass(
    st: State, nodes: list[str], drained: bool, wait: bool, timeout: float | None, *, emit: bool
) -> RunReport:
    routers = _routers(st)
    if not routers:
        raise UsageError("no host has the router role (agentctl_roles: [router])")
    ev = {
        "agentctl_drain_nodes": nodes,
        "agentctl_drain_state": "drained" if drained else "active",
        "agentctl_drain_wait": wait,
    }
    return run_playbook(
        st, load_playbook("drain"), hosts=routers, check=False, diff=False, yes=True,
        extra_vars=ev, timeout=timeout, forks=None, batch=None, max_fail=None,
        command=("drain " if drained else "undrain ") + " ".join(nodes), emit=emit,
    )  # fmt: skip


def _drain(nodes: list[str], drained: bool, wait: bool, timeout: float | None) -> None:
    st = state()
    inv = st.inventory()
    unknown = [n for n in nodes if n not in inv.hosts]
    if unknown:
        raise UsageError(f"not in the inventory: {', '.join(unknown)}")
    finish(_drain_pass(st, nodes, drained, wait, timeout, emit=True))


def drain(
    nodes: Annotated[list[str], typer.Argument(help="Nodes whose workers to drain.")],
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait for in-flight requests to finish.")
    ] = True,
    timeout: Timeout = None,
) -> None:
    """Stop routing new requests to NODE's workers on every router; in-flight ones finish."""
    _drain(nodes, True, wait, timeout)


def undrain(
    nodes: Annotated[list[str], typer.Argument(help="Nodes whose workers to route to again.")],
    timeout: Timeout = None,
) -> None:
    """Route new requests to NODE's workers again."""
    _drain(nodes, False, False, timeout)


def playbook_run(
    path: Annotated[Path, typer.Argument(help="A playbook YAML file.")],
    hosts: Hosts = None,
    check: Check = False,
    diff: Diff = False,
    yes: Yes = False,
    extra_vars: ExtraVars = None,
    tags: Tags = None,
    skip_tags: SkipTags = None,
    timeout: Timeout = None,
    forks: Forks = None,
    batch: Batch = None,
    max_fail_percent: MaxFail = None,
    rerun_failed: RerunFailed = None,
) -> None:
    """Run any playbook file (your own operations, same engine)."""
    if not path.exists():
        raise PlaybookError("no such file", path=str(path))
    _phase(str(path), hosts, check=check, diff=diff, yes=yes, extra_vars=extra_vars,
           tags=tags, skip_tags=skip_tags, timeout=timeout, forks=forks, batch=batch,
           max_fail=max_fail_percent, rerun_failed=rerun_failed)  # fmt: skip


app = typer.Typer(help="Run playbooks (the lifecycle phases are also top-level commands).")
app.command("run")(playbook_run)
