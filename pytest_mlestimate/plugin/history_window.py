"""The plugin's side of the run history (``history.py``): ``--mlestimate-history PATH`` records the run when it
ends, after the reports are written, and ``--mlestimate-history-window N`` judges each scenario against the last
N sessions of that history on the same environment, as ``--mlestimate-compare`` judges against a saved baseline.
PATH is an sqlite file, or the ``postgresql://`` URL of the database a fleet of runners records in.

The window is judged around the scenario's own verdict (``verdict.judge``), not inside it: its regression checks
join the verdict's table and the record's ``budgets``, and a failure is the same ``OverBudget`` failure a saved
baseline gives, with a suspected timing regression measured once more first."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_mlestimate.core.errors import brief
from pytest_mlestimate.stores.postgres import is_database_url
from pytest_mlestimate.stores.run_history import named

MAX_WINDOW = 1000


@dataclass(frozen=True)
class HistoryOptions:
    path: Path | str | None = None
    """The history's file, or its database's URL."""
    window: int | None = None
    """Past sessions a scenario is judged against; None: not judged against the history."""

    @classmethod
    def from_config(cls, config: pytest.Config) -> HistoryOptions:
        option = config.option
        text = getattr(option, "mlestimate_history", None)
        path: Path | str | None = None
        if is_database_url(text):
            path = text
        elif text:
            path = Path(text)
            path = path if path.is_absolute() else Path(config.invocation_params.dir) / path
        raw = getattr(option, "mlestimate_history_window", None)
        if raw is None:
            return cls(path)
        if not str(raw).isdigit() or not 1 <= int(raw) <= MAX_WINDOW:
            raise pytest.UsageError(
                f"pytest-mlestimate: --mlestimate-history-window {brief(raw)} is not a number of runs from 1 to "
                f"{MAX_WINDOW}"
            )
        if path is None:
            raise pytest.UsageError(
                "pytest-mlestimate: --mlestimate-history-window needs --mlestimate-history PATH, the file of past runs"
            )
        return cls(path, int(raw))

    @property
    def shown(self) -> str:
        """The history as the terminal names it: a database without its password."""
        return named(self.path) if self.path is not None else ""

    @contextmanager
    def judging(self, item: pytest.Item) -> Iterator[None]:
        """Around a scenario's test: once its own verdict is given (passed, or failed on its budgets or baseline),
        judge it against the window as well."""
        from pytest_mlestimate.plugin.items import OverBudget

        try:
            yield
        except OverBudget as failed:
            self._judge(item, failed)
            raise
        self._judge(item, None)

    def _judge(self, item: pytest.Item, failed: Any) -> None:
        from pytest_mlestimate.plugin.items import OverBudget, ScenarioItem
        from pytest_mlestimate.reports.record import RECORDS
        from pytest_mlestimate.stores.run_history import HistoryError
        from pytest_mlestimate.verdicts.budgets import Check
        from pytest_mlestimate.verdicts.history import judge_window
        from pytest_mlestimate.verdicts.regression import Run
        from pytest_mlestimate.verdicts.verdict import Verdict, run_of

        estimate = getattr(item, "estimate", None)
        if self.window is None or self.path is None or not isinstance(item, ScenarioItem) or estimate is None:
            return
        if not estimate.fits:
            return
        record = item.stash[RECORDS][0]
        runs = [Run.from_dict(run) for run in record.get("runs") or []] or [run_of(estimate)]
        tolerances = {**item.settings.tolerances, **item.tolerances}
        try:
            comparison, past = judge_window(
                self.path,
                record["file"],
                item.name,
                estimate.scenario.model_dump(mode="json"),
                estimate.profile.environment,
                runs,
                tolerances,
                self.window,
                measure_again=lambda: run_of(item._measure_again()),
            )
        except HistoryError as exc:  # as an unreadable baseline file: said, and nothing judged against it
            record["warnings"] = [*(record.get("warnings") or []), f"baseline not compared: {exc}"]
            return
        checks = comparison.checks
        record["runs"] = [run.to_dict() for run in runs]
        record["budgets"] = [*(record.get("budgets") or []), *(check.to_dict() for check in checks)]
        record["warnings"] = [*(record.get("warnings") or []), *comparison.warnings, *self._described(past)]
        verdict = failed.verdict if failed is not None else None
        if verdict is None:
            old = [Check.from_dict(check) for check in record["budgets"][: len(record["budgets"]) - len(checks)]]
            verdict = Verdict(item.name, item.where, checks=old, failure=estimate.failure, runs=runs)
        verdict.checks = [*verdict.checks, *checks]
        verdict.runs = runs
        if not verdict.passed:
            # explained against the window's runs: they are this check's baseline
            verdict.explain(comparison.baseline_runs, estimate.scenario.application_type == "training")
            record["explanation"] = verdict.explanation.to_dicts()
            record["message"] = verdict.summary()
            if failed is None:
                raise OverBudget(verdict)

    def _described(self, past: Any) -> list[str]:
        if not past.runs:
            return []
        commits = [c[:7] for c in past.commits if c]
        span = f", commits {commits[0]}..{commits[-1]}" if commits else ""
        skipped = "; ".join(f"{count} run(s) left out: {why}" for why, count in past.left_out.items())
        return [
            f"history window: judged against {len(past.runs)} run(s) of the last {past.sessions} session(s) in "
            f"{self.shown}{span}" + (f" ({skipped})" if skipped else "")
        ]

    def record(self, records: Sequence[dict[str, Any]], rootdir: Path) -> list[str]:
        """Record the run; the lines the terminal summary shows (a ``warning:`` when it could not be recorded: the
        reports are written before and are not touched)."""
        if self.path is None:
            return []
        from pytest_mlestimate.core.git import source_control
        from pytest_mlestimate.reports.json_report import build_document
        from pytest_mlestimate.stores.run_history import HistoryError
        from pytest_mlestimate.verdicts.history_recording import record_report

        commit, branch = source_control(rootdir)
        try:
            recorded = record_report(self.path, build_document(list(records)), commit, branch)
        except HistoryError as exc:
            return [f"warning: the run was not recorded in the history: {exc}"]
        except Exception as exc:  # the reports are written; the summary and the other lines still come
            return [f"warning: the run was not recorded in the history {self.shown}: {type(exc).__name__}: {exc}"]
        if recorded.run_id is None:
            return [f"history not recorded: no scenario was measured ({self.shown})"]
        where = f"commit {commit[:7]}" if commit else "no commit known"
        return [
            f"history recorded: {self.shown} ({recorded.scenarios} measured scenario(s), {where}"
            + (f" on {branch})" if branch else ")")
        ]
