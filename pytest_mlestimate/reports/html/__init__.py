"""The HTML report: one self-contained page with charts, from the JSON report (needs the ``html`` extra).

``render_html`` is the one renderer; the plugin's ``--mlestimate-html``, ``mlestimate html`` and the Python
API are thin ways in. ``mermaid`` draws the GitHub job summary's charts, which need no matplotlib.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pytest_mlestimate.reports.html.charts import INSTALL_HINT, MissingExtraError, require_matplotlib
from pytest_mlestimate.reports.html.page import MOST_CHARTED, render_html

__all__ = ["INSTALL_HINT", "MOST_CHARTED", "MissingExtraError", "render_html", "require_matplotlib", "write_html"]


def write_html(report: Mapping[str, Any] | Path, path: Path, *, most_charted: int | None = MOST_CHARTED) -> None:
    """Render ``report`` (a document, or the path of a JSON report) and write it atomically to ``path``."""
    from pytest_mlestimate.core.files import write_atomically
    from pytest_mlestimate.reports.json_report import read_report

    document = read_report(report, "a JSON report written by --mlestimate-json") if isinstance(report, Path) else report
    write_atomically(path, render_html(document, most_charted=most_charted))
