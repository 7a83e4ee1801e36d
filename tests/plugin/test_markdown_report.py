"""The pull-request comment (``--mlestimate-markdown``, ``mlestimate merge --markdown``), rendered by GitHub's own
Markdown renderer (cmark-gfm, through the ``cmarkgfm`` package) with its table extension."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pytest_mlestimate.reports.markdown import GITHUB_LIMIT, MARKER, code, render_markdown
from pytest_mlestimate.verdicts.budgets import Check
from tests.plugin.conftest import RunResult, scenario_file

cmarkgfm = pytest.importorskip("cmarkgfm", reason="the dev extra brings cmarkgfm: pip install -e '.[dev]'")

GIB = 2**30


def github_html(markdown: str) -> str:
    """As GitHub renders a comment: GFM with tables; raw HTML (<details>, <br>) kept, GitHub's sanitizer allows
    those."""
    from cmarkgfm.cmark import Options

    return cmarkgfm.github_flavored_markdown_to_html(markdown, options=Options.CMARK_OPT_UNSAFE)


def record(name: str, outcome: str, checks: list[Check], **more: Any) -> dict[str, Any]:
    return {
        "name": name,
        "file": "scenarios/gpu.yaml",
        "line": 10,
        "outcome": outcome,
        "message": more.get("message"),
        "budgets": [check.to_dict() for check in checks],
        "baseline": {"status": more.get("baseline", "compared"), "path": "baselines/x.json", "runs": 5},
        **({"explanation": more["explanation"]} if "explanation" in more else {}),
    }


def unchanged(name: str) -> dict[str, Any]:
    return record(
        name,
        "passed",
        [
            Check("peak_gpu_memory", "max", 14 * GIB, 10 * GIB, 10 * GIB),
            Check("peak_gpu_memory", "regression", 10.6 * GIB, 10 * GIB, 10 * GIB, runs=(5, 1)),
            Check("forward_pass", "regression", 0.0521, 0.0505, 0.0511, (-0.05, 0.02), 0.99, (5, 1)),
            Check("backward_pass", "regression", 0.0921, 0.0905, 0.0911, (-0.05, 0.03), 0.99, (5, 1)),
            Check("total_training_time", "max", 3600.0, 1810.0, 1800.0),
            Check("total_training_time", "regression", 1836.0, 1810.0, 1800.0, (-0.04, 0.05), 0.99, (5, 1)),
        ],
    )


SLOWER = record(
    "fasterrcnn-slower",
    "failed",
    [
        Check("forward_pass", "max", 0.08, 0.0621, 0.0511),
        Check("forward_pass", "regression", 0.0521, 0.0621, 0.0511, (0.142, 0.293), 0.99, (5, 2)),
        Check("peak_gpu_memory", "regression", 10.6 * GIB, 10 * GIB, 10 * GIB, runs=(5, 2)),
    ],
    message="scenario 'fasterrcnn-slower' (scenarios/gpu.yaml:10): forward_pass regressed",
    explanation=[
        {
            "metric": "forward_pass",
            "module": "roi_heads",
            "figure": "forward + backward",
            "unit": "seconds",
            "now": 0.031,
            "baseline": 0.020,
            "growth": 0.011,
            "share": None,
        }
    ],
)


def rows_of(html: str) -> list[str]:
    body = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0]
    return re.findall(r"<tr>(.*?)</tr>", body, flags=re.S)


def test_the_comment_renders_as_a_table_with_the_failure_first() -> None:
    records = [unchanged("a-unchanged"), SLOWER, unchanged("z-unchanged")]
    markdown = render_markdown(records, "the `mlestimate-reports` artifact")
    assert markdown.startswith(MARKER + "\n")
    html = github_html(markdown)
    assert "<table>" in html and "<th>baseline → now</th>" in html
    first = rows_of(html)[0]
    assert "<code>fasterrcnn-slower</code>" in first
    assert "51.1 ms → 62.1 ms" in first
    assert "+21.5% (98% CI +14.2%..+29.3%, runs 5:2)" in first
    assert "&lt;= 80.0 ms, 22% left" in first
    assert "❌ regressed" in first
    assert "roi_heads forward + backward +11.0 ms (20.0 ms -&gt; 31.0 ms)" in html
    # the failed scenario's peak did not move: shown with it, as context
    assert "10.00 GiB → 10.00 GiB" in html.split("</table>", 1)[0]
    # the unchanged scenarios are folded, with all their metrics
    folded = html.split("<details><summary>Unchanged: 2 scenarios, 8 metrics</summary>", 1)[1]
    assert len(rows_of(folded)) == 8
    assert "<code>a-unchanged</code>" in folded and "<code>z-unchanged</code>" in folded
    assert "Full report: the <code>mlestimate-reports</code> artifact." in html


def test_a_change_that_passed_is_shown_and_what_moved_says_which_way() -> None:
    faster = record(
        "got-faster",
        "passed",
        [Check("forward_pass", "regression", 0.0521, 0.0400, 0.0511, (-0.30, -0.15), 0.99, (5, 1))],
    )
    html = github_html(render_markdown([unchanged("same"), faster]))
    changed = html.split("<h3>Changed against the baseline (1 scenario)</h3>", 1)[1].split("<details>", 1)[0]
    assert "<code>got-faster</code>" in changed and "✅ better" in changed
    assert "<code>same</code>" not in changed


def test_errors_skips_and_no_explanation_are_told_without_breaking_the_table() -> None:
    records = [
        record("no-baseline", "passed", [Check("peak_ram_memory", "max", 4 * GIB, 1 * GIB)], baseline="missing"),
        record("crashed", "error", [], message="could not be measured: CUDA error\nTraceback ..."),
        record("on-gpu", "skipped", [], message="needs a CUDA device; this machine has none"),
        {**SLOWER, "explanation": None},
    ]
    html = github_html(render_markdown(records))
    assert "1 failed, 💥 1 error, ✅ 1 passed, ⏭️ 1 skipped" in html
    assert "3 scenarios have no baseline" not in html and "1 scenario has no baseline" in html
    failed = rows_of(html.split("</table>", 1)[0])
    assert "fasterrcnn-slower" in failed[0] and "crashed" in failed[-1]
    assert "<code>could not be measured: CUDA error</code>" in html and "Traceback" not in html
    assert "<code>needs a CUDA device; this machine has none</code>" in html


def test_200_scenarios_stay_under_githubs_limit_and_say_what_was_left_out() -> None:
    records = [SLOWER, *(unchanged(f"scenario-{n:03d}-" + "x" * 40) for n in range(199))]
    markdown = render_markdown(records, "the `mlestimate-reports` artifact")
    assert len(markdown) < GITHUB_LIMIT
    html = github_html(markdown)
    assert "<code>fasterrcnn-slower</code>" in rows_of(html)[0]
    shown = sum("<code>scenario-" in row for row in rows_of(html.split("<details>", 1)[1]))
    left_out = int(re.search(r"([\d,]+) more scenarios? left out of this comment", html).group(1).replace(",", ""))
    assert shown + left_out == 199 and left_out > 0
    assert "see the <code>mlestimate-reports</code> artifact" in html
    assert html.count("<table>") == html.count("</table>") and html.count("<details>") == html.count("</details>")


def test_what_a_pull_request_writes_renders_as_text() -> None:
    """Scenario names and module names come from the pull request: no link, image, markup or escape from the
    table."""
    hostile = "x](https://evil.example) ![i](https://evil.example/p.png) <img src=x> | ` @maintainers **b**"
    records = [
        record(
            hostile,
            "failed",
            [Check("peak_gpu_memory", "max", 14 * GIB, 15 * GIB)],
            explanation=[{"metric": "peak_gpu_memory", "module": "<script>", "figure": "activations", "now": 1.0}],
        )
    ]
    html = github_html(render_markdown(records))
    assert "<a " not in html and "<img" not in html and "<script>" not in html and "<strong>" not in html
    assert len(re.findall(r"<td>", rows_of(html)[0])) == 6
    assert code("a`b") == "``a`b``" and code("`a") == "`` `a ``"


def test_the_run_writes_the_comment_and_says_where(
    pytester: pytest.Pytester, run_scenarios: Callable[..., RunResult]
) -> None:
    pytester.makefile(
        ".yaml",
        scenarios=scenario_file(
            {"name": "fits", "budgets": {"peak_ram_memory": "64 GiB"}},
            {"name": "too-big", "budgets": {"peak_ram_memory": "1 KiB"}},
        ),
    )
    result, _ = run_scenarios("--mlestimate-markdown", "comment.md")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines([f"report written: {pytester.path / 'comment.md'}"])
    html = github_html((pytester.path / "comment.md").read_text())
    first = rows_of(html)[0]
    assert "<code>too-big</code>" in first and "❌ over budget" in first
    assert "Full report: the JSON report <code>" in html


def test_the_option_needs_the_flag(pytester: pytest.Pytester, tmp_path: Path) -> None:
    result = pytester.runpytest_inprocess("--mlestimate-markdown", str(tmp_path / "c.md"))
    result.stderr.fnmatch_lines(["*--mlestimate-markdown needs --mlestimate*"])


def test_200_failed_scenarios_stay_under_the_limit_too() -> None:
    records = [{**SLOWER, "name": f"slower-{n:03d}-" + "y" * 40} for n in range(200)]
    markdown = render_markdown(records, "the `mlestimate-reports` artifact")
    assert len(markdown) < GITHUB_LIMIT
    html = github_html(markdown)
    shown = len(re.findall(r"<td><code>slower-", html))
    left_out = int(re.search(r"([\d,]+) more scenarios? left out of this comment", html).group(1).replace(",", ""))
    assert shown + left_out == 200 and shown > 50
