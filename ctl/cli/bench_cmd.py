"""`agentctl bench fanout`: measured, reported, never asserted."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from agentctl.ctl.cli.main import state
from agentctl.ctl.cli.output import plain

app = typer.Typer(help="Benchmarks (run on demand, not in the test suite).", no_args_is_help=True)


@app.command("fanout")
def fanout(
    hosts: Annotated[int, typer.Option("--hosts", min=1, max=500)] = 50,
    forks: Annotated[int | None, typer.Option("--forks", "-f", min=1)] = None,
    repeat: Annotated[int, typer.Option("--repeat", min=1, max=20)] = 1,
) -> None:
    """An ad-hoc command and a facts run over N loopback sshd hosts; Ansible and pyinfra too
    when installed, on the same hosts and inventory, with ratios against agentctl."""
    from agentctl.ctl.bench import run_fanout_bench

    st = state()
    results = run_fanout_bench(hosts=hosts, forks=forks, repeat=repeat)
    ours = {m.job: m.best for m in results if m.tool == "agentctl"}
    rows: list[dict[str, Any]] = []
    for m in results:
        ratio = m.best / ours[m.job] if ours.get(m.job) else float("nan")
        rows.append(
            {
                "tool": m.tool,
                "job": m.job,
                "best_s": round(m.best, 3),
                "median_s": round(m.median, 3),
                "runs": m.seconds,
                "ok": m.ok,
                "x_agentctl": round(ratio, 2),
                "note": m.note,
            }
        )
    st.output.emit(
        {"hosts": hosts, "forks": forks or hosts, "results": rows},
        schema="agentctl.bench.fanout/1",
        ok=all(m.ok for m in results),
    )
    table = Table(
        title=f"Fan-out over {hosts} loopback sshd hosts, forks={forks or hosts}",
        title_justify="left",
    )
    for col in ("tool", "job", "best s", "median s", "time vs agentctl", "ok"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            plain(r["tool"]),
            plain(r["job"]),
            f"{r['best_s']:.2f}",
            f"{r['median_s']:.2f}",
            f"{r['x_agentctl']:.2f}x",
            "yes" if r["ok"] else plain(f"no: {r['note']}"),
        )
    st.output.print(table)


from agentctl.ctl.cli import serve_cmd  # noqa: E402

app.command("replay", context_settings=serve_cmd.PASS_THROUGH)(serve_cmd.replay)
