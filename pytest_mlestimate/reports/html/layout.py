"""Where a chart's axes go: margins measured from the text each chart holds, without drawing it.

matplotlib's constrained layout finds the same margins by drawing every tick and text once more before the
chart is drawn, about half of a chart's time; here the tick labels are read from each axis's locator and
formatter and measured with the font, and the titles, legend rows and axis labels add fixed heights. Called
inside ``charts``' style, with matplotlib loaded.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PT = 1 / 72
"""An inch per point."""
FONT_SIZE = 9.0
"""The charts' ``font.size``."""


@functools.lru_cache(maxsize=4096)
def _text_size(text: str, size: float, bold: bool = False) -> tuple[float, float]:
    """Width and height in inches of ``text`` (lines stacked) in the charts' font (called in their style)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import text_to_path

    prop = FontProperties(family="sans-serif", size=size, weight="bold" if bold else "normal")
    lines = text.split("\n")
    width = max(text_to_path.get_text_width_height_descent(line, prop, ismath=False)[0] for line in lines)
    return width * PT, len(lines) * size * 1.2 * PT


def _tick_texts(axis: Any) -> list[str]:
    """The tick labels an axis will show, found without making its ticks (which drawing does)."""
    low, high = sorted(axis.get_view_interval())
    locations = [
        v for v in axis.get_major_locator()() if low - 1e-9 * abs(high - low) <= v <= high + 1e-9 * abs(high - low)
    ]
    return [str(t) for t in axis.get_major_formatter().format_ticks(locations)] if locations else []


def arrange(figure: Figure, axes: list[Axes], legend_rows: int = 0) -> None:
    """Margins from what the axes hold: the widest tick label on the left, the titles and the figure's legend
    above, the tick labels and axis labels below and between panels; each text measured, nothing drawn."""
    width, height = figure.get_size_inches()
    size = FONT_SIZE
    line = size * 1.2 * PT
    ticks = 7 * PT  # a tick and its pad
    titled = [bool(ax.get_title("left") or ax.get_title("right")) for ax in axes]
    title = 10 * 1.2 * PT + 6 * PT
    labels = [max((_text_size(t, size)[0] for t in _tick_texts(ax.yaxis)), default=0.0) for ax in axes]
    left = max(labels) + ticks + (line + 4 * PT if any(ax.get_ylabel() for ax in axes) else 0.0) + 6 * PT
    right = max((_text_size(t, size)[0] / 2 for ax in axes for t in _tick_texts(ax.xaxis)[-1:]), default=0.0)
    right = max(right + 4 * PT, 0.15)
    below = ticks + line + 2 * PT
    top = (legend_rows * 8 * 1.55 + 8) * PT if legend_rows else 6 * PT
    top += title if titled[0] else 0.0
    bottom = below + (line + 4 * PT if axes[-1].get_xlabel() else 0.0) + 4 * PT
    gap = below + 6 * PT + (title if any(titled[1:]) else 0.0)
    room = height - top - bottom - gap * (len(axes) - 1)
    left = min(left, 0.6 * width)
    figure.subplots_adjust(
        left=left / width,
        right=1 - right / width,
        top=1 - top / height,
        bottom=bottom / height,
        hspace=gap / max(room / len(axes), 0.05),
    )
    for ax in axes:
        inside = ax.get_position().width * width
        _fit_texts(ax, inside)
        title, note = ax.get_title("left"), ax.get_title("right")
        needs = _text_size(title, 10, bold=True)[0] + (_text_size(note, 8)[0] + 0.15 if note else 0.0)
        if title and needs > inside:  # a title wider than its panel starts at the chart's left edge
            ax.set_title(title, loc="left", x=(6 * PT - left) / inside)


def _fit_texts(ax: Axes, inside: float) -> None:
    """Widen the x axis so that a label written rightwards from a bar's end (data coordinates) ends inside
    the panel, ``inside`` inches wide."""
    low, high = ax.get_xlim()
    wanted = high
    for text in ax.texts:
        if text.get_transform() is not ax.transData or text.get_horizontalalignment() != "left" or text.get_rotation():
            continue
        bold = text.get_fontweight() in ("bold", 700)
        room = inside - _text_size(text.get_text(), float(text.get_fontsize()), bold=bold)[0] - 4 * PT
        if room > 0.2 * inside:  # else no axis is wide enough: leave it
            wanted = max(wanted, low + (text.get_position()[0] - low) * inside / room)
    if wanted > high:
        ax.set_xlim(low, wanted)


def short(label: str, most: int = 60) -> str:
    """A label of at most ``most`` characters: a longer one keeps its start and its end."""
    return label if len(label) <= most else f"{label[: most // 2 - 1]}...{label[-(most - most // 2 - 2) :]}"
