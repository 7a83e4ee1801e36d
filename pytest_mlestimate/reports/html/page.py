"""One self-contained HTML page from a JSON report: an overview of every scenario first, then a section
per scenario with its figures, budgets, step times, memory timeline, per-module breakdown, environment and
warnings. Styles and charts are inline; nothing is fetched, so the file opens offline as a CI artifact."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from html import escape
from typing import Any

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

TITLE = "pytest-mlestimate report"
NOT_MEASURED = "not measured"

CSS = """
:root { --ink: #24292f; --faint: #57606a; --line: #d0d7de; --panel: #f6f8fa;
  --passed: #1a7f37; --failed: #cf222e; --error: #bc4c00; --skipped: #6e7781; --notrun: #8c959f; }
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1200px; padding: 24px; color: var(--ink); line-height: 1.45;
  font: 14px/1.45 -apple-system, "Segoe UI", "DejaVu Sans", Arial, sans-serif; }
h1 { font-size: 24px; margin: 0 0 6px; }
h2 { font-size: 19px; margin: 0 0 4px; display: flex; align-items: center; gap: 10px; flex-wrap: wrap; }
h3 { font-size: 15px; margin: 22px 0 6px; }
a { color: #0969da; text-decoration: none; } a:hover { text-decoration: underline; }
.muted, .where { color: var(--faint); font-size: 13px; font-weight: normal; }
.badge { display: inline-block; padding: 1px 9px; border-radius: 10px; color: white; font-size: 12px;
  font-weight: 600; text-transform: uppercase; letter-spacing: .03em; white-space: nowrap; }
.passed { background: var(--passed); } .failed { background: var(--failed); } .error { background: var(--error); }
.skipped { background: var(--skipped); } .not-run { background: var(--notrun); }
.wide { overflow-x: auto; }
a.name { white-space: nowrap; font-weight: 600; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { text-align: left; padding: 5px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { background: var(--panel); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.row-failed td:first-child { border-left: 4px solid var(--failed); }
tr.row-error td:first-child { border-left: 4px solid var(--error); }
tr.row-passed td:first-child { border-left: 4px solid var(--passed); }
tr.row-skipped td:first-child, tr.row-not-run td:first-child { border-left: 4px solid var(--skipped); }
tr.has-why td { border-bottom: none; }
tr.why td { color: var(--faint); font-size: 12px; padding-top: 0; }
tr.why.row-failed td { color: var(--failed); } tr.why.row-error td { color: var(--error); }
section.scenario { margin-top: 34px; padding-top: 18px; border-top: 3px solid var(--line); }
section.scenario.s-failed { border-top-color: var(--failed); }
section.scenario.s-error { border-top-color: var(--error); }
section.scenario.s-passed { border-top-color: var(--passed); }
.message { background: #fff1f0; border-left: 4px solid var(--failed); padding: 8px 12px; white-space: pre-wrap;
  font: 12px/1.4 ui-monospace, "DejaVu Sans Mono", monospace; overflow-x: auto; max-height: 320px; }
.message.skipped-why { background: var(--panel); border-left-color: var(--skipped); }
.cards { display: flex; flex-wrap: wrap; gap: 8px; margin: 10px 0 4px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 6px 10px; min-width: 128px; background: white; }
.card .label { color: var(--faint); font-size: 12px; } .card .value { font-size: 17px; font-weight: 600; }
.card.broken { border: 2px solid var(--failed); } .card.broken .value { color: var(--failed); }
.card.ok { border-color: var(--passed); }
.chart { max-width: 900px; }
.chart svg { width: 100%; height: auto; display: block; }
.counts .badge { margin-right: 6px; font-size: 13px; }
details > summary { cursor: pointer; color: var(--faint); font-size: 13px; }
details.method p { color: var(--faint); font-size: 13px; margin: 4px 0; }
ul.warnings li { margin: 3px 0; }
.env td:first-child { color: var(--faint); width: 160px; }
"""

OUTCOME_WORDS = {"passed": "passed", "failed": "failed", "error": "error", "skipped": "skipped", "not run": "not run"}


def _badge(found: str) -> str:
    return f'<span class="badge {found.replace(" ", "-")}">{escape(OUTCOME_WORDS.get(found, found))}</span>'


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
    return " · ".join(escape(str(p)) for p in pieces if p)


# --------------------------------------------------------------------------------------------- overview
def _header(records: list[dict[str, Any]], report: Mapping[str, Any]) -> str:
    counts = {name: sum(1 for r in records if outcome(r) == name) for name in (*OUTCOME_WORDS,)}
    chips = "".join(f'{_badge(name)}<span class="muted">{count}</span> ' for name, count in counts.items() if count)
    env = report.get("environment") if isinstance(report.get("environment"), Mapping) else {}
    where = _environment_line(env)
    return (
        f"<header><h1>{TITLE}</h1>"
        f'<p class="counts">{len(records)} scenario{"" if len(records) == 1 else "s"}: {chips}</p>'
        + (f'<p class="muted">measured on {where}</p>' if where else "")
        + "</header>"
    )


def _overview(records: list[dict[str, Any]]) -> str:
    metrics, missing = overview_metrics(records)
    head = "".join(f'<th class="num">{escape(SHORT_LABELS.get(m, LABELS[m]))}</th>' for m in metrics)
    rows = []
    for index, record in enumerate(records):
        found = outcome(record)
        cells = "".join(f'<td class="num">{escape(shown(record, m))}</td>' for m in metrics)
        why = _first_line(record.get("message")) if found in ("failed", "error", "skipped") else ""
        line = f' class="row-{found.replace(" ", "-")}{" has-why" if why else ""}"'
        rows.append(
            f'<tr{line}><td><a class="name" href="#scenario-{index + 1}">{escape(str(record.get("name")))}</a>'
            f'<br><span class="where">{escape(_where(record))}</span></td>'
            f"<td>{_badge(found)}</td>{cells}<td>{escape(budget_counts(record))}</td></tr>"
        )
        if why:
            rows.append(f'<tr class="why row-{found}"><td colspan="{len(metrics) + 3}">{escape(why)}</td></tr>')
    names = ", ".join(LABELS[m] for m in missing)
    note = f'<p class="muted">{NOT_MEASURED} in any scenario: {escape(names)}</p>' if missing else ""
    return (
        '<section id="overview"><h3>All scenarios</h3><div class="wide"><table><thead><tr><th>scenario</th>'
        f"<th>verdict</th>{head}<th>budgets</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>{note}</section>"
    )


def _where(record: Mapping[str, Any]) -> str:
    return f"{record.get('file') or '?'}:{record.get('line') or '?'}"


# --------------------------------------------------------------------------------------------- scenario
def _chart(draw: Callable[[], str], title: str) -> str:
    """A chart that cannot be drawn from odd data says so in its place; the rest of the page stands."""
    try:
        return f'<div class="chart" data-chart="{escape(title)}">{draw()}</div>'
    except charts.MissingExtraError:
        raise
    except Exception as exc:
        return f'<p class="muted">{escape(title)}: the chart could not be drawn ({escape(repr(exc)[:300])})</p>'


def _cards(record: dict[str, Any]) -> str:
    broken = {b.metric for b in budget_bars(record) if b.passed is False}
    budgeted = {b.metric for b in budget_bars(record) if b.passed is True}
    cards, missing = [], []
    step = number(dig(details(record), "timings", "step", "median"))
    names = [*ESTIMATE_METRICS, "max_batch_size"]
    for name in names:
        value = metric_value(record, name)
        if value is None:
            if name != "max_batch_size":
                missing.append(LABELS[name])
            continue
        state = " broken" if name in broken else " ok" if name in budgeted else ""
        cards.append(
            f'<div class="card{state}"><div class="label">{escape(LABELS[name])}</div>'
            f'<div class="value">{escape(shown(record, name))}</div></div>'
        )
        if name == "backward_pass" and step is not None:
            cards.append(
                '<div class="card"><div class="label">training step (median)</div>'
                f'<div class="value">{escape(format_quantity(step, "seconds"))}</div></div>'
            )
    text = f'<div class="cards">{"".join(cards)}</div>' if cards else ""
    if missing and cards:
        reason = details(record).get("gpu_unavailable")
        why = f" ({escape(str(reason))})" if reason and any("GPU" in m for m in missing) else ""
        text += f'<p class="muted">{NOT_MEASURED} here: {escape(", ".join(missing))}{why}</p>'
    return text


def _budgets(record: dict[str, Any], salt: str) -> str:
    bars = budget_bars(record)
    if not bars:
        return '<h3>Budgets</h3><p class="muted">no budgets set for this scenario</p>'
    rows = "".join(
        f"<tr><td>{escape(LABELS.get(b.metric, b.metric))}</td>"
        f'<td class="num">{escape(format_quantity(b.value, _dimension(b.metric)))}</td>'
        f'<td class="num">{escape(b.limit_text)}</td>'
        f'<td class="num">{escape(format_quantity(b.baseline, _dimension(b.metric)))}</td>'
        f'<td class="num">{escape(b.change_text)}</td>'
        f"<td>{_verdict_of(b.passed)}</td></tr>"
        for b in bars
    )
    table = (
        "<details><summary>the numbers</summary><table><thead><tr><th>metric</th><th class=num>measured</th>"
        "<th class=num>limit</th><th class=num>baseline</th><th class=num>change</th><th>result</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></details>"
    )
    return (
        "<h3>Budgets: measured against each limit</h3>"
        + _chart(lambda: charts.budgets_chart(bars, salt), "budgets")
        + table
    )


def _dimension(metric: str) -> str:
    from pytest_mlestimate.core.metrics import METRIC

    return METRIC[metric].unit


def _verdict_of(passed: bool | None) -> str:
    if passed is None:
        return '<span class="muted">not checked</span>'
    return _badge("passed") if passed else _badge("failed")


def _step_times(record: dict[str, Any], salt: str) -> str:
    groups = [
        (title, rows)
        for title, rows in (
            ("training", distributions(record, TRAINING_TIMES)),
            ("inference", distributions(record, INFERENCE_TIMES)),
        )
        if rows
    ]
    heading = "<h3>Step times: every measured sample</h3>"
    if not groups:
        return heading + f'<p class="muted">{NOT_MEASURED}</p>'
    chart = _chart(lambda: charts.distribution_chart(groups, salt), "step times")
    note = '<p class="muted">dots: one measured step or call each; box: quartiles and median.</p>'
    return heading + chart + note


def _timeline(record: dict[str, Any], salt: str) -> str:
    found = timeline(record)
    heading = "<h3>Memory through one training step</h3>"
    if found is None:
        return heading + f'<p class="muted">{NOT_MEASURED}</p>'
    chart = _chart(lambda: charts.timeline_chart(found, salt), "memory timeline")
    return heading + chart + _method(found.method)


def _method(text: Any) -> str:
    if not isinstance(text, str) or not text:
        return ""
    return f'<details class="method"><summary>how this was measured</summary><p>{escape(text)}</p></details>'


def _breakdown(record: dict[str, Any], salt: str) -> str:
    found = breakdown(record)
    heading = "<h3>Where the time goes, per module</h3>"
    pieces = parts(found)
    if not found or not pieces:
        why = found.get("unavailable") if found else None
        return heading + f'<p class="muted">{NOT_MEASURED}{": " + escape(str(why)) if why else ""}</p>'
    training, inference = section(found, "training"), section(found, "inference")
    text = heading + _chart(lambda: charts.breakdown_chart(pieces, training, inference, salt + "t"), "breakdown")
    share = number((training or {}).get("remainder_share"))
    if share is not None and abs(share) >= 0.1:
        text += (
            f'<p class="muted">the step measured without hooks differs from the instrumented one by '
            f"{share:+.0%}: read the shares, not the sums.</p>"
        )
    text += _method(found.get("method"))
    split = memory_split(found)
    with_saved = folded([p for p in pieces if p.activations_bytes], lambda p: p.activations_bytes or 0.0)
    saved = [(p.module, p.activations_bytes or 0.0) for p in with_saved]
    text += "<h3>What the memory is made of</h3>"
    if split or saved:
        memory = section(found, "memory") or {}
        whole = number(memory.get("whole_bytes"))
        text += _chart(lambda: charts.memory_chart(split, whole, saved, salt + "m"), "memory split")  # type: ignore[arg-type]
        if memory.get("whole"):
            text += (
                f'<p class="muted">the peak: {escape(str(memory["whole"]))}, {escape(format_quantity(whole, "bytes"))}'
            )
            text += f"; counted: {escape(str(memory.get('measure') or ''))}" if memory.get("measure") else ""
            text += f"; rest of the process: {escape(str(memory['rest_means']))}" if memory.get("rest_means") else ""
            text += "</p>"
    else:
        text += f'<p class="muted">{NOT_MEASURED}</p>'
    return text


def _environment(record: dict[str, Any]) -> str:
    env = environment(record)
    if not env:
        return ""
    rows = "".join(
        f"<tr><td>{escape(str(k))}</td><td>{escape(str(v))}</td></tr>" for k, v in env.items() if v not in (None, "")
    )
    device = details(record).get("device_name") or details(record).get("device") or env.get("device")
    return (
        f"<h3>Environment</h3><details><summary>{escape(str(device or ''))} · {_environment_line(env)}</summary>"
        f'<table class="env">{rows}</table></details>'
    )


def _warnings(record: dict[str, Any]) -> str:
    found = warnings(record)
    if not found:
        return ""
    items = "".join(f"<li>{escape(w)}</li>" for w in found)
    return f'<h3>Warnings ({len(found)})</h3><ul class="warnings">{items}</ul>'


def _scenario(record: dict[str, Any], index: int) -> str:
    found = outcome(record)
    salt = f"s{index}"
    measured = record.get("measured")
    head = (
        f'<section class="scenario s-{found.replace(" ", "-")}" id="scenario-{index}">'
        f"<h2>{_badge(found)} {escape(str(record.get('name')))} "
        f'<span class="where">{escape(_where(record))}'
        + (f" · measured: {escape(str(measured))}" if measured else "")
        + "</span></h2>"
    )
    body = []
    if record.get("message"):
        kind = " skipped-why" if found == "skipped" else ""
        body.append(f'<pre class="message{kind}">{escape(str(record["message"]))}</pre>')
    if not details(record) and not record.get("budgets"):
        body.append(f'<p class="muted">nothing was measured for this scenario.</p>{_warnings(record)}')
        return head + "".join(body) + "</section>"
    body += [
        _cards(record),
        _budgets(record, salt + "b"),
        _step_times(record, salt + "d"),
        _timeline(record, salt + "l"),
        _breakdown(record, salt + "k"),
        _environment(record),
        _warnings(record),
    ]
    return head + "".join(body) + "</section>"


def render_html(report: Mapping[str, Any]) -> str:
    """The JSON report (``--mlestimate-json``'s document) as one self-contained HTML page."""
    charts.require_matplotlib()
    records = _records(report)
    sections = "".join(_scenario(record, index) for index, record in enumerate(records, 1))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{TITLE}</title><style>{CSS}</style></head><body>"
        f"{_header(records, report)}{_overview(records)}{sections}</body></html>\n"
    )
