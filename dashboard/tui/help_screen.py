"""`?`: every key of `agentctl watch` on one page (k9s habit). Kept as data here so the page
cannot drift from what is bound without someone editing this list."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

KEYS: tuple[tuple[str, str, str], ...] = (
    ("everywhere", "?", "this help (Esc or ? closes it)"),
    ("everywhere", "q", "quit"),
    ("everywhere", "v", "serving: per-worker queue, KV usage, hit rate, TTFT"),
    ("everywhere", "ctrl+r", "refresh now (otherwise every few seconds)"),
    ("fleet", "↑ ↓ PgUp PgDn", "move"),
    ("fleet", "Enter", "open the node: GPUs, charts, events, diagnostics"),
    ("fleet", "/", "filter by name, role or health (Enter keeps it, Esc clears it)"),
    ("fleet", "s", "sort by the next column: name, health, util, mem, temp, power, ..."),
    ("fleet", "S", "reverse the sort"),
    ("fleet, node", "l", "start an L1 run on the node (operator or admin)"),
    ("node", "r", "chart range: 1h, 24h, 7d, 30d"),
    ("node, serving", "Esc", "back"),
)


class HelpScreen(ModalScreen[None]):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Close"),
        Binding("question_mark", "app.pop_screen", "Close", show=False),
    ]

    def compose(self) -> ComposeResult:
        page = Text()
        for where, key, does in KEYS:
            page.append(f"{where:<14}", style="dim")
            page.append(f"{key:<15}", style="bold")
            page.append(f"{does}\n")
        page.rstrip()
        with Vertical(id="help") as box:
            box.border_title = "agentctl watch: keys"
            yield Static(page)
