"""Bar charts as plain geometry for server-rendered SVG (``web/templates/charts.html`` draws them).

No chart library and no script: the report must print as it shows. The numbers here are SVG user units in a
fixed view box that the page scales; every bar and axis is drawn in ``currentColor``, so a print stylesheet that
sets black on white gets a black-on-white chart. Two series are told apart by fill (solid) and outline (hollow),
not by colour, which a black-and-white printer would lose.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

WIDTH, HEIGHT = 720, 260
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 28, 52  # room for the y labels, the legend and the x labels with the axis title
MAX_X_LABELS = 12


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str  # the category and the value, shown as a tooltip and read by screen readers


@dataclass(frozen=True)
class Series:
    name: str
    style: str  # "solid" | "outline"
    bars: tuple[Bar, ...]


@dataclass(frozen=True)
class Chart:
    title: str
    x_title: str
    y_title: str
    series: tuple[Series, ...]
    y_ticks: tuple[tuple[float, str], ...]  # (y, label)
    x_labels: tuple[tuple[float, str], ...]  # (x at the middle of the category, label)
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    top: int = TOP
    bottom: float = HEIGHT - BOTTOM  # y of the x axis
    right: float = WIDTH - RIGHT


def nice_step(largest: int, ticks: int = 5) -> int:
    """A tick step of 1, 2 or 5 times a power of ten, giving at most *ticks* steps up to *largest*."""
    if largest <= ticks:
        return 1
    raw = largest / ticks
    power = 10 ** math.floor(math.log10(raw))
    return int(next(m * power for m in (1, 2, 5, 10) if m * power >= raw))


def bar_chart(title: str, categories: Sequence[str], series: Sequence[tuple[str, Sequence[int]]],
              x_title: str, y_title: str) -> Chart:
    """Grouped bars: one group per category, one bar per series (the first solid, the others outlined)."""
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    largest = max([0, *(v for _, values in series for v in values)])
    step = nice_step(largest)
    top_value = max(step, math.ceil(largest / step) * step)
    slot = plot_width / max(1, len(categories))
    bar_width = slot * 0.8 / max(1, len(series))
    drawn = []
    for index, (name, values) in enumerate(series):
        bars = []
        for n, (category, value) in enumerate(zip(categories, values, strict=True)):
            height = plot_height * value / top_value
            bars.append(Bar(x=round(LEFT + n * slot + slot * 0.1 + index * bar_width, 2),
                            y=round(TOP + plot_height - height, 2), width=round(max(bar_width - 0.5, 0.5), 2),
                            height=round(height, 2), title=f"{category}: {value} {name.lower()}"))
        drawn.append(Series(name, "solid" if index == 0 else "outline", tuple(bars)))
    every = max(1, math.ceil(len(categories) / MAX_X_LABELS))
    x_labels = tuple((round(LEFT + (n + 0.5) * slot, 2), label)
                     for n, label in enumerate(categories) if n % every == 0)
    y_ticks = tuple((round(TOP + plot_height - plot_height * v / top_value, 2), str(v))
                    for v in range(0, top_value + 1, step))
    return Chart(title, x_title, y_title, tuple(drawn), y_ticks, x_labels)
