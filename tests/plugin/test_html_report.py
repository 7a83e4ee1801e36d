"""``--mlestimate-html``: the page a real run of the tiny scenario writes, opened in a headless Chromium (the
system's: nothing is downloaded), and a page that cannot be drawn costing no other report."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_mlestimate.reports.json_report import build_document
from tests.plugin.conftest import RunResult, scenario_file
from tests.plugin.test_html_render import CHARTS, charts_in, document, external_references, full_record

MOST_BYTES = 2 * 1024 * 1024
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def measured_page(pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult]) -> tuple[Path, dict[str, Any]]:
    pytester.makefile(
        ".yaml",
        scenarios=scenario_file(
            {"name": "train", "budgets": {"peak_ram_memory": "64 GiB", "forward_pass": "10 s"}},
            {"name": "broken", "budgets": {"peak_ram_memory": "1 MiB"}},
            {"name": "no-gpu", "device": "cuda:7"},
        ),
    )
    page = pytester.path / "out" / "report.html"
    result, report = run_scenarios("--mlestimate-html", str(page))
    result.assert_outcomes(passed=1, failed=1, skipped=1)
    result.stdout.fnmatch_lines([f"report written: {page}"])
    return page, report


def test_a_run_writes_a_self_contained_page_beside_the_json(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult]
) -> None:
    page, report = measured_page(pytester, run_scenarios)
    text = page.read_text(encoding="utf-8")
    assert page.stat().st_size < MOST_BYTES
    assert external_references(text) == []
    train = next(r for r in report["scenarios"] if r["name"] == "train")
    assert train["details"]["breakdown"]["parts"], "the engine reports a per-module breakdown"
    assert set(charts_in(text)) == set(CHARTS)
    assert "could not be drawn" not in text
    for name in ("train", "broken", "no-gpu"):
        assert f">{name}</a>" in text


def test_a_page_that_cannot_be_drawn_costs_no_other_report(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(report: Any, **options: Any) -> str:
        raise RuntimeError("no chart today")

    monkeypatch.setattr("pytest_mlestimate.reports.html.render_html", broken)
    pytester.makefile(".yaml", scenarios=scenario_file({"name": "train"}))
    junit = pytester.path / "report.xml"
    result, report = run_scenarios("--mlestimate-html", "report.html", "--mlestimate-junitxml", str(junit))
    result.assert_outcomes(passed=1)
    assert report["scenarios"][0]["outcome"] == "passed"
    assert junit.exists()
    assert not (pytester.path / "report.html").exists()
    result.stdout.fnmatch_lines(
        ["warning: the HTML report *report.html was not written: RuntimeError('no chart today')"]
    )
    assert "report written: " + str(pytester.path / "report.html") not in result.stdout.str()


def test_without_matplotlib_the_run_stops_before_measuring(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pytest_mlestimate.reports.html.charts.matplotlib_missing", lambda: True)
    pytester.makefile(".yaml", scenarios=scenario_file({"name": "train"}))
    result, _ = run_scenarios("--mlestimate-html", "report.html")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--mlestimate-html draws its charts with matplotlib: pip install 'pytest-mlestimate[html]'" in (
        result.stderr.str()
    )


def test_the_option_needs_the_flag(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_inprocess("--mlestimate-html", "report.html")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*--mlestimate-html needs --mlestimate"])


def test_the_job_summary_charts_each_breakdown(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    summary = pytester.path / "summary.md"
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(summary))
    pytester.makefile(".yaml", scenarios=scenario_file({"name": "train"}, {"name": "no-gpu", "device": "cuda:7"}))
    run_scenarios()
    text = summary.read_text()
    assert text.count("```mermaid") == 1
    assert "<details><summary>train: time per module, training step" in text
    assert "xychart-beta" in text and 'x-axis ["backbone"' in text


# ------------------------------------------------------------------------------------------- in a browser
def browser() -> str:
    found = next((path for name in BROWSERS if (path := shutil.which(name))), None)
    if found is None:
        pytest.skip(
            f"no Chromium to open the page in: none of {', '.join(BROWSERS)} is on PATH (apt-get install chromium)"
        )
    return found


def opened(page: Path, screenshot: Path) -> dict[str, Any]:
    """Open ``page`` in headless Chromium; what drew, what the console said and every request made."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="the dev extra's playwright drives the browser")
    executable = browser()
    with sync_api.sync_playwright() as driver:
        chromium = driver.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            tab = chromium.new_page(viewport={"width": 1280, "height": 1600})
            problems: list[str] = []
            requests: list[str] = []
            tab.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
            tab.on("pageerror", lambda e: problems.append(str(e)))
            tab.on("request", lambda r: requests.append(r.url))
            tab.goto(page.as_uri(), wait_until="load")
            charts = tab.eval_on_selector_all(
                ".chart",
                """nodes => nodes.map(node => {
                    const svg = node.querySelector('svg'), box = svg ? svg.getBoundingClientRect() : null;
                    return {name: node.dataset.chart, width: box ? box.width : 0, height: box ? box.height : 0,
                            paths: svg ? [...svg.querySelectorAll('path')].filter(
                                p => p.getTotalLength() > 0).length : 0,
                            texts: svg ? svg.querySelectorAll('text').length : 0,
                            outside: svg ? [...svg.querySelectorAll('text')].filter(t => {
                                const r = t.getBoundingClientRect();
                                return r.width > 0 && (r.left < box.left - 2 || r.right > box.right + 2
                                    || r.top < box.top - 2 || r.bottom > box.bottom + 2);
                            }).map(t => t.textContent) : []};
                })""",
            )
            verdicts = tab.eval_on_selector_all(
                "#overview .badge", "nodes => nodes.map(n => [n.textContent, getComputedStyle(n).backgroundColor])"
            )
            tab.screenshot(path=str(screenshot), full_page=True)
        finally:
            chromium.close()
    return {"charts": charts, "problems": problems, "requests": requests, "verdicts": verdicts}


def assert_drew(seen: dict[str, Any], page: Path, charts: int) -> None:
    assert seen["problems"] == []
    assert seen["requests"] == [page.as_uri()], "only the file itself may be loaded"
    assert len(seen["charts"]) == charts
    for chart in seen["charts"]:
        assert chart["width"] > 100 and chart["height"] > 50, chart
        assert chart["paths"] > 5 and chart["texts"] > 2, chart
        assert chart["outside"] == [], f"{chart['name']}: text cut off at the chart's edge"


def test_the_measured_page_draws_in_a_browser(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult], tmp_path: Path
) -> None:
    browser()
    page, _ = measured_page(pytester, run_scenarios)
    seen = opened(page, tmp_path / "report.png")
    assert_drew(seen, page, charts=len(CHARTS) * 2)  # train and broken measured the same profile; no-gpu nothing
    assert {name for name, _ in seen["verdicts"]} == {"passed", "failed", "skipped"}
    colours = dict(seen["verdicts"])
    assert colours["passed"] != colours["failed"] != colours["skipped"]
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_a_gpu_record_with_every_section_draws_in_a_browser(tmp_path: Path) -> None:
    browser()
    from pytest_mlestimate import render_html

    page = tmp_path / "report.html"
    long_names = full_record("long-names", outcome="passed", message=None)
    for index, part in enumerate(long_names["details"]["breakdown"]["parts"]):  # the margins follow the labels
        part["module"] = f"backbone.body.layer{index}.0.downsample.conv_with_a_rather_long_name"
    records = [full_record(), full_record("fine", outcome="passed", message=None), long_names]
    page.write_text(render_html(build_document(records) | document(*records)), encoding="utf-8")
    seen = opened(page, tmp_path / "report.png")
    assert_drew(seen, page, charts=len(CHARTS) * 3)
