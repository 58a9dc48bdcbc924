"""One node chart: a caption with the range's min / avg / max and a Textual `Sparkline` of
the averages. The numbers matter because a sparkline scales to its own data: a flat 90 %
line and a flat 10 % line look the same."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Label, Sparkline

from agentctl.dashboard.readmodel import Chart


class ChartPanel(Vertical):
    def __init__(self, label: str, *, id: str | None = None) -> None:
        super().__init__(id=id, classes="chart")
        self.label = label

    def compose(self) -> ComposeResult:
        yield Label(self.label, classes="chart-caption")
        yield Sparkline([], summary_function=max)

    def set_chart(self, chart: Chart, range_name: str) -> None:
        avgs = [avg for _, _, avg, _ in chart.points if avg is not None]
        lows = [low for _, low, _, _ in chart.points if low is not None]
        highs = [high for _, _, _, high in chart.points if high is not None]
        unit = chart.unit
        mark = "ʳ" if chart.source else ""  # a replayed GPU's chart
        digits = 2 if not unit and avgs and max(highs or avgs) < 10 else 0  # load averages
        if avgs:
            caption = (
                f"{chart.label}{mark} {range_name} {min(lows or avgs):.{digits}f}-"
                f"{max(highs or avgs):.{digits}f}{unit} avg {sum(avgs) / len(avgs):.{digits}f}"
            )
        else:
            caption = f"{chart.label}{mark} {range_name}  no data"
        self.query_one(Label).update(caption)
        self.query_one(Sparkline).data = avgs

    def set_absent(self, why: str) -> None:
        self.query_one(Label).update(f"{self.label}: {why}")
        self.query_one(Sparkline).data = []
