"""MkDocs hooks: the parts of the documentation that are generated from the code, so that they cannot drift.

- ``<!-- metric-table -->`` becomes a table of every metric defined in ``pytest_mlestimate.core.metrics``;
- ``<!-- cli-reference -->`` becomes the ``--help`` of the ``mlestimate`` command and each of its subcommands,
  from ``pytest_mlestimate.commands.cli.build_parser()``.

Registered in ``mkdocs.yml`` under ``hooks:``; ``metric_table()`` and ``cli_reference()`` are plain functions
that the tests call too.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

METRIC_MARKER = "<!-- metric-table -->"
CLI_MARKER = "<!-- cli-reference -->"
HELP_WIDTH = 100
"""Columns the help text is wrapped at, whatever terminal the documentation is built in."""

METRIC_HEADER = ("name", "section", "key", "unit", "worse when", "tolerance", "noise", "note")


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _row(cells: tuple[str, ...] | list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def metric_table() -> str:
    """A Markdown table of every metric the code defines, in the registry's order."""
    from pytest_mlestimate.core.metrics import METRIC

    lines = [_row(METRIC_HEADER), _row(["---"] * len(METRIC_HEADER))]
    for name, metric in METRIC.items():
        section, *keys = metric.path
        key = ".".join(keys).replace("{batch_size}", "N")
        if metric.capacity:
            note = "answered by a capacity search, when a scenario asks for it"
        elif metric.gpu:
            note = "GPU only: null on a CPU"
        else:
            note = ""
        cells = (
            f"`{name}`",
            f"`{section}`",
            f"`{key}`",
            metric.unit_text,
            "lower" if metric.lower_is_worse else "higher",
            f"{metric.tolerance * 100:g} %",
            metric.noise,
            note,
        )
        lines.append(_row([_cell(cell) for cell in cells]))
    return "\n".join(lines) + "\n"


@contextmanager
def _plain_terminal() -> Iterator[None]:
    """argparse wraps at the terminal's width (``COLUMNS``) and may colour its output: fix both while formatting."""
    saved = {name: os.environ.get(name) for name in ("COLUMNS", "NO_COLOR")}
    os.environ["COLUMNS"] = str(HELP_WIDTH)
    os.environ["NO_COLOR"] = "1"
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser's subcommands by name, in the order they were added."""
    found: dict[str, argparse.ArgumentParser] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found.update(action.choices)
    return found


def cli_reference() -> str:
    """The ``--help`` text of ``mlestimate`` and of each subcommand, one section each."""
    from pytest_mlestimate.commands.cli import build_parser

    parser = build_parser()
    sections = [(f"`{parser.prog}`", parser)]
    sections += [(f"`{sub.prog}`", sub) for sub in subcommands(parser).values()]
    lines: list[str] = []
    with _plain_terminal():
        for title, command in sections:
            lines += [f"### {title}", "", "```text", command.format_help().rstrip(), "```", ""]
    return "\n".join(lines)


def on_page_markdown(markdown: str, **kwargs: Any) -> str:
    """Fill in the generated parts of a page before MkDocs renders it."""
    if METRIC_MARKER in markdown:
        markdown = markdown.replace(METRIC_MARKER, metric_table())
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    return markdown
