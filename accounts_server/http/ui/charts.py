"""The dashboard's charts: counts per hour laid out as bars of an SVG drawn by a template
(`_chart.html`), so the page needs no script and no chart library, and the operator's
templates can restyle it. Geometry only; the template escapes every label."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["Chart", "hourly_chart"]

WIDTH, HEIGHT = 720.0, 160.0
#: Room for the axis labels: left for the counts, below for the days.
LEFT, BOTTOM, TOP = 36.0, 22.0, 8.0


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    #: What a pointer over the bar shows (`<title>`): the hour and its count.
    label: str


@dataclass(frozen=True, slots=True)
class Tick:
    at: float
    label: str


@dataclass(frozen=True, slots=True)
class Chart:
    key: str
    title: str
    total: int
    peak: int
    bars: tuple[Bar, ...]
    #: Midnights (lines) and the days' names along the bottom, the count scale up the side.
    midnights: tuple[float, ...]
    days: tuple[Tick, ...]
    levels: tuple[Tick, ...]
    width: float = WIDTH
    height: float = HEIGHT
    left: float = LEFT
    base: float = HEIGHT - BOTTOM


def hourly_chart(
    key: str, title: str, counts: Sequence[int], *, since: datetime, step: timedelta
) -> Chart:
    """Bars for `counts[i]` at `since + i * step`, scaled to the largest (a chart of zeros
    stays flat: nothing is scaled up from nothing)."""
    peak = max(counts, default=0)
    scale = _ceiling(peak)
    room = WIDTH - LEFT
    slot = room / max(len(counts), 1)
    base = HEIGHT - BOTTOM
    tall = base - TOP
    bars = tuple(
        Bar(
            x=round(LEFT + i * slot, 2),
            y=round(base - tall * n / scale, 2),
            width=round(max(slot - 1, 1), 2),
            height=round(tall * n / scale, 2),
            label=f"{(since + i * step):%a %d %b %H:00}: {n}",
        )
        for i, n in enumerate(counts)
        if n
    )
    days = tuple(_day_labels(since, step, len(counts), slot))
    levels = tuple(Tick(at=round(base - tall * v / scale, 2), label=str(v)) for v in (0, scale))
    midnights = tuple(
        round(LEFT + i * slot, 2) for i in range(len(counts)) if (since + i * step).hour == 0
    )
    return Chart(key, title, sum(counts), peak, bars, midnights, days, levels)


def _day_labels(since: datetime, step: timedelta, count: int, slot: float) -> list[Tick]:
    """A mark at each midnight and each day's name centred on the part of it shown (left
    out where under 40 units of it are)."""
    starts = [i for i in range(count) if (since + i * step).hour == 0]
    labels = []
    for first, end in zip([0, *starts], [*starts, count], strict=True):
        if (end - first) * slot >= 40:
            middle = LEFT + (first + end) / 2 * slot
            labels.append(Tick(at=round(middle, 2), label=f"{(since + first * step):%a %d}"))
    return labels


def _ceiling(peak: int) -> int:
    """A round top for the scale: 1, 2, 5, 10, 20, 50, ... at or above `peak`."""
    top = 1
    while True:
        for factor in (1, 2, 5):
            if top * factor >= peak:
                return top * factor
        top *= 10
