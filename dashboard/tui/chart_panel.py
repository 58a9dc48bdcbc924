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
        if avgs:
            caption = (
                f"{chart.label} {range_name}  min {min(lows or avgs):.0f}{unit}"
                f" · avg {sum(avgs) / len(avgs):.0f}{unit} · max {max(highs or avgs):.0f}{unit}"
            )
        else:
            caption = f"{chart.label} {range_name}  no data"
        self.query_one(Label).update(caption)
        self.query_one(Sparkline).data = avgs
