"""The documentation: its generated parts follow the code, the README stays a front page, and links resolve."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import pytest
import yaml

from pytest_mlestimate.commands.cli import build_parser
from pytest_mlestimate.core.metrics import METRIC
from pytest_mlestimate.scenarios.files import read_scenario_file
from pytest_mlestimate.scenarios.table import read_scenario_table

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
README_LIMIT = 10_000

FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def load_hooks() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mlestimate_docs_hooks", DOCS / "hooks.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def table_rows(markdown: str) -> list[list[str]]:
    """The body rows of a Markdown table, cell by cell (header and rule left out)."""
    rows = [line.strip().strip("|").split(" | ") for line in markdown.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row] for row in rows[2:]]


def relative_links(path: Path) -> list[str]:
    """Link targets in a Markdown file that point at files of this repository (code is not read as links)."""
    text = CODE_SPAN.sub("", FENCE.sub("", path.read_text()))
    targets = [match.group(1) for match in LINK.finditer(text)]
    return [target for target in targets if not re.match(r"^([a-z][a-z0-9+.-]*:|#|/)", target)]


def markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def test_the_metric_table_lists_every_metric_the_code_defines() -> None:
    rows = table_rows(load_hooks().metric_table())
    assert [row[0].strip("`") for row in rows] == list(METRIC)
    for row, metric in zip(rows, METRIC.values(), strict=True):
        assert row[3] == metric.unit_text.replace("|", "\\|")
        assert row[4] == ("lower" if metric.lower_is_worse else "higher")
        assert row[5] == f"{metric.tolerance * 100:g} %"
        assert row[6] == metric.noise


def test_the_metric_table_fails_when_a_metric_is_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    from pytest_mlestimate.core import metrics

    shorter = dict(list(METRIC.items())[:-1])
    monkeypatch.setattr(metrics, "METRIC", shorter)
    assert [row[0].strip("`") for row in table_rows(load_hooks().metric_table())] == list(shorter)


def test_the_cli_reference_holds_each_subcommands_help() -> None:
    hooks = load_hooks()
    reference = hooks.cli_reference()
    parser = build_parser()
    commands = hooks.subcommands(parser)
    assert set(commands) >= {"serve", "compare", "html", "capacity", "history", "merge"}
    for name, command in commands.items():
        assert f"### `mlestimate {name}`" in reference
        for action in command._actions:
            for option in action.option_strings:
                assert option in reference, (name, option)


def test_the_hook_fills_in_both_markers_and_the_pages_carry_them() -> None:
    hooks = load_hooks()
    assert hooks.METRIC_MARKER in (DOCS / "figures.md").read_text()
    assert hooks.CLI_MARKER in (DOCS / "cli.md").read_text()
    page = hooks.on_page_markdown(f"a\n\n{hooks.METRIC_MARKER}\n\n{hooks.CLI_MARKER}\n", page=None, config={}, files=[])
    assert hooks.METRIC_MARKER not in page and hooks.CLI_MARKER not in page
    assert "`total_training_time`" in page and "usage: mlestimate merge" in page


def test_the_readme_is_a_front_page() -> None:
    size = len(README.read_bytes())
    assert size <= README_LIMIT, f"README.md is {size} bytes; move detail into docs/"


def test_the_link_finder_finds_the_readmes_links() -> None:
    links = relative_links(README)
    assert "docs/scenarios.md" in links and len(links) >= 10


@pytest.mark.parametrize("path", markdown_files(), ids=lambda path: str(path.relative_to(ROOT)))
def test_every_relative_link_points_to_a_file_that_exists(path: Path) -> None:
    missing = [target for target in relative_links(path) if not (path.parent / target.partition("#")[0]).exists()]
    assert missing == [], f"{path.relative_to(ROOT)} links to files that do not exist"


def test_every_page_is_in_the_navigation() -> None:
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    listed = [next(iter(entry.values())) for entry in config["nav"]]
    assert sorted(listed) == sorted(page.name for page in DOCS.glob("*.md"))


def test_the_documented_sweep_examples_read_as_documented() -> None:
    section = (DOCS / "scenarios.md").read_text().partition("## Sweeps")[2].partition("\n## ")[0]
    yaml_example = section.partition("```yaml\n")[2].partition("```")[0]
    csv_example = section.partition("```csv\n")[2].partition("```")[0]
    swept = read_scenario_file(yaml_example)
    assert len(swept) == 12 and swept[0].name == "tiny[batch_size=2,amp=off,image_size=128x128]"
    assert swept[-1].name == "tiny[batch_size=8,amp=bf16,image_size=256x256]"
    assert not any(entry.problems for entry in swept)
    rows = read_scenario_table(csv_example, "sweep.csv")
    assert [row.name for row in rows] == ["frcnn-b4", "frcnn-b8-bf16", "retina-b4"]
    assert not any(row.problems for row in rows)
