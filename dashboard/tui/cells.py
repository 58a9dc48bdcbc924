"""Table cells as Rich `Text`: numbers formatted for a glance and coloured by nvitop-like
thresholds, so a hot or busy node stands out before anyone reads a digit.

Pure functions of values (and `now` for ages): the same data always renders the same cells,
which is what lets the fleet table compare cells and update only the ones that changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from rich.text import Text

#: (yellow from, red from): utilisation and memory in percent, temperature in °C
PCT_THRESHOLDS = (50.0, 80.0)
TEMP_THRESHOLDS = (70.0, 85.0)
GOOD, WARN, BAD, DIM = "green", "yellow", "bold red", "dim"
#: replayed GPUs (a recording, not a real GPU) are marked in this style and with `REPLAY_MARK`
REPLAYED = "magenta"
REPLAY_MARK = "ʳ"
NONE = "—"
BLOCKS = "▁▂▃▄▅▆▇█"
HEALTH_STYLES = {"pass": GOOD, "warn": WARN, "fail": BAD, "skip": DIM}
SEVERITY_STYLES = {"critical": BAD, "error": BAD, "warning": WARN, "info": DIM}


def level(value: float, thresholds: tuple[float, float]) -> str:
    """The style of a value: green below the first threshold, red from the second."""
    low, high = thresholds
    return GOOD if value < low else WARN if value < high else BAD


def missing() -> Text:
    return Text(NONE, style=DIM)


def pct(value: float | None, thresholds: tuple[float, float] | None = PCT_THRESHOLDS) -> Text:
    """A 0-100 percentage; `thresholds=None` leaves it uncoloured."""
    if value is None:
        return missing()
    return Text(f"{value:.0f}%", style=level(value, thresholds) if thresholds else "")


def ratio(value: float | None) -> Text:
    """A 0-1 ratio (KV hit rate) shown as a percentage, never coloured: high is not bad."""
    return pct(None if value is None else value * 100, None)


def temp(value: float | None) -> Text:
    if value is None:
        return missing()
    return Text(f"{value:.0f}°C", style=level(value, TEMP_THRESHOLDS))


def watts(value: float | None, limit: float | None = None) -> Text:
    if value is None:
        return missing()
    if limit:
        return Text(f"{value:.0f}/{limit:.0f}W", style=level(100 * value / limit, PCT_THRESHOLDS))
    return Text(f"{value:.0f}W")


def seconds(value: float | None) -> Text:
    """Latency: milliseconds below one second, seconds above."""
    if value is None:
        return missing()
    return Text(f"{value * 1000:.0f}ms" if value < 1 else f"{value:.2f}s")


def number(value: float | None, unit: str = "") -> Text:
    if value is None:
        return missing()
    return Text(f"{value:g}{unit}")


def count(value: int, *, alarm: bool = True) -> Text:
    """A count that turns red when non-zero (`alarm`), dim when zero."""
    if value == 0:
        return Text("0", style=DIM)
    return Text(str(value), style=BAD if alarm else "")


def health(verdict: str | None) -> Text:
    if verdict is None:
        return missing()
    return Text(verdict, style=HEALTH_STYLES.get(verdict, ""))


def severity(name: str) -> Text:
    return Text(name, style=SEVERITY_STYLES.get(name, ""))


def gpus(found: int | None, expected: int | None) -> Text:
    """GPUs seen / expected, red when a GPU is missing (fell off the bus, not enumerated)."""
    if found is None:
        return missing() if expected is None else Text(f"?/{expected}", style=WARN)
    if expected is None:
        return Text(str(found))
    return Text(f"{found}/{expected}", style=BAD if found < expected else "")


def gpus_with_replayed(found: int | None, expected: int | None, replayed: int) -> Text:
    """As `gpus`, plus the replayed ones as `+<n>ʳ` in the replayed style (never counted as
    real: a node with only replayed GPUs shows `0+1ʳ`)."""
    if not replayed:
        return gpus(found, expected)
    out = Text(str(found or 0))
    out.append(f"+{replayed}{REPLAY_MARK}", style=REPLAYED)
    return out


def mark_replayed(text: Text, replayed: bool) -> Text:
    """A GPU value of a replayed recording gets the mark, so it never reads as measured."""
    if replayed and text.plain != NONE:
        text = text.copy()
        text.append(REPLAY_MARK, style=REPLAYED)
    return text


def memory(used: float | None, total: float | None) -> Text:
    """Used/total GiB from bytes, coloured by the used fraction."""
    if used is None or total is None or total <= 0:
        return missing()
    gib = 1024**3
    share = 100 * used / total
    return Text(
        f"{used / gib:.0f}/{total / gib:.0f}G {share:.0f}%", style=level(share, PCT_THRESHOLDS)
    )


def age(then: datetime | None, now: datetime) -> str:
    """A short age ("42s", "5m", "3h", "2d"); "never" when there is no time."""
    if then is None:
        return "never"
    secs = max(0, int((now - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit}"
    return f"{secs}s"


def seen(then: datetime | None, now: datetime, stale: bool, gpu_stale: bool = False) -> Text:
    """The last sample's age, red with a marker once the node is stale (yellow when only its
    GPU data is)."""
    text = age(then, now)
    if stale:
        return Text(f"! {text}", style=BAD)
    if gpu_stale:
        return Text(f"g {text}", style=WARN)
    return Text(text, style=DIM)


def spark(
    values: Sequence[float | None], width: int, top: float = 100.0, style: str | None = None
) -> Text:
    """A block sparkline of 0..`top` values squeezed to `width` cells, each block coloured
    by its own value's threshold (or all in `style`); gaps (no sample) stay blank."""
    if not values:
        return Text(" " * width)
    n, k = len(values), min(width, len(values))
    cells: list[float | None] = []
    for i in range(k):
        known = [v for v in values[i * n // k : (i + 1) * n // k] if v is not None]
        cells.append(sum(known) / len(known) if known else None)
    out = Text(" " * (width - len(cells)))
    for v in cells:
        if v is None:
            out.append(" ")
            continue
        share = min(max(v / top, 0.0), 1.0)
        block = BLOCKS[min(len(BLOCKS) - 1, int(share * len(BLOCKS)))]
        out.append(block, style=style or level(share * 100, PCT_THRESHOLDS))
    return out
