"""The HTML report's renderer on records built by hand: every chart from a complete record, "not measured"
from records that lack each part, nothing fetched from outside the file, and the job summary's charts."""

from __future__ import annotations

import copy
import html
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_mlestimate.commands.cli import main
from pytest_mlestimate.reports.github import step_summary
from pytest_mlestimate.reports.html import MOST_CHARTED, MissingExtraError, charts, render_html
from pytest_mlestimate.reports.html.charts import MAX_DOTS
from pytest_mlestimate.reports.html.mermaid import MOST_BARS, breakdown_chart
from pytest_mlestimate.reports.html.read import MAX_POINTS, downsample

MiB = 2**20
CHARTS = ("budgets", "step times", "memory timeline", "breakdown", "memory split")


def full_record(name: str = "frcnn-b4", **changes: Any) -> dict[str, Any]:
    """A failed GPU training scenario with every section the report can draw: a broken budget, a regression
    check against a baseline, raw step samples, a timeline with marks and phases, and a breakdown."""
    steps = [0.30 + 0.01 * (i % 7) for i in range(40)]
    t_s = [i * 0.0005 for i in range(3000)]
    allocated = [(900 + 400 * (i / 3000) + (250 if 1200 < i < 1400 else 0)) * MiB for i in range(3000)]
    record: dict[str, Any] = {
        "name": name,
        "file": "scenarios/gpu.yaml",
        "line": 12,
        "nodeid": f"scenarios/gpu.yaml::{name}",
        "outcome": "failed",
        "message": f"scenario '{name}' (scenarios/gpu.yaml:12): peak_gpu_memory broke its limit",
        "scenario": {"batch_size": 4, "application_type": "training"},
        "resource": {
            "Peak GPU Memory": 1500 * MiB,
            "Peak GPU Utilization": 97.0,
            "Peak RAM Memory": 3000 * MiB,
            "Peak CPU Utilization": 110.0,
            "Batch Time": {"forward_pass": 0.11, "backward_pass": 0.19},
            "RAM before training": 2500 * MiB,
            "VRAM before training": 300 * MiB,
        },
        "training_time": {"Total Training Time": 750.0},
        "inference_time": {"1-Image Inference Time": 0.02, "Batch of 4 Inference Time": 0.07},
        "energy": {"Energy per Training": 2.5e6},
        "cost": {"Cost per Training": 0.52, "Currency": "USD"},
        "units": {},
        "details": {
            "timings": {
                "step": {"median": 0.31, "p10": 0.30, "p90": 0.36, "count": 40},
                "optimizer_step": {"median": 0.004, "p10": 0.003, "p90": 0.005, "count": 40},
            },
            "gpu_unavailable": None,
            "device": "cuda:0",
            "device_name": "NVIDIA H100 80GB HBM3",
            "environment": {"gpu": "NVIDIA H100 80GB HBM3", "driver": "550.54", "torch": "2.4.0", "cpus": "32"},
            "breakdown": {
                "method": "module hooks in extra steps",
                "depth": 1,
                "parts": [
                    {
                        "module": "backbone.body",
                        "forward_s": 0.05,
                        "backward_s": 0.09,
                        "activations_bytes": 300 * MiB,
                        "forward_peak_bytes": 400 * MiB,
                        "inference_s": 0.02,
                    },
                    {
                        "module": "rpn",
                        "forward_s": 0.01,
                        "backward_s": 0.02,
                        "activations_bytes": 40 * MiB,
                        "forward_peak_bytes": None,
                        "inference_s": 0.01,
                    },
                    {
                        "module": "roi_heads",
                        "forward_s": 0.04,
                        "backward_s": None,
                        "activations_bytes": None,
                        "forward_peak_bytes": None,
                        "inference_s": 0.03,
                    },
                ],
                "training": {
                    "steps": 3,
                    "step_s": 0.33,
                    "headline_step_s": 0.31,
                    "parts_s": 0.21,
                    "forward_other_s": 0.01,
                    "backward_other_s": 0.02,
                    "optimizer_s": 0.004,
                    "remainder_s": -0.02,
                    "remainder_share": -0.06,
                },
                "inference": {"calls": 3, "batch_s": 0.07, "parts_s": 0.06, "other_s": 0.01},
                "memory": {
                    "whole": "Peak GPU Memory",
                    "whole_bytes": 1500 * MiB,
                    "measure": "tensor bytes",
                    "parameters": 160 * MiB,
                    "gradients": 160 * MiB,
                    "optimizer_state": 160 * MiB,
                    "activations": 340 * MiB,
                    "rest": 680 * MiB,
                    "rest_means": "the CUDA context and the allocator's cache",
                },
            },
            "timeline": {
                "device": "cuda:0",
                "t_s": t_s,
                "series": {"allocated": allocated, "reserved": [a + 200 * MiB for a in allocated]},
                "marks": [
                    {"module": "backbone.body", "phase": "forward", "start_s": 0.05, "end_s": 0.4},
                    {"module": "rpn", "phase": "forward", "start_s": 0.4, "end_s": 0.5},
                    {"module": "rpn", "phase": "backward", "start_s": 0.9, "end_s": 1.0},
                    {"module": "backbone.body", "phase": "backward", "start_s": 1.0, "end_s": 1.4},
                ],
                "phases": {"forward_end_s": 0.6, "backward_end_s": 1.4, "end_s": 1.5},
                "method": "torch.cuda.memory_allocated at every hook",
            },
        },
        "budgets": [
            {"metric": "peak_gpu_memory", "kind": "max", "limit": 1024.0 * MiB, "value": 1500 * MiB, "passed": False},
            {"metric": "peak_gpu_utilization", "kind": "min", "limit": 40.0, "value": 97.0, "passed": True},
            {
                "metric": "forward_pass",
                "kind": "regression",
                "limit": 0.1224,
                "value": 0.11,
                "baseline": 0.12,
                "interval": [-0.12, -0.05],
                "confidence": 0.99,
                "runs": [5, 1],
                "passed": True,
            },
            {"metric": "peak_ram_memory", "kind": "max", "limit": 8.0 * 2**30, "value": None, "passed": None},
        ],
        "warnings": ["the model resizes its input to 800x1333 <itself>"],
        "runs": [
            {
                "metrics": {},
                "samples": {
                    "total_training_time": steps,
                    "forward_pass": [s * 0.35 for s in steps],
                    "backward_pass": [s * 0.6 for s in steps],
                    "inference_batch": [0.07, 0.071, 0.069],
                    "inference_1_image": [0.02] * 8,
                },
                "contended": False,
            }
        ],
        "baseline": {"status": "compared"},
        "measured": "this run",
    }
    record.update(changes)
    return record


def document(*records: dict[str, Any]) -> dict[str, Any]:
    return {"schema_version": 1, "environment": {"cpu": "AMD EPYC", "torch": "2.4.0"}, "scenarios": list(records)}


def charts_in(page: str) -> dict[str, str]:
    """Each drawn chart's SVG by its name (a scenario's first of each)."""
    found: dict[str, str] = {}
    for name, svg in re.findall(r'<div class="chart" data-chart="([^"]+)">(<svg.*?</svg>)', page, flags=re.S):
        found.setdefault(name, svg)
    return found


def external_references(page: str) -> list[str]:
    """Whatever could make a browser fetch something: a URL anywhere, or a src/href/url() not to this page."""
    found = re.findall(r"(?:https?:|ftp:)?//[\w.-]+\.[a-z]{2,}[^\s\"'<>]*", page)
    found += [
        m
        for m in re.findall(r"\b(?:src|href|xlink:href|action|srcset)\s*=\s*\"([^\"]*)\"", page)
        if not m.startswith("#")
    ]
    found += re.findall(r"url\((?!#)[^)]*\)|@import|<script|<link|<iframe|<img", page)
    return found


def test_a_complete_record_draws_every_chart_and_names_its_figures() -> None:
    page = render_html(document(full_record()))
    drawn = charts_in(page)
    assert set(drawn) == set(CHARTS)
    for name, svg in drawn.items():
        assert "<path" in svg, name
        assert "<text" in svg, f"{name}: text must stay text (svg.fonttype none)"
        assert "DejaVuSans-" not in svg, f"{name}: glyphs were drawn as paths"
    assert "could not be drawn" not in page
    for text in ("1.46 GiB", "BROKEN", "backbone.body", "roi_heads", "limit &lt;= 1.00 GiB", "baseline", "0.52 USD"):
        assert text in page, text
    assert "the model resizes its input to 800x1333 &lt;itself&gt;" in page  # escaped, not markup
    assert "NVIDIA H100 80GB HBM3" in page


def test_the_overview_comes_first_with_every_verdict() -> None:
    records = [
        full_record("broken"),
        full_record("fine", outcome="passed", message=None),
        full_record("bad-input", outcome="error", message="scenario 'bad-input': batch_size -1 is not allowed"),
        full_record("no-gpu", outcome="skipped", message="device 'cuda' asked for, but no CUDA device is here"),
    ]
    page = render_html(document(*records))
    overview = page.index('id="overview"')
    assert overview < page.index('id="scenario-1"')
    table = page[overview : page.index('id="scenario-1"')]
    for name, verdict in (("broken", "failed"), ("fine", "passed"), ("bad-input", "error"), ("no-gpu", "skipped")):
        assert re.search(rf'href="#scenario-\d">{name}</a>.*?<span class="badge {verdict}">', table, flags=re.S)
    assert "batch_size -1 is not allowed" in table
    assert "1.46 GiB" in table  # the headline figures are in the overview


def _parts(record: dict[str, Any]) -> list[dict[str, Any]]:
    return record["details"]["breakdown"]["parts"]


NOT_MEASURED = "not measured"
NO_TIMELINE = 'Memory through one training step</h3><p class="muted">not measured'
NO_BREAKDOWN = 'per module</h3><p class="muted">not measured'


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        pytest.param(
            lambda r: r.update(details=None, budgets=[], runs=[], resource=None),
            "nothing was measured for this scenario",
            id="not-measured",
        ),
        pytest.param(
            lambda r: r["details"].pop("breakdown") and r["details"].pop("timeline"), NO_BREAKDOWN, id="older-report"
        ),
        pytest.param(lambda r: r["details"].update(breakdown=None, timeline=None), NO_TIMELINE, id="null-sections"),
        pytest.param(
            lambda r: r["details"]["breakdown"].update(training=None, memory=None, inference=None),
            "training step, per module",
            id="null-parts",
        ),
        pytest.param(
            lambda r: r["details"]["breakdown"].update(parts=[], unavailable="no module named in the model"),
            "not measured: no module named in the model",
            id="unavailable",
        ),
        pytest.param(
            lambda r: [p.update(forward_s=None, backward_s=None, activations_bytes=None) for p in _parts(r)],
            "inference of one batch, per module",
            id="inference-only",
        ),
        pytest.param(
            lambda r: r["details"]["timeline"].update(series={}, marks=None, phases=None), NO_TIMELINE, id="no-series"
        ),
        pytest.param(
            lambda r: r["details"]["timeline"]["series"].update(allocated=[None] * 3000), NO_TIMELINE, id="null-samples"
        ),
        pytest.param(lambda r: r.update(runs=None, budgets=None, warnings=None), "no budgets set", id="null-lists"),
        pytest.param(
            lambda r: r["details"].update(timings=None) or r.update(runs=[]),
            'Step times: every measured sample</h3><p class="muted">not measured',
            id="no-step-times",
        ),
        pytest.param(
            lambda r: r["budgets"].append({"metric": "no_such_metric", "limit": 1}), "Budgets", id="unknown-budget"
        ),
        pytest.param(lambda r: r.update(outcome=None), '<span class="badge not-run">not run', id="not-run"),
    ],
)
def test_missing_or_null_parts_say_not_measured(change: Any, expected: str) -> None:
    record = copy.deepcopy(full_record())
    change(record)
    page = render_html(document(record))
    assert "could not be drawn" not in page
    assert expected in page


def test_an_inference_scenario_draws_its_breakdown_without_training() -> None:
    record = full_record(outcome="passed", message=None)
    record["details"]["timeline"] = None
    breakdown = record["details"]["breakdown"]
    breakdown.update(training=None, memory=None)
    for part in breakdown["parts"]:
        part.update(forward_s=None, backward_s=None, activations_bytes=None)
    page = render_html(document(record))
    assert "breakdown" in charts_in(page)
    assert "inference of one batch, per module" in page
    assert "training step, per module" not in page
    assert 'Memory through one training step</h3><p class="muted">not measured' in page


def test_the_page_fetches_nothing() -> None:
    records = [full_record(), full_record("other", outcome="passed", message="see http://example.com/x")]
    page = render_html(document(*records))
    leaks = external_references(page.replace("see http://example.com/x", ""))
    assert leaks == []
    assert external_references('<img src="https://cdn.example.com/x.png">')  # the check itself sees one


HOSTILE = '<script>alert("x")</script> & </details>'


def test_text_from_the_report_is_escaped_wherever_it_lands() -> None:
    """A scenario's name, its message, a warning and a module's name are text: escaped in the page, the same
    text once read, and never markup (no script, no element closed early); only the charts' SVG is markup."""
    record = full_record(HOSTILE, message=f"failed: {HOSTILE}", warnings=[f"warned: {HOSTILE}"])
    record["details"]["breakdown"]["parts"][0]["module"] = f"module {HOSTILE}"
    page = render_html(document(record))

    def texts(pattern: str) -> list[str]:
        return [html.unescape(found) for found in re.findall(pattern, page)]

    assert texts(r'<a class="name" href="#scenario-1">([^<]*)</a>') == [HOSTILE]
    assert texts(r'<h2><span class="badge failed">failed</span> ([^<]*) <span class="where">') == [HOSTILE]
    assert texts(r'<pre class="message">([^<]*)</pre>') == [f"failed: {HOSTILE}"]
    assert texts(r"<li>([^<]*)</li>") == [f"warned: {HOSTILE}"]
    assert f"module {HOSTILE}" in texts(r"<text[^>]*>([^<]*)</text>")  # in the breakdown chart
    assert set(charts_in(page)) == set(CHARTS)
    assert "<script" not in page.lower()
    assert page.count("<details") == page.count("</details>")
    assert "http" not in page
    assert external_references(page) == []


def test_a_long_timeline_is_downsampled_and_keeps_its_peak() -> None:
    t_s = [i * 1e-4 for i in range(100_000)]
    values = [float(i % 1000) for i in range(100_000)]
    values[54_321] = 1e9
    kept_t, kept = downsample(t_s, {"rss": values}, MAX_POINTS)
    assert len(kept_t) <= 2 * MAX_POINTS
    assert max(kept["rss"]) == 1e9
    assert kept_t[0] == 0.0 and kept_t[-1] == t_s[-1]


def test_without_matplotlib_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(MissingExtraError, match=re.escape("pip install 'pytest-mlestimate[html]'")):
        render_html(document(full_record()))


def test_not_a_report_is_refused() -> None:
    with pytest.raises(ValueError, match="no 'scenarios' list"):
        render_html({"records": []})


def test_render_html_is_exported_lazily_and_loads_no_matplotlib_until_used() -> None:
    probe = (
        "import sys, pytest_mlestimate, pytest_mlestimate.reports.html, pytest_mlestimate.reports.github\n"
        "assert callable(pytest_mlestimate.render_html)\n"
        "print(sorted(m for m in ('matplotlib', 'torch', 'pydantic') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_job_summary_has_a_mermaid_chart_per_breakdown() -> None:
    records = [full_record(), full_record("old", outcome="passed", message=None, details={})]
    summary = step_summary(records)
    assert summary.count("```mermaid") == 1
    chart = summary[summary.index("```mermaid") :]
    assert "xychart-beta" in chart
    assert 'x-axis ["backbone.body", "rpn", "roi_heads"]' in chart
    assert "bar [140, 30, 40]" in chart  # forward + backward per module, in ms
    assert "<details><summary>frcnn-b4: time per module" in summary


def test_a_deep_breakdown_folds_its_smallest_modules() -> None:
    record = full_record()
    record["details"]["breakdown"]["parts"] = [
        {"module": f'layer"{i}', "forward_s": 0.001 * (i + 1), "backward_s": 0.0} for i in range(30)
    ]
    chart = breakdown_chart(record)
    axis = next(line for line in chart.splitlines() if "x-axis" in line)
    assert axis.count(",") == MOST_BARS - 1
    assert '"other modules"' in axis and "layer'29" in axis  # quotes cannot end a label


def test_the_command_writes_the_page(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "report.json"
    report.write_text(json.dumps(document(full_record())))
    assert main(["html", str(report), "-o", str(tmp_path / "out" / "page.html")]) == 0
    assert "report written:" in capsys.readouterr().out
    assert set(charts_in((tmp_path / "out" / "page.html").read_text())) == set(CHARTS)
    assert main(["html", str(report)]) == 0
    assert (tmp_path / "report.html").exists()


@pytest.mark.parametrize("content", ["{not json", '{"records": []}', None])
def test_the_command_refuses_what_it_cannot_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str | None
) -> None:
    report = tmp_path / "report.json"
    if content is not None:
        report.write_text(content)
    assert main(["html", str(report), "-o", str(tmp_path / "page.html")]) == 2
    assert "mlestimate html:" in capsys.readouterr().err
    assert not (tmp_path / "page.html").exists()


def test_long_timelines_and_many_modules_keep_the_page_small() -> None:
    records = []
    for index in range(5):
        record = full_record(f"deep-{index}")
        timeline = record["details"]["timeline"]
        timeline["t_s"] = [i * 1e-5 for i in range(50_000)]
        timeline["series"] = {"rss": [float(2**30 + (i * 7919) % 2**20) for i in range(50_000)]}
        parts = [
            {"module": f"backbone.layer{i}", "forward_s": 0.001, "backward_s": 0.002, "activations_bytes": 2**20}
            for i in range(60)
        ]
        record["details"]["breakdown"]["parts"] = parts
        timeline["marks"] = [
            {"module": p["module"], "phase": "forward", "start_s": i * 0.005, "end_s": i * 0.005 + 0.004}
            for i, p in enumerate(parts)
        ]
        records.append(record)
    page = render_html(document(*records))
    assert len(page.encode()) < 2 * 1024 * 1024
    assert len(charts_in(page)) == len(CHARTS)
    assert "45 other modules" in page  # a deep breakdown names its largest modules, sums the rest


# ------------------------------------------------------------------------------------------ many scenarios
def sections(page: str) -> dict[str, str]:
    """Each scenario's section by its name."""
    found = re.findall(r'(<section class="scenario.*?</section>)', page, flags=re.S)
    names = [re.search(r"</span> ([^<]*) <span", section) for section in found]
    return {html.unescape(name.group(1)): section for name, section in zip(names, found, strict=True) if name}


def test_a_page_of_many_scenarios_draws_charts_for_the_ones_a_reader_needs_first() -> None:
    """Beyond ``most_charted`` scenarios, the failed and over-budget ones are drawn first, then the rest in
    order; the others keep their verdict, figures, budgets, environment and warnings, and the page says so."""
    passed = [full_record(f"fine-{i}", outcome="passed", message=None, budgets=[]) for i in range(5)]
    over = full_record("over-budget", outcome="passed", message=None)  # a broken check, whatever its outcome
    records = [*passed[:2], full_record("broken-1"), *passed[2:], over, full_record("broken-2")]
    records.append(full_record("no-gpu", outcome="skipped", message="no CUDA device", details=None, budgets=[]))
    page = render_html(document(*records), most_charted=4)
    found = sections(page)
    drawn = {name for name, section in found.items() if 'class="chart"' in section}
    assert drawn == {"broken-1", "over-budget", "broken-2", "fine-0"}
    assert "Charts are drawn for 4 of the 8 measured scenarios" in page
    assert "at most 4" in page and "The other 4 are marked" in page
    overview = page[page.index('id="overview"') : page.index('id="scenario-1"')]
    assert overview.count("· no charts") == 4
    for name in ("fine-1", "fine-2", "fine-3", "fine-4"):
        thinned = found[name]
        assert '<span class="badge passed">passed</span>' in thinned
        assert "no charts drawn for this scenario" in thinned
        for figure in ("1.46 GiB", "110.0 ms", "310.0 ms", "0.52 USD"):  # its headline figures stay
            assert figure in thinned, (name, figure)
        assert "NVIDIA H100 80GB HBM3" in thinned and "the model resizes its input" in thinned
    assert "nothing was measured for this scenario" in found["no-gpu"]  # drew nothing anyway: not counted
    assert "could not be drawn" not in page


def test_a_thinned_scenario_keeps_its_budget_verdicts_as_a_table() -> None:
    page = render_html(document(full_record("broken"), full_record("also-broken")), most_charted=1)
    thinned = sections(page)["also-broken"]
    assert 'class="chart"' not in thinned
    assert "<h3>Budgets</h3><table>" in thinned
    assert (
        '<td class="num">&lt;= 1.00 GiB</td>' in thinned and '<span class="badge failed">failed</span></td>' in thinned
    )
    assert "The other 1, 1 of them failed or broke a check," in page


def test_a_page_draws_charts_for_at_most_most_charted_scenarios_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    drawn: list[str] = []
    monkeypatch.setattr(charts, "drawn", lambda salt, draw: drawn.append(salt) or "<svg></svg>")
    records = [full_record(f"s-{i}", outcome="passed", message=None) for i in range(MOST_CHARTED + 10)]
    page = render_html(document(*records))
    assert sum(1 for salt in drawn if salt.endswith("b")) == MOST_CHARTED  # a budgets chart each
    assert f"Charts are drawn for {MOST_CHARTED} of the {MOST_CHARTED + 10} measured scenarios" in page
    assert page.count("no charts drawn for this scenario") == 10
    assert page.count('<td><span class="badge passed">passed</span></td>') >= len(records)  # the overview's
    assert page.count('<h2><span class="badge passed">passed</span>') == len(records)  # and each section's
    drawn.clear()
    every = render_html(document(*records), most_charted=None)
    assert sum(1 for salt in drawn if salt.endswith("b")) == len(records)
    assert "no charts" not in every and 'id="thinned"' not in every


def test_a_thinned_scenario_escapes_its_text_too() -> None:
    record = full_record(HOSTILE, message=f"failed: {HOSTILE}", warnings=[f"warned: {HOSTILE}"])
    page = render_html(document(full_record(), record), most_charted=1)
    assert 'class="chart"' not in sections(page)[HOSTILE]
    names = re.findall(r'<h2><span class="badge failed">failed</span> ([^<]*) <span class="where">', page)
    assert [html.unescape(name) for name in names] == ["frcnn-b4", HOSTILE]
    assert [html.unescape(w) for w in re.findall(r"<li>([^<]*)</li>", page)].count(f"warned: {HOSTILE}") == 1
    assert "<script" not in page.lower()
    assert page.count("<details") == page.count("</details>")


def test_step_times_draw_a_bounded_number_of_dots_from_every_sample() -> None:
    record = full_record()
    samples = [0.1 + 0.0001 * i for i in range(2000)]
    record["runs"][0]["samples"]["total_training_time"] = samples
    chart = charts_in(render_html(document(record)))["step times"]
    assert chart.count("<use ") <= 5 * MAX_DOTS
    assert "2000 samples, 100 drawn" in chart  # the label counts every sample
    assert "median 199.9 ms" in chart  # and its median is of every sample


def test_the_dots_kept_are_evenly_ranked_with_the_extremes() -> None:
    import numpy

    values = numpy.random.default_rng(1).normal(size=5000)
    kept = charts._dots(values)
    assert len(kept) == MAX_DOTS
    assert kept.min() == values.min() and kept.max() == values.max()
    assert abs(float(numpy.median(kept)) - float(numpy.median(values))) < 0.05
    assert charts._dots(values[:10]) is not None and len(charts._dots(values[:10])) == 10
