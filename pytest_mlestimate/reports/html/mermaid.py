"""The per-module time of each scenario as a mermaid bar chart, for the GitHub job summary: GitHub renders
mermaid blocks in Markdown but no inline SVG or data URIs. Plain text, no matplotlib."""

from __future__ import annotations

from typing import Any

from pytest_mlestimate.reports.html.read import breakdown, parts, time_scale

MOST_BARS = 12
"""Modules drawn by name; the rest are summed into one bar, so that a deep breakdown stays readable."""


def _label(text: str, most: int = 40) -> str:
    return '"' + text.replace('"', "'").replace("\n", " ")[:most] + '"'


def module_times(record: dict[str, Any]) -> tuple[str, list[tuple[str, float]]] | None:
    """What the chart shows: a training step's forward + backward per module, else a batch's inference."""
    found = parts(breakdown(record))
    trained = [(p.module, (p.forward_s or 0.0) + (p.backward_s or 0.0)) for p in found if p.forward_s is not None]
    if trained:
        return "training step (forward + backward)", trained
    inferred = [(p.module, p.inference_s) for p in found if p.inference_s is not None]
    return ("batch inference", inferred) if inferred else None  # type: ignore[return-value]


def breakdown_chart(record: dict[str, Any]) -> str:
    """A ``<details>`` block with the chart, or "" when the scenario has no breakdown."""
    found = module_times(record)
    if found is None:
        return ""
    what, times = found
    if len(times) > MOST_BARS:
        kept = sorted(times, key=lambda item: item[1], reverse=True)[: MOST_BARS - 1]
        rest = sum(t for _, t in times) - sum(t for _, t in kept)
        times = [item for item in times if item in kept] + [("other modules", rest)]
    factor, unit = time_scale(max(t for _, t in times) or 1.0)
    name = str(record.get("name"))
    lines = [
        "",
        f"<details><summary>{name.replace('<', '&lt;')}: time per module, {what}</summary>",
        "",
        "```mermaid",
        "xychart-beta",
        f"    title {_label(f'{what} per module, {unit}', 80)}",
        f"    x-axis [{', '.join(_label(module) for module, _ in times)}]",
        f'    y-axis "{unit}"',
        f"    bar [{', '.join(f'{t / factor:.3g}' for _, t in times)}]",
        "```",
        "",
        "</details>",
    ]
    return "\n".join(lines)


def breakdown_charts(records: list[dict[str, Any]]) -> list[str]:
    """The job summary's lines: one chart per scenario with a breakdown."""
    return [chart for record in records if (chart := breakdown_chart(record))]
