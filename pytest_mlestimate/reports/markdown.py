"""The pull-request comment: the run's diff against the baseline as GitHub Markdown.

One table of scenario x metric: baseline -> now, the change with its confidence interval where a timing was
judged, the budget's headroom and the verdict. Failed scenarios come first, with the modules that grew under
them (``explain.py``), then passed scenarios whose figures changed; unchanged metrics are folded in a
``<details>`` block. Built from the JSON report's records, so the plugin (``--mlestimate-markdown``) and
``mlestimate merge`` write the same comment.

GitHub refuses a comment over 65,536 characters: when the whole would be longer than ``LIMIT``, the unchanged
scenarios are left out first, then the changed, then the failed ones, and the comment says how many and where
the full report is. ``MARKER`` lets a workflow find its own comment and update it in place.

Every text a pull request controls (scenario names, files, module names, messages) is written as code, so
that it renders as text: never a link, an image, a mention or markup.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_mlestimate.core.files import write_atomically
from pytest_mlestimate.core.units import format_quantity
from pytest_mlestimate.verdicts.budgets import Check, lower_is_worse
from pytest_mlestimate.verdicts.explain import Explanation

MARKER = "<!-- mlestimate-report -->"
GITHUB_LIMIT = 65_536
"""The most characters GitHub takes in one comment."""
LIMIT = 60_000
"""What this writer aims under: GitHub's limit less a margin for how it counts some characters (an emoji may
count as two) and for a line a workflow adds."""
MESSAGE_CHARS = 300
"""A message's first line is cut to this many characters in the comment; the full report has the rest."""
HEADER = ("scenario", "metric", "baseline → now", "change", "budget", "verdict")
ICONS = {"failed": "❌", "error": "💥", "passed": "✅", "skipped": "⏭️"}


def code(text: object, limit: int = 200) -> str:
    """``text`` as an inline code span on one line, safe inside a table cell."""
    flat = " ".join(str(text).split()) or "-"
    if len(flat) > limit:
        flat = flat[: limit - 3] + "..."
    longest = run = 0
    for char in flat:
        run = run + 1 if char == "`" else 0
        longest = max(longest, run)
    fence = "`" * (longest + 1)
    pad = " " if flat.startswith("`") or flat.endswith("`") else ""
    return f"{fence}{pad}{flat}{pad}{fence}".replace("|", "\\|")


@dataclass(frozen=True)
class MetricRow:
    """One metric of one scenario: its budget checks and its regression check, as one row."""

    metric: str
    checks: tuple[Check, ...]

    @property
    def regression(self) -> Check | None:
        return next((c for c in self.checks if c.compares), None)

    @property
    def budgets(self) -> list[Check]:
        return [c for c in self.checks if not c.compares]

    @property
    def failed(self) -> bool:
        return any(c.passed is False for c in self.checks)

    @property
    def direction(self) -> int:
        """+1 when the figure moved credibly for the worse against the baseline, -1 for the better, 0 when
        it did not move beyond its noise (a timing's interval holds no change; a peak stayed within its
        tolerance and spread)."""
        check = self.regression
        if check is None or check.value is None or check.baseline is None:
            return 0
        if check.interval is not None:
            low, high = check.interval
            moved = 1 if low > 0 else -1 if high < 0 else 0
        else:
            allowance = abs(check.limit - check.baseline)
            difference = check.value - check.baseline
            moved = 0 if abs(difference) <= allowance else (1 if difference > 0 else -1)
        return -moved if lower_is_worse(self.metric) else moved

    @property
    def changed(self) -> bool:
        return self.failed or self.direction != 0

    def cells(self) -> list[str]:
        first = self.checks[0]
        value = next((c.value for c in self.checks if c.value is not None), None)
        baseline = next((c.baseline for c in self.checks if c.baseline is not None), None)
        now = format_quantity(value, first.dimension)
        if any(c.predicted for c in self.checks):
            now += " (predicted)"
        before = format_quantity(baseline, first.dimension) if baseline is not None else "-"
        change = (self.regression or first).change_text() if baseline is not None else "-"
        return [code(self.metric), f"{before} → {now}", change, self.headroom(), self.verdict()]

    def headroom(self) -> str:
        found = []
        for check in self.budgets:
            limit = check.limit_text()
            if check.value is None:
                found.append(f"{limit}, not measured here")
                continue
            floor = check.kind == "min"
            margin = check.value - check.limit if floor else check.limit - check.value
            if check.limit:
                share = f"{abs(margin) / abs(check.limit):.0%}"
            else:
                share = format_quantity(abs(margin), check.dimension)
            if margin >= 0:
                found.append(f"{limit}, {share} {'above' if floor else 'left'}")
            else:
                found.append(f"{limit}, {share} {'under' if floor else 'over'}")
        return "; ".join(found) or "-"

    def verdict(self) -> str:
        regression = self.regression
        broken = [c for c in self.budgets if c.passed is False]
        reasons = []
        if regression is not None and regression.passed is False:
            reasons.append("regressed")
        reasons += ["under its floor" if c.kind == "min" else "over budget" for c in broken]
        if reasons:
            return "❌ " + ", ".join(dict.fromkeys(reasons))
        if regression is not None and regression.decision == "inconclusive":
            return "❔ inconclusive"
        if all(c.passed is None for c in self.checks):
            return "⚪ not checked"
        if self.direction < 0:
            return "✅ better"
        if self.direction > 0:
            return "✅ worse, within tolerance"
        return "✅ ok"


def metric_rows(record: dict[str, Any]) -> list[MetricRow]:
    """The record's checks grouped by metric, in the order they first appear."""
    grouped: dict[str, list[Check]] = {}
    for entry in record.get("budgets") or []:
        try:
            check = Check.from_dict(entry)
        except (KeyError, TypeError, ValueError):
            continue
        grouped.setdefault(check.metric, []).append(check)
    return [MetricRow(metric, tuple(checks)) for metric, checks in grouped.items()]


def _where(record: dict[str, Any]) -> str:
    place = f"{record.get('file')}:{record.get('line')}"
    return f"{code(record.get('name'))}<br>{code(place)}"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _table(lines: list[str]) -> list[str]:
    return [_row(HEADER), "|" + " --- |" * len(HEADER), *lines]


def _first_line(message: object) -> str:
    text = str(message or "").strip()
    return text.splitlines()[0] if text else ""


@dataclass
class Block:
    """One scenario's lines in a section: table rows, and notes under the table."""

    rows: list[str]
    notes: list[str]

    def size(self) -> int:
        return sum(len(line) + 1 for line in [*self.rows, *self.notes])


def _failure_block(record: dict[str, Any]) -> Block:
    rows = metric_rows(record)
    outcome = record.get("outcome") or "error"
    icon = ICONS.get(outcome, "💥")
    if rows:
        lines = [_row([_where(record) if i == 0 else "", *row.cells()]) for i, row in enumerate(rows)]
    else:
        lines = [_row([_where(record), "-", "-", "-", "-", f"{icon} {outcome}"])]
    notes = []
    if not any(row.failed for row in rows):  # not fitting, an error: only the message says why
        message = _first_line(record.get("message"))
        notes.append(f"- {code(record.get('name'))} {outcome}: {code(message, MESSAGE_CHARS)}")
    explanation = Explanation.from_dicts(record.get("explanation"))
    for metric in explanation.metrics:
        notes.append(f"- {code(record.get('name'))}: {code(explanation.line(metric), MESSAGE_CHARS)}")
    return Block(lines, notes)


def _rows_block(record: dict[str, Any], rows: list[MetricRow]) -> Block:
    return Block([_row([_where(record) if i == 0 else "", *row.cells()]) for i, row in enumerate(rows)], [])


def _unchecked_block(record: dict[str, Any]) -> Block:
    return Block([_row([_where(record), "-", "-", "-", "-", "✅ nothing checked"])], [])


def _skipped_block(record: dict[str, Any]) -> Block:
    reason = _first_line(record.get("message")) or "no reason given"
    return Block([], [f"- {code(record.get('name'))} ({code(record.get('file'))}): {code(reason, MESSAGE_CHARS)}"])


def _count(number: int, noun: str, plural: str | None = None) -> str:
    return f"{number:,} {noun if number == 1 else plural or noun + 's'}"


def _tally(records: Sequence[dict[str, Any]]) -> str:
    counts: dict[str, int] = {}
    for record in records:
        outcome = record.get("outcome") or "error"
        counts[outcome] = counts.get(outcome, 0) + 1
    nouns = {"failed": ("failed", "failed"), "error": ("error", "errors"), "passed": ("passed", "passed")}
    nouns["skipped"] = ("skipped", "skipped")
    parts = [
        f"{ICONS[outcome]} {_count(counts[outcome], *nouns[outcome])}"
        for outcome in ("failed", "error", "passed", "skipped")
        if counts.get(outcome)
    ]
    return ", ".join(parts) or "no scenarios"


def _baseline_lines(records: Sequence[dict[str, Any]]) -> list[str]:
    statuses: dict[str, int] = {}
    for record in records:
        status = (record.get("baseline") or {}).get("status")
        if status:
            statuses[status] = statuses.get(status, 0) + 1
    lines = []
    if statuses.get("compared"):
        lines.append(f"Compared against the baseline: {_count(statuses['compared'], 'scenario')}.")
    if statuses.get("missing"):
        lines.append(
            f"{_count(statuses['missing'], 'scenario has', 'scenarios have')} no baseline: their figures were "
            "judged against their budgets only."
        )
    if statuses.get("not compared"):
        lines.append(
            f"{_count(statuses['not compared'], 'scenario was', 'scenarios were')} not compared: the machine, the "
            "libraries or the scenario differ from the baseline's (the full report's warnings say what)."
        )
    if not statuses:
        lines.append("No baseline was compared in this run: the figures were judged against their budgets only.")
    return lines


@dataclass
class Section:
    title: str
    blocks: list[Block]
    folded: bool = False
    table: bool = True
    noun: str = "scenario"

    def render(self, blocks: Sequence[Block], left_out: int, where: str) -> list[str]:
        rows = [row for block in blocks for row in block.rows]
        notes = [note for block in blocks for note in block.notes]
        body = (_table(rows) if self.table and rows else []) + ([""] if rows and notes else []) + notes
        if left_out:
            noun = self.noun if left_out == 1 else self.noun + "s"
            body += ["", f"{left_out:,} more {noun} left out of this comment to keep it short: {where}."]
        if self.folded:
            return [f"<details><summary>{self.title}</summary>", "", *body, "", "</details>", ""]
        return [f"### {self.title}", "", *body, ""]


def render_markdown(
    records: Sequence[dict[str, Any]], full_report: str | None = None, limit: int = LIMIT, title: str | None = None
) -> str:
    """The comment for ``records`` (the JSON report's scenarios), at most ``limit`` characters: what did not fit
    is counted, and ``full_report`` says where it is (e.g. "the `mlestimate-reports` artifact")."""
    where = f"see {full_report}" if full_report else "see the full JSON report"
    failed, changed, unchanged, skipped = [], [], [], []
    unchanged_metrics = 0
    for record in sorted(records, key=lambda r: (r.get("outcome") != "failed", r.get("file"), r.get("line"))):
        outcome = record.get("outcome")
        if outcome in ("failed", "error") or outcome is None:
            failed.append(_failure_block(record))
            continue
        if outcome == "skipped":
            skipped.append(_skipped_block(record))
            continue
        rows = metric_rows(record)
        moved = [row for row in rows if row.changed]
        still = [row for row in rows if not row.changed]
        if moved:
            changed.append(_rows_block(record, moved))
        if still:
            unchanged.append(_rows_block(record, still))
            unchanged_metrics += len(still)
        elif not rows:
            unchanged.append(_unchecked_block(record))
    sections = [
        Section(f"❌ Failed ({len(failed):,})", failed),
        Section(f"Changed against the baseline ({_count(len(changed), 'scenario')})", changed),
        Section(
            f"Unchanged: {_count(len(unchanged), 'scenario')}, {_count(unchanged_metrics, 'metric')}",
            unchanged,
            folded=True,
        ),
        Section(f"Skipped: {_count(len(skipped), 'scenario')}", skipped, folded=True, table=False),
    ]
    head = [MARKER, f"## {title or 'pytest-mlestimate'}: {_tally(records)}", "", *_baseline_lines(records), ""]
    foot = [f"Full report: {full_report}."] if full_report else []
    used = sum(len(line) + 1 for line in [*head, *foot])
    reserve = 400 * len(sections)  # each section's heading, table header and "left out" line
    shown: list[list[Block]] = []
    for section in sections:
        kept: list[Block] = []
        for block in section.blocks:
            if used + block.size() + reserve > limit:
                break
            kept.append(block)
            used += block.size()
        shown.append(kept)
    lines = list(head)
    for section, kept in zip(sections, shown, strict=True):
        if section.blocks:
            lines += section.render(kept, len(section.blocks) - len(kept), where)
    text = "\n".join([*lines, *foot]).rstrip() + "\n"
    if len(text) > limit:  # the reserve fell short (an unusually long title): cut, never exceed GitHub's limit
        cut = f"\n\n(cut to {limit:,} characters: {where})\n"
        text = text[: limit - len(cut)] + cut
    return text


def write_markdown(path: Path, records: Iterable[dict[str, Any]], full_report: str | None = None) -> None:
    write_atomically(path, render_markdown(list(records), full_report))
