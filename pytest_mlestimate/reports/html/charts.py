"""The report's charts, drawn with matplotlib as inline SVG: text stays text (``svg.fonttype: none``), so a
chart is small, sharp at any zoom and searchable in the page.

matplotlib is the ``html`` extra and loads only here, only when a page is rendered; figures are made with
``matplotlib.figure.Figure`` directly, so no pyplot state and no GUI backend is ever touched.

Drawing is what a page costs, so each chart is laid out once, by ``layout.arrange``: the margins come from the
measured width of the tick labels, titles and legend it holds, instead of matplotlib's constrained layout,
which draws every tick and text a second time to find them (about half of a chart's time). A timing keeps at
most ``MAX_DOTS`` dots, and a timeline's module spans are one collection per phase.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from pytest_mlestimate.core.metrics import METRIC
from pytest_mlestimate.core.units import format_quantity
from pytest_mlestimate.reports.html.layout import FONT_SIZE, arrange, short
from pytest_mlestimate.reports.html.read import (
    LABELS,
    BudgetBar,
    Distribution,
    Part,
    Timeline,
    byte_scale,
    folded,
    scale_for,
    time_scale,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

INSTALL_HINT = "pip install 'pytest-mlestimate[html]'"

VERDICT_COLOURS = {True: "#1a7f37", False: "#cf222e", None: "#8c959f"}
FORWARD, BACKWARD, INFERENCE, OTHER, OPTIMIZER = "#4c78a8", "#f58518", "#54a24b", "#bab0ac", "#b279a2"
INK, FAINT = "#24292f", "#57606a"
WIDTH = 7.5
"""Inches; the page scales each chart to its column."""
MAX_DOTS = 100
"""Dots a timing's chart draws: of more samples, the ones at evenly spaced ranks (the fastest and the slowest
among them); the box, the median and the count are still of every sample."""

_STYLE = {
    "svg.fonttype": "none",
    "font.family": "sans-serif",
    "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"],
    "font.size": FONT_SIZE,
    "axes.titlesize": 10,
    "axes.titleweight": "bold",
    "axes.titlelocation": "left",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": FAINT,
    "axes.labelcolor": INK,
    "xtick.color": FAINT,
    "ytick.color": INK,
    "path.simplify": True,
}
_PLAIN_ID = re.compile(r' id="[A-Za-z][\w.]*_\d+"')
"""matplotlib's readable element ids (figure_1, axes_1, ...) repeat in every chart of a page; its hashed ids
(clip paths, markers) are what references use, and are salted per chart below."""


def _horizontal() -> dict[str, Any]:
    """matplotlib 3.10 renamed ``vert=False`` to ``orientation="horizontal"`` and deprecates the old name."""
    import inspect

    from matplotlib.axes import Axes

    return (
        {"orientation": "horizontal"}
        if "orientation" in inspect.signature(Axes.boxplot).parameters
        else {"vert": False}
    )


class MissingExtraError(ImportError):
    """The HTML report needs matplotlib, which the ``html`` extra installs."""


def matplotlib_missing() -> bool:
    """Whether matplotlib cannot be imported, found without importing it (a run checks before it measures)."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is None


def require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(f"the HTML report draws its charts with matplotlib: {INSTALL_HINT}") from exc


@contextmanager
def _style(salt: str) -> Iterator[None]:
    import matplotlib

    with matplotlib.rc_context({**_STYLE, "svg.hashsalt": salt}):
        yield


def _svg(figure: Figure) -> str:
    """The figure as an ``<svg>`` element for an HTML page: no XML prolog, no DOCTYPE (whose address is a
    URL), no namespace declarations (HTML parses inline SVG without them) and no metadata."""
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", metadata={"Creator": None, "Date": None, "Format": None, "Type": None})
    text = buffer.getvalue()
    text = text[text.index("<svg") :]
    text = re.sub(r'\s+xmlns(:xlink)?="[^"]*"', "", text, count=2)
    text = _PLAIN_ID.sub("", text)
    return text.replace("<svg ", '<svg role="img" ', 1)


def _figure(height: float, rows: int = 1, height_ratios: list[int] | None = None) -> tuple[Figure, list[Axes]]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(WIDTH, height))
    axes = figure.subplots(rows, 1, squeeze=False, height_ratios=height_ratios).ravel().tolist()
    return figure, axes


def drawn(salt: str, draw: Callable[[], Figure]) -> str:
    with _style(salt):
        return _svg(draw())


def _unit_ticks(axis: Any, unit: str, *, signed: bool = False) -> None:
    from matplotlib.ticker import FuncFormatter

    pattern = "{:+g} {}" if signed else "{:g} {}"
    axis.set_major_formatter(FuncFormatter(lambda value, _: pattern.format(value, unit).rstrip()))


# --------------------------------------------------------------------------------------------- budgets
def budgets_chart(bars: list[BudgetBar], salt: str) -> str:
    """One row per budget, each on its own scale: the measured value as a bar coloured by its verdict, the
    limit as a black line, the baseline (where compared) as a diamond."""

    def draw() -> Figure:
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch

        figure, axes = _figure(0.7 + 0.55 * len(bars), rows=len(bars))
        for ax, bar in zip(axes, bars, strict=True):
            dimension = METRIC[bar.metric].unit
            known = [abs(v) for v in (bar.limit, bar.value, bar.baseline) if v is not None]
            factor, unit = scale_for(dimension, max(known) or 1.0)
            colour = VERDICT_COLOURS[bar.passed]
            if bar.value is not None:
                ax.barh(0, bar.value / factor, height=0.56, color=colour)
                verdict = {True: "ok", False: "BROKEN"}[bool(bar.passed)] if bar.passed is not None else "not checked"
                text = f"{format_quantity(bar.value, dimension)}{' (predicted)' if bar.predicted else ''}  {verdict}"
                if bar.value >= 0.55 * max(known):  # a long bar holds its own label, clear of the limit line
                    ax.text(
                        bar.value / factor, 0, text + " ", va="center", ha="right", color="white", fontweight="bold"
                    )
                else:
                    ax.text(bar.value / factor, 0, " " + text, va="center", ha="left", color=colour, fontweight="bold")
            else:
                ax.text(0, 0, " not measured here: not checked", va="center", ha="left", color=FAINT)
            ax.axvline(bar.limit / factor, color=INK, linewidth=2.2)
            if bar.limit >= 0.5 * max(known):
                ax.text(
                    bar.limit / factor, 0.5, f"limit {bar.limit_text} ", ha="right", va="bottom", color=INK, fontsize=8
                )
            else:  # a limit near zero writes its text rightwards, not off the chart's left edge
                ax.text(
                    bar.limit / factor, 0.5, f" limit {bar.limit_text}", ha="left", va="bottom", color=INK, fontsize=8
                )
            if bar.baseline is not None:
                ax.plot([bar.baseline / factor], [0], marker="D", color=INK, markerfacecolor="white", markersize=7)
            ax.set_xlim(0, max(known) / factor * 1.35 or 1.0)
            ax.set_ylim(-0.55, 0.95)
            ax.set_yticks([0], [LABELS.get(bar.metric, bar.metric)])
            ax.tick_params(axis="y", length=0, labelsize=9)
            ax.spines["left"].set_visible(False)
            _unit_ticks(ax.xaxis, unit)
        handles = [
            Patch(color=VERDICT_COLOURS[True], label="measured, within budget"),
            Patch(color=VERDICT_COLOURS[False], label="measured, budget broken"),
            Line2D([], [], color=INK, linewidth=2.2, label="limit"),
        ]
        if any(b.baseline is not None for b in bars):
            handles.append(
                Line2D([], [], linestyle="", marker="D", color=INK, markerfacecolor="white", label="baseline")
            )
        figure.legend(handles=handles, loc="upper right", ncols=len(handles), frameon=False, fontsize=8)
        arrange(figure, axes, legend_rows=1)
        return figure

    return drawn(salt, draw)


# ------------------------------------------------------------------------------------------ step times
def _dots(values: Any, most: int = MAX_DOTS) -> Any:
    """At most ``most`` of ``values``: those at evenly spaced ranks, the smallest and the largest included."""
    import numpy

    if len(values) <= most:
        return values
    ranks = numpy.round(numpy.linspace(0, len(values) - 1, most)).astype(int)
    return numpy.sort(values)[ranks]


def _spread(ax: Axes, rows: list[Distribution], title: str) -> None:
    import numpy

    largest = max([max(r.samples, default=0.0) for r in rows] + [r.p90 or r.median or 0.0 for r in rows])
    factor, unit = time_scale(largest or 1.0)
    jitter = numpy.random.default_rng(0)
    horizontal = _horizontal()
    labels = []
    for y, row in enumerate(rows):
        if row.samples:
            values = numpy.asarray(row.samples) / factor
            if len(values) >= 5:
                ax.boxplot(
                    values,
                    positions=[y],
                    **horizontal,
                    widths=0.5,
                    showfliers=False,
                    medianprops={"color": INK, "linewidth": 2},
                    boxprops={"color": FAINT},
                    whiskerprops={"color": FAINT},
                    capprops={"color": FAINT},
                )
            dots = _dots(values)
            ax.scatter(dots, y + jitter.uniform(-0.16, 0.16, len(dots)), s=14, color=FORWARD, alpha=0.7, lw=0)
            middle = float(numpy.median(values))
            count = f"{len(values)} sample{'s' if len(values) != 1 else ''}"
            count += f", {len(dots)} drawn" if len(dots) < len(values) else ""
        else:  # only the summary is known: p10 to p90, and the median
            low, high = (row.p10 or row.median or 0.0) / factor, (row.p90 or row.median or 0.0) / factor
            ax.barh(y, high - low, left=low, height=0.4, color=FORWARD, alpha=0.35)
            middle = (row.median or 0.0) / factor
            ax.plot([middle, middle], [y - 0.25, y + 0.25], color=INK, linewidth=2)
            count = "p10 to p90"
        labels.append(f"{row.label}\nmedian {format_quantity(middle * factor, 'seconds')}, {count}")
    ax.set_yticks(range(len(rows)), labels)
    ax.set_ylim(len(rows) - 0.4, -0.6)
    ax.set_xlim(left=0)
    ax.set_title(title)
    _unit_ticks(ax.xaxis, unit)


def distribution_chart(groups: list[tuple[str, list[Distribution]]], salt: str) -> str:
    """Each timing's samples as dots over a box (median, quartiles, whiskers to 1.5 IQR), one panel per
    phase group so that a millisecond inference is not drawn on a training step's scale."""

    def draw() -> Figure:
        heights = [len(rows) for _, rows in groups]
        figure, axes = _figure(0.3 + 0.42 * sum(heights) + 0.45 * len(groups), rows=len(groups), height_ratios=heights)
        for ax, (title, rows) in zip(axes, groups, strict=True):
            _spread(ax, rows, title)
        arrange(figure, axes)
        return figure

    return drawn(salt, draw)


# -------------------------------------------------------------------------------------------- timeline
PHASE_NAMES = {"forward_end_s": "forward ends", "backward_end_s": "backward ends", "end_s": "step ends"}
SERIES_NAMES = {"rss": "resident memory (RSS)", "allocated": "allocated by PyTorch", "reserved": "reserved by PyTorch"}


def timeline_chart(found: Timeline, salt: str) -> str:
    """Memory through one instrumented step: a line per series, each module's forward and backward as a
    shaded span labelled with its name, the phase ends as dashed lines."""

    def draw() -> Figure:
        from matplotlib.patches import Patch
        from matplotlib.transforms import blended_transform_factory

        figure, (ax,) = _figure(3.3)
        end = max([found.t_s[-1], *(m[3] for m in found.marks), *found.phases.values()])
        t_factor, t_unit = time_scale(end or 1.0)
        values_all = [v for values in found.series.values() for v in values]
        top, bottom = max(values_all), min(values_all)
        base = bottom if top - bottom < 0.05 * top else 0.0  # a flat line is read as its change, not its level
        factor, unit = byte_scale(top - base)
        times = [t / t_factor for t in found.t_s]
        for index, (name, values) in enumerate(found.series.items()):
            label = f"{SERIES_NAMES.get(name, name)}, peak {format_quantity(max(values), 'bytes')}"
            colour = (INK, FORWARD, BACKWARD)[index % 3]
            ax.plot(times, [(v - base) / factor for v in values], color=colour, linewidth=1.8, label=label)
        if base:
            ax.set_ylabel(f"above {format_quantity(base, 'bytes')}")
        span_text = blended_transform_factory(ax.transData, ax.transAxes)
        for colour, backward in ((FORWARD, False), (BACKWARD, True)):  # one collection a phase, not an artist a span
            spans = [(a / t_factor, (b - a) / t_factor) for _, p, a, b in found.marks if (p == "backward") == backward]
            if spans:
                ax.broken_barh(spans, (0, 1), transform=span_text, color=colour, alpha=0.14, linewidth=0)
        for module, _, start, stop in found.marks:
            if (stop - start) >= 0.025 * (end or 1.0):
                ax.text(
                    (start + stop) / 2 / t_factor,
                    0.97,
                    module,
                    transform=span_text,
                    rotation=90,
                    ha="center",
                    va="top",
                    fontsize=7,
                    color=INK,
                    clip_on=True,
                )
        for key, label in PHASE_NAMES.items():
            if key in found.phases:
                at = found.phases[key] / t_factor
                ax.axvline(at, color=FAINT, linestyle="--", linewidth=1)
                ax.text(at, 0.02, f" {label}", transform=span_text, rotation=90, va="bottom", fontsize=7, color=FAINT)
        ax.margins(y=0.25)
        ax.set_xlim(0, end / t_factor if end else None)
        _unit_ticks(ax.xaxis, t_unit)
        _unit_ticks(ax.yaxis, unit, signed=bool(base))
        ax.set_xlabel("time since the step started")
        handles, _ = ax.get_legend_handles_labels()
        handles += [
            Patch(color=FORWARD, alpha=0.3, label="forward of a module"),
            Patch(color=BACKWARD, alpha=0.3, label="backward of a module"),
        ]
        figure.legend(handles=handles, loc="upper left", fontsize=8, frameon=False, ncols=2)
        arrange(figure, [ax], legend_rows=(len(handles) + 1) // 2)
        return figure

    return drawn(salt, draw)


# ------------------------------------------------------------------------------------------- breakdown
def _stacked(ax: Axes, rows: list[tuple[str, list[tuple[float, str]]]], title: str, total_note: str) -> None:
    largest = max((sum(v for v, _ in pieces) for _, pieces in rows), default=0.0)
    factor, unit = time_scale(largest or 1.0)
    bars: list[tuple[int, float, float, str]] = []  # one barh call a panel: a call per piece costs more
    for y, (_, pieces) in enumerate(rows):
        left = 0.0
        for value, colour in pieces:
            bars.append((y, value / factor, left, colour))
            left += value / factor
        ax.text(left, y, f" {format_quantity(left * factor, 'seconds')}", va="center", fontsize=8, color=INK)
    if bars:
        ys, widths, lefts, colours = zip(*bars, strict=True)
        ax.barh(ys, widths, left=lefts, height=0.62, color=colours)
    ax.set_yticks(range(len(rows)), [short(label) for label, _ in rows])
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlim(0, largest / factor * 1.18 if largest else 1.0)
    ax.set_title(title)
    ax.set_title(total_note, loc="right", fontsize=8, fontweight="normal", color=FAINT)
    ax.tick_params(axis="y", length=0)
    _unit_ticks(ax.xaxis, unit)


def breakdown_chart(
    parts: list[Part], training: dict[str, Any] | None, inference: dict[str, Any] | None, salt: str
) -> str:
    """Time per module: forward and backward stacked per module over a training step, then the step's work
    outside the modules; and, where measured, each module's share of a batch's inference."""
    from pytest_mlestimate.reports.html.read import number

    panels: list[tuple[str, list[tuple[str, list[tuple[float, str]]]], str]] = []
    trained = folded(
        [p for p in parts if p.forward_s is not None or p.backward_s is not None],
        lambda p: (p.forward_s or 0.0) + (p.backward_s or 0.0),
    )
    if trained:
        rows = [(p.module, [(p.forward_s or 0.0, FORWARD), (p.backward_s or 0.0, BACKWARD)]) for p in trained]
        training = training or {}
        extra = (
            ("other forward work", "forward_other_s", FORWARD),
            ("other backward work", "backward_other_s", BACKWARD),
            ("optimizer step", "optimizer_s", OPTIMIZER),
        )
        rows += [(label, [(v, colour)]) for label, key, colour in extra if (v := number(training.get(key)))]
        step, headline = number(training.get("step_s")), number(training.get("headline_step_s"))
        note = []
        if step is not None:
            note.append(f"instrumented step {format_quantity(step, 'seconds')}")
        if headline is not None:
            note.append(f"without hooks {format_quantity(headline, 'seconds')}")
        panels.append(("training step, per module", rows, ", ".join(note)))
    inferred = folded([p for p in parts if p.inference_s is not None], lambda p: p.inference_s or 0.0)
    if inferred:
        rows = [(p.module, [(p.inference_s or 0.0, INFERENCE)]) for p in inferred]
        inference = inference or {}
        if other := number(inference.get("other_s")):
            rows.append(("outside the modules", [(other, OTHER)]))
        batch = number(inference.get("batch_s"))
        panels.append(
            ("inference of one batch, per module", rows, f"batch {format_quantity(batch, 'seconds')}" if batch else "")
        )

    def draw() -> Figure:
        from matplotlib.patches import Patch

        heights = [len(rows) for _, rows, _ in panels]
        figure, axes = _figure(0.6 + 0.3 * sum(heights) + 0.55 * len(panels), rows=len(panels), height_ratios=heights)
        for ax, (title, rows, note) in zip(axes, panels, strict=True):
            _stacked(ax, rows, title, note)
        legend = [(FORWARD, "forward"), (BACKWARD, "backward"), (OPTIMIZER, "optimizer"), (INFERENCE, "inference")]
        used = {colour for _, rows, _ in panels for _, pieces in rows for _, colour in pieces}
        handles = [Patch(color=c, label=label) for c, label in legend if c in used]
        figure.legend(handles=handles, loc="upper right", ncols=len(handles), frameon=False, fontsize=8)
        arrange(figure, axes, legend_rows=1)
        return figure

    return drawn(salt, draw)


SPLIT_COLOURS = ("#4c78a8", "#f58518", "#b279a2", "#e45756", "#bab0ac")


def _share(fraction: float) -> str:
    return "< 0.1 %" if 0 < fraction < 0.001 else f"{fraction:.1%}".replace("%", " %")


def memory_chart(split: list[tuple[str, float]], whole: float | None, saved: list[tuple[str, float]], salt: str) -> str:
    """What the peak memory is made of (each part with its share of the whole), and per module the tensors
    saved for backward."""

    def draw() -> Figure:
        panels = [p for p in (split, saved) if p]
        figure, axes = _figure(
            0.5 + 0.3 * sum(len(p) for p in panels) + 0.5 * len(panels),
            rows=len(panels),
            height_ratios=[len(p) for p in panels],
        )
        for ax, rows in zip(axes, panels, strict=True):
            largest = max(v for _, v in rows)
            factor, unit = byte_scale(largest or 1.0)
            colours = [FORWARD if rows is saved else SPLIT_COLOURS[y % 5] for y in range(len(rows))]
            ax.barh(range(len(rows)), [v / factor for _, v in rows], height=0.62, color=colours)
            for y, (_, value) in enumerate(rows):
                share = f" ({_share(value / whole)} of the peak)" if whole and rows is split else ""
                ax.text(value / factor, y, f" {format_quantity(value, 'bytes')}{share}", va="center", fontsize=8)
            ax.set_yticks(range(len(rows)), [short(label) for label, _ in rows])
            ax.set_ylim(len(rows) - 0.5, -0.5)
            ax.set_xlim(0, largest / factor * 1.45 if largest else 1.0)
            ax.tick_params(axis="y", length=0)
            _unit_ticks(ax.xaxis, unit)
            ax.set_title("peak memory, split" if rows is split else "tensors saved for backward, per module")
        arrange(figure, axes)
        return figure

    return drawn(salt, draw)
