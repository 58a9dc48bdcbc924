"""Progress of long passes without a terminal (logs, CI): a line per step and per package, and
copyable text never wrapped, whatever the width."""

from __future__ import annotations

from agentctl.ctl.cli.output import BuildProgress, Output, StepProgress


def test_steps_are_lines_per_host_and_step_without_a_terminal(capsys):
    out = Output()
    with StepProgress(out, "provision", ["node01", "node02"], steps=3) as steps:
        assert steps.live_lines
        steps.step("node01", 1, "install root", "changed", 0.2)
        steps.step("node02", 1, "install root", "changed", 0.3)
        steps.step("node01", 2, "service user", "skipped", 0.0)
        steps.step("node01", 3, "agentctl directories (item=etc)", "changed", 0.1)
        steps.step("node01", 3, "agentctl directories (item=log)", "failed", 0.1)
    err = capsys.readouterr().err.splitlines()
    assert err[0].split() == ["provision", "node01", "[1/3]", "changed", "install", "root",
                              "(0.2s)"]  # fmt: skip
    assert "service user" not in "\n".join(err)  # skipped steps count but stay quiet
    # a loop's items are one step: both show 3/3
    assert [line.split()[2] for line in err[2:]] == ["[3/3]", "[3/3]"]
    assert "failed" in err[-1]


def test_json_mode_prints_no_progress(capsys):
    out = Output(json_mode=True)
    with StepProgress(out, "deploy", ["n"], steps=1) as steps:
        steps.step("n", 1, "router service", "changed", 1.0)
    with BuildProgress(out) as build:
        build.step("pip download")
        build.line("Collecting fastapi>=0.110")
    assert capsys.readouterr().err == ""


def test_build_progress_shows_one_line_per_package(capsys):
    with BuildProgress(Output()) as build:
        build.step("pip download: 14 serving requirements")
        build.line("Collecting fastapi>=0.110")
        build.line("  Downloading fastapi-0.115.0-py3-none-any.whl (94 kB)")
        build.line("Saved ./wheels/fastapi-0.115.0-py3-none-any.whl")
        build.line("Successfully downloaded fastapi")
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "bundle: pip download: 14 serving requirements",
        "bundle:   Collecting fastapi>=0.110",
        "bundle:   Successfully downloaded fastapi",
    ]


def test_copyable_lines_are_never_wrapped(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    long = "export AGENTCTL_DATABASE_URL=sqlite:////" + "very/long/path/" * 12 + "agentctl.db"
    out = Output()
    out.copyable([long], title="The demo's store (copy these):")
    out.info(f"a note with a path in it: {long}")
    err = capsys.readouterr().err.splitlines()
    assert err == ["The demo's store (copy these):", "  " + long,
                   f"a note with a path in it: {long}"]  # fmt: skip


def test_an_empty_store_says_which_store_and_how_to_fill_it(cli, agentctl_env):
    for argv, what in ((["nodes"], "no nodes in sqlite:///"), (["runs", "list"], "no runs in"),
                       (["metrics", "show"], "no samples newer than")):  # fmt: skip
        res = cli(*argv)
        assert res.code == 0 and what in res.stderr, res.stderr
        assert "demo" not in res.stderr
        assert cli("--json", *argv).stderr == ""  # --json: the envelope only
    demo_db = agentctl_env / "xdg_state_home" / "agentctl" / "demo" / "agentctl.db"
    demo_db.parent.mkdir(parents=True)
    demo_db.touch()
    res = cli("nodes")
    assert f"  export AGENTCTL_DATABASE_URL=sqlite:///{demo_db}" in res.stderr.splitlines()
