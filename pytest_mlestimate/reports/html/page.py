"""One self-contained HTML page from a JSON report: an overview of every scenario first, then a section
per scenario with its figures, budgets, step times, memory timeline, per-module breakdown, environment and
warnings. Styles and charts are inline; nothing is fetched, so the file opens offline as a CI artifact.

Drawing the charts is what a page costs (about a fifth of a second a scenario), so a page draws them for at
most ``MOST_CHARTED`` scenarios: the ones a reader needs first (failed, errored, a budget or regression check
broken), then the rest in order. Every other scenario keeps its section with its verdict, message, figures,
budgets (as a table), environment and warnings, and the page says how many were left without charts and why.

The markup is in ``templates/``; this module reads what each section shows out of the report. The templates
escape every value they are given, so text from a report (a scenario's name, a message, a module's name)
can never become markup; the one exception is a chart's SVG, which matplotlib writes (escaping the text in
it) and which is marked as markup where it is drawn."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pytest_mlestimate.core.metrics import ESTIMATE_METRICS
from pytest_mlestimate.core.units import format_quantity
from pytest_mlestimate.reports.html import charts
from pytest_mlestimate.reports.html.read import (
    INFERENCE_TIMES,
    LABELS,
    SHORT_LABELS,
    TRAINING_TIMES,
    breakdown,
    budget_bars,
    details,
    dig,
    distributions,
    environment,
    folded,
    memory_split,
    metric_value,
    number,
    outcome,
    overview_metrics,
    parts,
    section,
    shown,
    timeline,
    warnings,
)
from pytest_mlestimate.reports.terminal import budget_counts

if TYPE_CHECKING:
    import jinja2
    from markupsafe import Markup

TITLE = "pytest-mlestimate report"
NOT_MEASURED = "not measured"
MOST_CHARTED = 50
"""Scenarios a page draws charts for: on a 2-core CPU, a page of 300 scenarios with every chart takes about 60 s
and 23 MiB; with charts for 50, about 10 s and 5 to 6 MiB, which a browser opens comfortably."""

OUTCOME_WORDS = {"passed": "passed", "failed": "failed", "error": "error", "skipped": "skipped", "not run": "not run"}


@functools.cache
def _templates() -> jinja2.Environment:
    """Jinja2 comes with the ``html`` extra (and with torch); it loads only when a page is rendered."""
    try:
        import jinja2
    except ImportError as exc:
        raise charts.MissingExtraError(f"the HTML report is laid out with Jinja2: {charts.INSTALL_HINT}") from exc
    templates = jinja2.Environment(
        loader=jinja2.PackageLoader("pytest_mlestimate.reports.html", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    templates.globals.update(TITLE=TITLE, NOT_MEASURED=NOT_MEASURED, OUTCOME_WORDS=OUTCOME_WORDS)
    return templates


def _records(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    if not isinstance(report, Mapping) or not isinstance(report.get("scenarios"), list):
        raise ValueError(
            "not a pytest-mlestimate JSON report: it has no 'scenarios' list (--mlestimate-json writes one)"
        )
    return [r for r in report["scenarios"] if isinstance(r, dict)]


def _first_line(text: Any, limit: int = 140) -> str:
    line = next((s for s in str(text or "").strip().splitlines() if s.strip()), "")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _environment_line(env: Mapping[str, Any]) -> str:
    pieces = [
        env.get("gpu") or (f"CPU {env['cpu']}" if env.get("cpu") else None),
        f"driver {env['driver']}" if env.get("driver") else None,
        f"{env['cpus']} CPUs" if env.get("cpus") else None,
        f"torch {env['torch']}" if env.get("torch") else None,
        f"torchvision {env['torchvision']}" if env.get("torchvision") else None,
        f"Python {env['python']}" if env.get("python") else None,
    ]
    return " · ".join(str(p) for p in pieces if p)


def _where(record: Mapping[str, Any]) -> str:
    return f"{record.get('file') or '?'}:{record.get('line') or '?'}"


# --------------------------------------------------------------------------------------------- overview
def _header(records: list[dict[str, Any]], report: Mapping[str, Any]) -> dict[str, Any]:
    counts = {name: sum(1 for r in records if outcome(r) == name) for name in OUTCOME_WORDS}
    env = report.get("environment") if isinstance(report.get("environment"), Mapping) else {}
    return {
        "scenarios": len(records),
        "counts": {name: count for name, count in counts.items() if count},
        "where": _environment_line(env),
    }


def _overview(records: list[dict[str, Any]], charted: set[int]) -> dict[str, Any]:
    metrics, missing = overview_metrics(records)
    rows = []
    for index, record in enumerate(records, 1):
        found = outcome(record)
        rows.append(
            {
                "index": index,
                "outcome": found,
                "name": str(record.get("name")),
                "where": _where(record),
                "figures": [shown(record, m) for m in metrics],
                "budgets": budget_counts(record),
                "why": _first_line(record.get("message")) if found in ("failed", "error", "skipped") else "",
                "thinned": index not in charted and not _measured_nothing(record),
            }
        )
    return {
        "headings": [SHORT_LABELS.get(m, LABELS[m]) for m in metrics],
        "rows": rows,
        "missing": ", ".join(LABELS[m] for m in missing),
    }


# --------------------------------------------------------------------------------------------- scenario
@dataclass(frozen=True)
class Chart:
    title: str
    svg: Markup | None = None
    error: str = ""
    """Why the chart could not be drawn, when ``svg`` is None."""


def _chart(draw: Callable[[], str], title: str) -> Chart:
    """A chart that cannot be drawn from odd data says so in its place; the rest of the page stands."""
    from markupsafe import Markup

    try:
        return Chart(title, Markup(draw()))  # matplotlib's SVG: trusted markup, its text escaped by matplotlib
    except charts.MissingExtraError:
        raise
    except Exception as exc:
        return Chart(title, error=repr(exc)[:300])


def _cards(record: dict[str, Any]) -> dict[str, Any]:
    broken = {b.metric for b in budget_bars(record) if b.passed is False}
    budgeted = {b.metric for b in budget_bars(record) if b.passed is True}
    cards: list[dict[str, str]] = []
    missing: list[str] = []
    step = number(dig(details(record), "timings", "step", "median"))
    for name in [*ESTIMATE_METRICS, "max_batch_size"]:
        value = metric_value(record, name)
        if value is None:
            if name != "max_batch_size":
                missing.append(LABELS[name])
            continue
        state = "broken" if name in broken else "ok" if name in budgeted else ""
        cards.append({"label": LABELS[name], "value": shown(record, name), "state": state})
        if name == "backward_pass" and step is not None:
            cards.append({"label": "training step (median)", "value": format_quantity(step, "seconds"), "state": ""})
    predicted = dig(record, "resource", "Predicted Peak GPU Memory")
    if isinstance(predicted, Mapping) and number(predicted.get("device")) is not None:
        state = "broken" if "peak_gpu_memory" in broken else "ok" if "peak_gpu_memory" in budgeted else ""
        value = format_quantity(number(predicted.get("device")), "bytes")
        label = f"peak GPU memory on {_first_line(predicted.get('gpu'), 40)} (predicted)"
        cards.append({"label": label, "value": value, "state": state})
    reason = details(record).get("gpu_unavailable")
    return {
        "cards": cards,
        "missing": ", ".join(missing),
        "why": str(reason) if reason and any("GPU" in m for m in missing) else "",
    }


def _budgets(record: dict[str, Any], salt: str | None) -> dict[str, Any] | None:
    """The budgets' chart (none where ``salt`` is None: a scenario drawn without charts) and their table."""
    bars = budget_bars(record)
    if not bars:
        return None
    rows = [
        {
            "label": LABELS.get(b.metric, b.metric),
            "measured": format_quantity(b.value, _dimension(b.metric)) + (" (predicted)" if b.predicted else ""),
            "limit": b.limit_text,
            "baseline": format_quantity(b.baseline, _dimension(b.metric)),
            "change": b.change_text,
            "passed": b.passed,
        }
        for b in bars
    ]
    chart = _chart(lambda: charts.budgets_chart(bars, salt), "budgets") if salt is not None else None
    return {"chart": chart, "rows": rows}


def _dimension(metric: str) -> str:
    from pytest_mlestimate.core.metrics import METRIC

    return METRIC[metric].unit


def _step_times(record: dict[str, Any], salt: str) -> Chart | None:
    groups = [
        (title, rows)
        for title, rows in (
            ("training", distributions(record, TRAINING_TIMES)),
            ("inference", distributions(record, INFERENCE_TIMES)),
        )
        if rows
    ]
    return _chart(lambda: charts.distribution_chart(groups, salt), "step times") if groups else None


def _timeline(record: dict[str, Any], salt: str) -> dict[str, Any] | None:
    found = timeline(record)
    if found is None:
        return None
    return {"chart": _chart(lambda: charts.timeline_chart(found, salt), "memory timeline"), "method": found.method}


def _method(text: Any) -> str:
    return text if isinstance(text, str) else ""


def _breakdown(record: dict[str, Any], salt: str) -> dict[str, Any]:
    found = breakdown(record)
    pieces = parts(found)
    if not found or not pieces:
        why = found.get("unavailable") if found else None
        return {"chart": None, "why": str(why) if why else ""}
    training, inference = section(found, "training"), section(found, "inference")
    drawn = _chart(lambda: charts.breakdown_chart(pieces, training, inference, salt + "t"), "breakdown")
    share = number((training or {}).get("remainder_share"))
    split = memory_split(found)
    with_saved = folded([p for p in pieces if p.activations_bytes], lambda p: p.activations_bytes or 0.0)
    saved = [(p.module, p.activations_bytes or 0.0) for p in with_saved]
    memory = section(found, "memory") or {}
    whole = number(memory.get("whole_bytes"))
    made_of, peak = None, None
    if split or saved:
        made_of = _chart(lambda: charts.memory_chart(split, whole, saved, salt + "m"), "memory split")  # type: ignore[arg-type]
        if memory.get("whole"):
            peak = {
                "whole": str(memory["whole"]),
                "bytes": format_quantity(whole, "bytes"),
                "measure": str(memory.get("measure") or ""),
                "rest_means": str(memory["rest_means"]) if memory.get("rest_means") else "",
            }
    return {
        "chart": drawn,
        "shift": f"{share:+.0%}" if share is not None and abs(share) >= 0.1 else "",
        "method": _method(found.get("method")),
        "memory": made_of,
        "peak": peak,
    }


def _environment(record: dict[str, Any]) -> dict[str, Any] | None:
    env = environment(record)
    if not env:
        return None
    device = details(record).get("device_name") or details(record).get("device") or env.get("device")
    return {
        "device": str(device or ""),
        "line": _environment_line(env),
        "rows": [(str(k), str(v)) for k, v in env.items() if v not in (None, "")],
    }


def _measured_nothing(record: dict[str, Any]) -> bool:
    return not details(record) and not record.get("budgets")


def _needs_reader(record: dict[str, Any]) -> bool:
    """Failed or errored, or a budget or regression check broken: what a reader opens the page for."""
    return outcome(record) in ("failed", "error") or any(b.passed is False for b in budget_bars(record))


def _charted(records: list[dict[str, Any]], most: int | None) -> set[int]:
    """The scenarios (by their 1-based place) whose charts are drawn: all, up to ``most`` of those that
    measured something; beyond, the ones a reader needs first, then the rest in order."""
    measured = [i for i, record in enumerate(records, 1) if not _measured_nothing(record)]
    if most is None or len(measured) <= most:
        return set(measured)
    needed = [i for i in measured if _needs_reader(records[i - 1])]
    rest = [i for i in measured if not _needs_reader(records[i - 1])]
    return set((needed + rest)[: max(most, 0)])


def _thinning(records: list[dict[str, Any]], charted: set[int], most: int | None) -> dict[str, Any] | None:
    """What the page says about the scenarios left without charts, when some are."""
    left = [r for i, r in enumerate(records, 1) if i not in charted and not _measured_nothing(r)]
    if not left:
        return None
    return {
        "most": most,
        "charted": len(charted),
        "measured": len(charted) + len(left),
        "left": len(left),
        "needed_left": sum(1 for r in left if _needs_reader(r)),
    }


def _scenario(record: dict[str, Any], index: int, charted: bool = True) -> dict[str, Any]:
    salt = f"s{index}"
    measured, message = record.get("measured"), record.get("message")
    scenario = {
        "index": index,
        "outcome": outcome(record),
        "name": str(record.get("name")),
        "where": _where(record),
        "measured": str(measured) if measured else "",
        "message": str(message) if message else "",
        "warnings": warnings(record),
        "measured_nothing": _measured_nothing(record),
        "thinned": not charted,
    }
    if scenario["measured_nothing"]:
        return scenario
    if not charted:  # its figures and budgets as numbers; no chart drawn
        return {
            **scenario,
            "cards": _cards(record),
            "budgets": _budgets(record, None),
            "environment": _environment(record),
        }
    return {
        **scenario,
        "cards": _cards(record),
        "budgets": _budgets(record, salt + "b"),
        "step_times": _step_times(record, salt + "d"),
        "timeline": _timeline(record, salt + "l"),
        "breakdown": _breakdown(record, salt + "k"),
        "environment": _environment(record),
    }


def render_html(report: Mapping[str, Any], *, most_charted: int | None = MOST_CHARTED) -> str:
    """The JSON report (``--mlestimate-json``'s document) as one self-contained HTML page, with charts for at
    most ``most_charted`` scenarios (None: for every one; see ``MOST_CHARTED``)."""
    charts.require_matplotlib()
    page = _templates().get_template("page.html.j2")
    records = _records(report)
    charted = _charted(records, most_charted)
    return page.render(
        header=_header(records, report),
        overview=_overview(records, charted),
        thinning=_thinning(records, charted, most_charted),
        scenarios=[_scenario(record, index, index in charted) for index, record in enumerate(records, 1)],
    )
