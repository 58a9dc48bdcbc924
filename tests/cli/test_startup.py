"""`agentctl` starts fast: `--help`, `--version` and each command's `--help` load only what they
show (issue 13). Asserted is behaviour: exit codes, usage lines, and which modules a start
imports (`python -X importtime`). The import time of every case is measured and printed, never
asserted (`pytest -s` or `-rA` shows it); tests/bench/bench_startup.py times whole process
starts against the targets.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer import _click
from typer.core import TyperGroup, TyperOption

from agentctl.ctl import __version__
from agentctl.ctl.cli.main import COMMANDS, app

#: libraries that no `--help` or `--version` may import (each costs 50-500 ms to load)
HEAVY = ("sqlalchemy", "alembic", "httpx", "paramiko", "fastapi", "uvicorn", "textual")
#: the trace slice the repository ships (ctl/data/README.md), as the README names it
SHIPPED_TRACE = "ctl/data/weka_cc_sample6.jsonl.xz"
#: nor do `--help` / `--version` load settings, the store or pydantic (typer loads pydantic to
#: convert a command's parameters, so a command's `--help` does)
NOT_FOR_TOP_LEVEL = ("agentctl.collectors.store", "agentctl.ctl.settings", "pydantic")


class HeavyImport(AssertionError):
    """A start imported a library it does not need."""


@dataclass
class Start:
    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str
    modules: set[str]
    import_us: int

    def report(self) -> None:
        """The measured figure: printed (`-s` / `-rA`), never asserted."""
        case = "agentctl " + " ".join(self.args)
        print(f"{case:<44} imports {self.import_us / 1000:7.1f} ms, {len(self.modules)} modules")

    def loaded(self, names: tuple[str, ...]) -> list[str]:
        return sorted(
            m for m in self.modules if any(m == n or m.startswith(n + ".") for n in names)
        )


_IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \| ( *)(\S+)$")


def start(*args: str) -> Start:
    """`agentctl ARGS` in a fresh interpreter under `-X importtime`."""
    env = dict(os.environ, COLUMNS="100", NO_COLOR="1")
    res = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "agentctl.ctl", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    modules: set[str] = set()
    total = 0
    stderr: list[str] = []
    for line in res.stderr.splitlines():
        m = _IMPORT_LINE.match(line)
        if m is None:
            if not line.startswith("import time:"):
                stderr.append(line)
            continue
        modules.add(m.group(4))
        if len(m.group(3)) == 0:  # a top-level import: its cumulative time counts once
            total += int(m.group(2))
    out = Start(args, res.returncode, res.stdout, "\n".join(stderr), modules, total)
    out.report()
    return out


def assert_light(s: Start, also: tuple[str, ...] = ()) -> None:
    heavy = s.loaded(HEAVY + also)
    if heavy:
        raise HeavyImport(f"agentctl {' '.join(s.args)} imported {', '.join(heavy)}")


# ---- agentctl --help / --version ----------------------------------------------------------


def test_help_lists_every_command_and_imports_none(agentctl_env):
    s = start("--help")
    assert s.code == 0, s.stderr
    assert s.stdout.startswith("Usage: agentctl [OPTIONS] COMMAND [ARGS]...")
    listed = re.findall(r"^  (\S+)  ", s.stdout.split("Commands:")[1], flags=re.M)
    assert listed == list(COMMANDS)
    assert not [m for m in s.modules if m.startswith("agentctl.ctl.cli.") and m.endswith("_cmd")]
    assert_light(s, NOT_FOR_TOP_LEVEL)


def test_version_imports_nothing_heavy(agentctl_env):
    s = start("--version")
    assert s.code == 0, s.stderr
    assert s.stdout == f"agentctl {__version__}\n"
    assert not [m for m in s.modules if m.startswith("agentctl.ctl.cli.") and m.endswith("_cmd")]
    assert_light(s, NOT_FOR_TOP_LEVEL)


# ---- each command's --help ----------------------------------------------------------------


def _passes_through(cmd: _click.Command) -> bool:
    """`serve router|worker` and `bench live` hand `--help` to `python -m agentctl.serving`
    unparsed."""
    return cmd.context_settings.get("help_option_names") == []


@pytest.mark.parametrize("name", list(COMMANDS))
def test_command_help_prints_usage_and_imports_nothing_heavy(agentctl_env, name):
    """`agentctl NAME --help` (and for a group each `agentctl NAME SUB --help`) exits 0 with
    its usage, and loads no heavy library: a command imports those when it runs."""
    s = start(name, "--help")
    assert s.code == 0, s.stderr
    assert s.stdout.startswith(f"Usage: agentctl {name} "), s.stdout[:200]
    starts = [s]
    cmd = COMMANDS[name].load(name, rich_markup_mode=None)
    for sub, sub_cmd in getattr(cmd, "commands", {}).items():
        t = start(name, sub, "--help")
        assert t.code == 0, t.stderr
        # `serve router` runs `python -m agentctl.serving router`; `bench live` runs
        # `python -m agentctl.serving bench live`
        served = sub if name == "serve" else f"{name} {sub}"
        usage = (
            f"usage: python -m agentctl.serving {served}"
            if _passes_through(sub_cmd)
            else f"Usage: agentctl {name} {sub} "
        )
        assert t.stdout.startswith(usage), t.stdout[:200]
        starts.append(t)
    for each in starts:
        assert_light(each)


# ---- the lazy tree keeps the CLI's behaviour ----------------------------------------------


def test_each_static_help_line_is_the_first_sentence_of_the_commands_help():
    """main.COMMANDS keeps a line per command for `agentctl --help`; it must say what the
    command's own docstring (or its Typer help) says, so the two cannot drift apart."""
    for name, entry in COMMANDS.items():
        real = entry.load(name, rich_markup_mode=None).get_short_help_str(limit=10**6)
        assert entry.help == real, f"main.COMMANDS[{name!r}].help: {entry.help!r} != {real!r}"


@pytest.mark.parametrize("width", [60, 80, 120])
def test_listing_equals_the_one_click_prints_from_the_loaded_commands(width):
    group = typer.main.get_command(app)
    assert isinstance(group, TyperGroup)
    ctx = group.make_context("agentctl", [], resilient_parsing=True)
    lazy = _click.HelpFormatter(width=width)
    group.format_commands(ctx, lazy)
    eager = _click.HelpFormatter(width=width)
    TyperGroup.format_commands(group, ctx, eager)  # loads every command, reads its help
    assert lazy.getvalue() == eager.getvalue()


def test_a_mistyped_command_is_a_usage_error_with_a_suggestion(cli):
    res = cli("diagg", "l1")
    assert res.code == 2
    assert "No such command 'diagg'. Did you mean 'diag'?" in res.stderr
    res = cli("--json", "inventry")
    assert res.code == 2
    doc = res.json
    assert doc["ok"] is False and doc["errors"][0]["kind"] == "usage"
    assert "'inventory'" in doc["errors"][0]["message"]


def test_constants_spelled_out_for_help_equal_their_source():
    """A few values that `--help` shows are written out beside their options so that `--help`
    need not import their modules (the exporters, the store); they must stay the source's."""
    from agentctl.collectors.exporter import DEFAULT_MAX_AGE
    from agentctl.collectors.store import ROLES
    from agentctl.ctl import export
    from agentctl.ctl.cli import dashboard_cmd, export_cmd, metrics_cmd

    assert tuple(export.FORMATS) == export_cmd.FORMATS
    assert tuple(export.KINDS) == export_cmd.KINDS
    assert tuple(ROLES) == dashboard_cmd.USER_ROLES
    assert DEFAULT_MAX_AGE.total_seconds() == metrics_cmd.DEFAULT_MAX_AGE_S


# ---- agentctl bench replay: the serving benchmark, documented -----------------------------


def _replay_parser() -> argparse.ArgumentParser:
    from agentctl.serving.bench.cli import add_replay_args

    ap = argparse.ArgumentParser(prog="python -m agentctl.serving bench replay")
    add_replay_args(ap)
    return ap


def _replay_command() -> _click.Command:
    bench = COMMANDS["bench"].load("bench", rich_markup_mode=None)
    assert isinstance(bench, TyperGroup)
    return bench.commands["replay"]


def _default(value: Any) -> Any:
    return getattr(value, "value", value)  # an enum choice compares as its string


def test_bench_replay_has_the_serving_benchmarks_options_and_defaults():
    """`agentctl bench replay` spells out `python -m agentctl.serving bench replay`'s options
    (it may not import serving): same flags, same defaults, every one with help."""
    ours = {}
    for p in _replay_command().params:
        if isinstance(p, TyperOption) and p.name != "help":
            assert p.help, f"agentctl bench replay {p.opts[0]} has no help"
            ours[tuple(sorted(p.opts))] = _default(p.default)
    theirs = {}
    for a in _replay_parser()._actions:
        if a.option_strings and a.dest != "help":
            assert a.help, f"serving bench replay {a.option_strings[0]} has no help"
            theirs[tuple(sorted(a.option_strings))] = a.default
    assert set(ours) == set(theirs)
    for flags, default in theirs.items():
        assert ours[flags] == default, f"{flags}: ours {ours[flags]!r}, serving's {default!r}"


def _legend_terms(text: str) -> set[str]:
    """The column names a help text's legend explains (terms of its indented list)."""
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if "The report has one row per policy:" in line)
    indent = len(lines[at]) - len(lines[at].lstrip()) + 2
    terms: set[str] = set()
    for line in lines[at + 1 :]:
        lead = len(line) - len(line.lstrip())
        if lead < indent or not line.strip():
            break
        if lead == indent:
            terms.update(t.strip() for t in re.split(r"\s{2,}", line.strip())[0].split(","))
    return terms


def test_bench_replay_help_explains_every_column_of_the_report(cli):
    from agentctl.serving.bench.report import format_table

    columns = re.split(r"\s{2,}", format_table([]).splitlines()[0].strip())
    assert "capt%" in columns and "imbal" in columns and "oracle%" in columns
    res = cli("bench", "replay", "--help")
    assert res.code == 0
    assert res.stdout.startswith("Usage: agentctl bench replay [OPTIONS] {trace}")
    assert set(columns) <= _legend_terms(res.stdout), res.stdout
    assert SHIPPED_TRACE in res.stdout
    serving_help = _replay_parser().format_help()
    assert set(columns) <= _legend_terms(serving_help), serving_help


def test_bench_replay_runs_the_shipped_slice(agentctl_env):
    """The README's replay line works from the root of a clean clone: it reaches the serving
    package and prints the report, every column in it."""
    root = Path(__file__).resolve().parents[2]
    res = subprocess.run(
        [sys.executable, "-m", "agentctl.ctl", "bench", "replay", SHIPPED_TRACE,
         "--workers", "2", "--limit", "2", "--policy", "round-robin", "--policy", "kv"],
        cwd=root, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "round-robin" in res.stdout and "kv" in res.stdout and "capt%" in res.stdout
    assert "(--help explains every column)" in res.stdout
