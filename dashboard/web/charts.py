"""Charts as inline SVG strings, rendered on the server: no script, no CDN (dashboards run
air-gapped), and CSP-clean (colours come from classes in the vendored stylesheet, never from
`style` attributes). Every text that reaches the SVG is escaped here.

Thresholds follow nvitop's colouring (green, yellow, red), kept as data so the web pages and
the TUI colour the same value the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape


@dataclass(frozen=True)
class Threshold:
    """Values below `warn` are ok (green), below `crit` warn (yellow), else crit (red)."""

    warn: float
    crit: float


#: kind -> thresholds; a kind absent here is drawn neutral
THRESHOLDS: dict[str, Threshold] = {
    "util": Threshold(50.0, 80.0),
    "mem": Threshold(50.0, 80.0),
    "temp": Threshold(70.0, 85.0),
}
#: kinds whose axis is always 0-100
PERCENT_KINDS = frozenset({"util", "mem"})
#: GPU_FIELDS / series names -> threshold kind
KIND_OF_FIELD: dict[str, str] = {
    "utilization_gpu_pct": "util",
    "temperature_c": "temp",
    "node.gpu_util_avg": "util",
    "node.gpu_mem_used_pct": "mem",
    "node.gpu_temp_max": "temp",
    "node.gpu_power_w": "power",
    "host.cpu_util_pct": "util",
    "host.mem_used_pct": "mem",
    "host.disk_used_pct": "mem",
}

Point = tuple[datetime, float | None, float | None, float | None]  # ts, min, avg, max


def level(kind: str | None, value: float | None) -> str:
    """CSS level of a value: "ok", "warn", "crit"; "na" without a value; "plain" when the
    kind has no thresholds."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "na"
    t = THRESHOLDS.get(kind or "")
    if t is None:
        return "plain"
    return "ok" if value < t.warn else "warn" if value < t.crit else "crit"


def fmt_num(value: float | None, digits: int = 3) -> str:
    """Compact number for axes and tooltips: 3 significant digits, k/M suffixes."""
    if value is None or not math.isfinite(value):
        return "n/a"
    a = abs(value)
    if a >= 1e6:
        return f"{value / 1e6:.{digits - 1}g}M"
    if a >= 1e4:
        return f"{value / 1e3:.{digits - 1}g}k"
    if a >= 100 or a == 0:
        return f"{value:.0f}"
    return f"{value:.{digits}g}"


def _segments(values: Sequence[float | None]) -> list[list[tuple[int, float]]]:
    """Runs of consecutive values, by index, split at gaps (None, NaN)."""
    runs = _xy_runs([(float(i), v) for i, v in enumerate(values)])
    return [[(int(x), y) for x, y in run] for run in runs]


def _scale(kind: str | None, lo: float, hi: float) -> tuple[float, float]:
    if kind in PERCENT_KINDS:
        return 0.0, 100.0
    lo = min(lo, 0.0)  # a zero baseline keeps magnitudes honest
    if hi <= lo:
        hi = lo + 1.0
    return lo, _nice_ceil(hi)


def _nice_ceil(x: float) -> float:
    if x <= 0:
        return 1.0
    mag = 10.0 ** math.floor(math.log10(x))
    for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if m * mag >= x:
            return m * mag
    return 10 * mag


def sparkline(
    values: Sequence[float | None],
    kind: str | None,
    *,
    unit: str = "",
    width: int = 100,
    height: int = 22,
) -> str:
    """A small line over the values (gaps for None), coloured by the last value's level."""
    vals = [v for v in values if v is not None and math.isfinite(v)]
    last = next((v for v in reversed(values) if v is not None and math.isfinite(v)), None)
    title = escape(
        f"last {fmt_num(last)}{unit}, min {fmt_num(min(vals))}{unit}, "
        f"max {fmt_num(max(vals))}{unit} ({len(values)} points)"
        if vals
        else "no data"
    )
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="spark lvl-{level(kind, last)}" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{title}"><title>{title}</title>'
    ]
    if vals:
        lo, hi = _scale(kind, min(vals), max(vals))
        pad = 2.0
        sx = (width - 2 * pad) / max(len(values) - 1, 1)
        sy = (height - 2 * pad) / (hi - lo)
        base = height - pad
        for seg in _segments(values):
            pts = [f"{pad + sx * i:.1f},{base - sy * (v - lo):.1f}" for i, v in seg]
            if len(pts) == 1:
                x, y = pts[0].split(",")
                parts.append(f'<circle cx="{x}" cy="{y}" r="1.5"/>')
            else:
                parts.append(f'<polyline points="{" ".join(pts)}"/>')
    parts.append("</svg>")
    return "".join(parts)


@dataclass(frozen=True)
class _Frame:
    width: int
    height: int
    left: int = 48
    right: int = 8
    top: int = 10
    bottom: int = 22


def _time_label(ts: datetime, span_s: float) -> str:
    if span_s <= 1800:  # minutes of data: the labels would all read the same minute
        return ts.strftime("%H:%M:%S")
    return ts.strftime("%H:%M" if span_s <= 86_400 else "%m-%d %H:%M")


def _split_gaps(points: Sequence[Point], step_s: float | None) -> list[list[Point]]:
    """Runs of points with an average, cut where a value is missing or buckets are absent."""
    runs: list[list[Point]] = []
    run: list[Point] = []
    prev: datetime | None = None
    for p in points:
        gap = (
            step_s is not None and prev is not None and (p[0] - prev).total_seconds() > 1.5 * step_s
        )
        if p[2] is None or gap:
            if run:
                runs.append(run)
            run = []
        if p[2] is not None:
            run.append(p)
        prev = p[0]
    if run:
        runs.append(run)
    return runs


def line_chart(
    points: Sequence[Point],
    unit: str,
    *,
    label: str = "",
    kind: str | None = None,
    step_s: float | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    width: int = 640,
    height: int = 170,
) -> str:
    """Average line over a min-max band, y axis in `unit`, x axis in UTC; missing values and
    missing buckets leave gaps; threshold lines for kinds that have them."""
    f = _Frame(width, height)
    title = f"{label} ({unit})" if unit else label
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>'
    )
    vals = [v for p in points for v in (p[1], p[2], p[3]) if v is not None and math.isfinite(v)]
    t0 = start or (points[0][0] if points else None)
    t1 = end or (points[-1][0] if points else None)
    if not vals or t0 is None or t1 is None:
        return (head + f'<text class="empty" x="{width / 2:.0f}" y="{height / 2:.0f}" '
                'text-anchor="middle">no data in this range</text></svg>')  # fmt: skip
    lo, hi = _scale(kind, min(vals), max(vals))
    span = max((t1 - t0).total_seconds(), 1.0)
    pw, ph = width - f.left - f.right, height - f.top - f.bottom

    def x(ts: datetime) -> float:
        return f.left + pw * min(max((ts - t0).total_seconds() / span, 0.0), 1.0)

    def y(v: float) -> float:
        return f.top + ph - ph * (min(max(v, lo), hi) - lo) / (hi - lo)

    out = [head, f'<rect class="plot" x="{f.left}" y="{f.top}" width="{pw}" height="{ph}"/>']
    for i in range(5):  # y grid and labels
        v = lo + (hi - lo) * i / 4
        out.append(f'<line class="grid" x1="{f.left}" x2="{f.left + pw}" y1="{y(v):.1f}" '
                   f'y2="{y(v):.1f}"/><text class="axis" x="{f.left - 4}" y="{y(v) + 3:.1f}" '
                   f'text-anchor="end">{escape(fmt_num(v))}</text>')  # fmt: skip
    for frac, anchor in ((0.0, "start"), (0.5, "middle"), (1.0, "end")):  # x labels
        ts = t0 + (t1 - t0) * frac
        out.append(f'<text class="axis" x="{f.left + pw * frac:.1f}" y="{height - 6}" '
                   f'text-anchor="{anchor}">{escape(_time_label(ts, span))}</text>')  # fmt: skip
    t = THRESHOLDS.get(kind or "")
    if t is not None:
        for name, v in (("warn", t.warn), ("crit", t.crit)):
            if lo < v < hi:
                out.append(f'<line class="thr thr-{name}" x1="{f.left}" x2="{f.left + pw}" '
                           f'y1="{y(v):.1f}" y2="{y(v):.1f}"/>')  # fmt: skip
    for run in _split_gaps(points, step_s):
        lows = [(p[0], p[1] if p[1] is not None else p[2]) for p in run]
        highs = [(p[0], p[3] if p[3] is not None else p[2]) for p in run]
        band = [f"{x(ts):.1f},{y(v):.1f}" for ts, v in highs if v is not None]
        band += [f"{x(ts):.1f},{y(v):.1f}" for ts, v in reversed(lows) if v is not None]
        avg = [f"{x(p[0]):.1f},{y(p[2]):.1f}" for p in run if p[2] is not None]
        if len(run) == 1:
            out.append(f'<circle class="avg" cx="{avg[0].split(",")[0]}" '
                       f'cy="{avg[0].split(",")[1]}" r="2"/>')  # fmt: skip
            continue
        out.append(f'<polygon class="band" points="{" ".join(band)}"/>')
        out.append(f'<polyline class="avg" points="{" ".join(avg)}"/>')
    out.append("</svg>")
    return "".join(out)


def bars(
    items: Sequence[tuple[str, float | None]],
    unit: str,
    *,
    label: str = "",
    highlight: str | None = None,
    width: int = 420,
    row: int = 20,
) -> str:
    """Horizontal bars, one per (label, value), scaled to the largest; `highlight` names the
    bar drawn in the accent colour (the others are neutral). A missing value is written, not
    drawn as zero."""
    left, right = 110, 70
    height = row * max(len(items), 1) + 4
    known = [v for _, v in items if v is not None and math.isfinite(v)]
    top = max(known) if known else 1.0
    top = top if top > 0 else 1.0
    title = escape(label)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="bars" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{title}"><title>{title}</title>'
    ]
    for i, (name, v) in enumerate(items):
        y = 2 + i * row
        out.append(f'<text class="label" x="{left - 6}" y="{y + row * 0.7:.1f}" '
                   f'text-anchor="end">{escape(name)}</text>')  # fmt: skip
        if v is None or not math.isfinite(v):
            out.append(f'<text class="value" x="{left}" y="{y + row * 0.7:.1f}">no data</text>')
            continue
        w = (width - left - right) * max(v, 0.0) / top
        cls = "bar" if name == highlight else "bar base"
        out.append(f'<rect class="{cls}" x="{left}" y="{y + 2}" width="{w:.1f}" '
                   f'height="{row - 6}"/>')  # fmt: skip
        out.append(f'<text class="value" x="{left + w + 4:.1f}" y="{y + row * 0.7:.1f}">'
                   f"{escape(fmt_num(v))}{escape(unit)}</text>")  # fmt: skip
    out.append("</svg>")
    return "".join(out)


XY = tuple[float, float | None]  # x (trace seconds), y; None leaves a gap


def _xy_runs(points: Sequence[XY]) -> list[list[tuple[float, float]]]:
    """Runs of consecutive points split at gaps (a None or NaN y)."""
    runs: list[list[tuple[float, float]]] = []
    run: list[tuple[float, float]] = []
    for px, py in points:
        if py is None or not math.isfinite(py):
            if run:
                runs.append(run)
            run = []
        else:
            run.append((px, py))
    if run:
        runs.append(run)
    return runs


def lines_chart(
    series: Sequence[tuple[str, Sequence[XY]]],
    unit: str,
    *,
    label: str = "",
    x_start: float = 0.0,
    x_end: float | None = None,
    x_unit: str = "s",
    y_max: float | None = None,
    highlight: str | None = None,
    width: int = 640,
    height: int = 180,
) -> str:
    """Several labelled lines on one numeric x axis (trace seconds, say), for comparing runs
    on the same axes: one `series` per (name, points), drawn in its own class (`s0`, `s1`, ...;
    `highlight` names the one in the accent colour) with a legend. A None value leaves a gap;
    a lone value is a dot. `y_max` fixes the top of the y axis (100 for a percentage)."""
    f = _Frame(width, height, top=18, bottom=24)
    title = f"{label} ({unit})" if unit else label
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart lines" viewBox="0 0 {width} '
        f'{height}" role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>'
    )
    ys = [v for _, pts in series for _, v in pts if v is not None and math.isfinite(v)]
    xs = [x for _, pts in series for x, _ in pts]
    if not ys:
        return (head + f'<text class="empty" x="{width / 2:.0f}" y="{height / 2:.0f}" '
                'text-anchor="middle">no data</text></svg>')  # fmt: skip
    x0 = x_start
    x1 = x_end if x_end is not None else max(xs, default=x0 + 1.0)
    span = x1 - x0 if x1 > x0 else 1.0
    lo, hi = 0.0, y_max if y_max is not None else _nice_ceil(max(ys))
    pw, ph = width - f.left - f.right, height - f.top - f.bottom

    def sx(v: float) -> float:
        return f.left + pw * min(max((v - x0) / span, 0.0), 1.0)

    def sy(v: float) -> float:
        return f.top + ph - ph * (min(max(v, lo), hi) - lo) / (hi - lo)

    out = [head, f'<rect class="plot" x="{f.left}" y="{f.top}" width="{pw}" height="{ph}"/>']
    for i in range(5):
        v = lo + (hi - lo) * i / 4
        out.append(f'<line class="grid" x1="{f.left}" x2="{f.left + pw}" y1="{sy(v):.1f}" '
                   f'y2="{sy(v):.1f}"/><text class="axis" x="{f.left - 4}" y="{sy(v) + 3:.1f}" '
                   f'text-anchor="end">{escape(fmt_num(v))}</text>')  # fmt: skip
    for frac, anchor in ((0.0, "start"), (0.5, "middle"), (1.0, "end")):
        tick = escape(f"{fmt_num(x0 + span * frac)} {x_unit}")
        out.append(f'<text class="axis" x="{f.left + pw * frac:.1f}" y="{height - 8}" '
                   f'text-anchor="{anchor}">{tick}</text>')  # fmt: skip
    lx = f.left + pw
    for n, (name, _) in reversed(list(enumerate(series))):  # legend, right-aligned
        cls = f"series s{n}" + (" hl" if name == highlight else "")
        text = escape(name)
        out.append(f'<text class="legend {cls}" x="{lx:.0f}" y="12" '
                   f'text-anchor="end">{text}</text>')  # fmt: skip
        lx -= 7 * len(name) + 26
        out.append(f'<line class="{cls}" x1="{lx + 4:.0f}" x2="{lx + 16:.0f}" y1="8" y2="8"/>')
    for n, (name, pts) in enumerate(series):
        cls = f"series s{n}" + (" hl" if name == highlight else "")
        attrs = f'class="{cls}" data-series="{escape(name)}"'
        parts = [f"<g {attrs}><title>{escape(name)}</title>"]
        for run in _xy_runs(pts):
            if len(run) == 1:
                parts.append(f'<circle cx="{sx(run[0][0]):.1f}" cy="{sy(run[0][1]):.1f}" r="2"/>')
            else:
                coords = " ".join(f"{sx(a):.1f},{sy(b):.1f}" for a, b in run)
                parts.append(f'<polyline points="{coords}"/>')
        parts.append("</g>")
        out.append("".join(parts))
    out.append("</svg>")
    return "".join(out)
