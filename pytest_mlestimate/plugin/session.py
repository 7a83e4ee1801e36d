"""What a ``--mlestimate`` run adds to pytest: collecting scenario files, gathering each scenario's record
(on the controller when xdist runs workers) and writing the reports as scenarios finish and at the end,
so that an interrupted run or a crashed scenario still leaves them behind.

Rewriting the reports after every scenario made a run quadratic (1,000 invalid scenarios: 1.6 s without
reports, 112 s with them), so a rewrite waits until ``PACE`` times the last rewrite's cost has passed: the
reports then cost at most about 1/``PACE`` of the run, a scenario that took real time is written at once,
and a scenario finished in the wait is written by a timer thread when it ends, even if the next scenario
hangs. A killed run therefore leaves valid reports (each is replaced atomically) of every scenario that
finished more than a moment (``PACE`` times one rewrite) before the kill."""

from __future__ import annotations

import copy
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import pytest

from pytest_mlestimate.plugin.history_window import HistoryOptions
from pytest_mlestimate.plugin.items import SETTINGS, ScenarioFile, relative_file, safe_message
from pytest_mlestimate.plugin.progress_display import DISPLAY, display_for
from pytest_mlestimate.reports import github, terminal
from pytest_mlestimate.reports.json_report import write_json
from pytest_mlestimate.reports.junit_report import write_junit
from pytest_mlestimate.reports.record import RECORDS, mark_provenance, new_record, outcome_after
from pytest_mlestimate.scenarios.files import looks_like_scenarios
from pytest_mlestimate.verdicts.baseline import SavedBaselines
from pytest_mlestimate.verdicts.regression import FAMILY_ALPHA
from pytest_mlestimate.verdicts.verdict import PLUGIN_WARNINGS

ALWAYS_SHOWN = (*PLUGIN_WARNINGS, "cache ")
"""Warnings the terminal shows without -v: the plugin's own, and a cache that could not be used (it concerns
every later run, not one scenario's figures)."""

YAML_SUFFIXES = (".yaml", ".yml")
PACE = 10.0
"""A report rewrite waits PACE times the last rewrite's duration after it..."""
MAX_WAIT = 2.0
"""... but never more than MAX_WAIT seconds: one slow write (a busy disk, a cold import) must not hold back the
scenarios that finish after it, which a kill would then lose."""


class PacedWriter:
    """Calls ``write`` when told something changed, at most once per ``pace`` times its last duration; a
    change inside that wait is written by a timer thread when the wait ends. ``lock`` guards what ``write``
    reads: hold it while changing that."""

    def __init__(self, write: Callable[[], None], pace: float = PACE) -> None:
        self.lock = threading.RLock()
        self._write = write
        self._pace = pace
        self._dirty = False
        self._not_before = 0.0
        self._timer: threading.Timer | None = None
        self._failure: BaseException | None = None

    def changed(self) -> None:
        with self.lock:
            self._raise_failure()
            self._dirty = True
            wait = self._not_before - time.monotonic()
            if wait <= 0:
                self._flush()
            elif self._timer is None:
                self._timer = threading.Timer(wait, self._on_timer)
                self._timer.daemon = True
                self._timer.start()

    def close(self) -> None:
        """The final write, whether or not anything is pending, and no timer left behind."""
        with self.lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._raise_failure()
            self._flush()

    def _on_timer(self) -> None:
        with self.lock:
            self._timer = None
            if self._dirty and self._failure is None:
                try:
                    self._flush()
                except Exception as exc:  # raised again in the main thread, where pytest reports it
                    self._failure = exc
                    print(f"mlestimate: writing the reports failed: {exc!r}", file=sys.stderr, flush=True)

    def _flush(self) -> None:
        start = time.monotonic()
        self._write()
        self._dirty = False
        end = time.monotonic()
        self._not_before = end + min(self._pace * (end - start), MAX_WAIT)

    def _raise_failure(self) -> None:
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure


def _path_option(config: pytest.Config, value: str | None) -> Path | None:
    if not value:
        return None
    path = Path(value)
    return path if path.is_absolute() else Path(config.invocation_params.dir) / path


def _report_message(report: pytest.TestReport) -> str:
    """An unexpected error's own line (``RuntimeError: ...``) first, then the end of its traceback."""
    text = report.longreprtext[-4000:]
    crash = getattr(report.longrepr, "reprcrash", None)
    headline = getattr(crash, "message", None)
    if headline and not text.startswith(headline):
        text = f"{headline}\n\n{text}"
    return safe_message(text)


def _interrupt(number: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"stopped by {signal.Signals(number).name}")


def interrupt_on_sigterm() -> bool:
    """pytest dies of SIGTERM (what a cancelled CI job sends) without finishing: as an interrupt, the session
    finishes, the reports are written and a running profile is stopped. Only where nobody else handles it."""
    if threading.current_thread() is not threading.main_thread():
        return False
    if signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        return False
    signal.signal(signal.SIGTERM, _interrupt)
    return True


class MlestimateRun:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.is_worker = hasattr(config, "workerinput")
        self.json_path = _path_option(config, config.option.mlestimate_json)
        self.junit_path = _path_option(config, config.option.mlestimate_junitxml)
        self.markdown_path = _path_option(config, config.option.mlestimate_markdown)
        self.html_path = _path_option(config, config.option.mlestimate_html)
        self.html_problem: str | None = None
        if self.html_path and not self.is_worker:
            from pytest_mlestimate.reports.html.charts import INSTALL_HINT, matplotlib_missing

            if matplotlib_missing():
                raise pytest.UsageError(
                    f"pytest-mlestimate: --mlestimate-html draws its charts with matplotlib: {INSTALL_HINT}"
                )
        self.history = HistoryOptions.from_config(config)
        self.history_lines: list[str] = []
        self.records: dict[tuple[str, str], dict[str, Any]] = {}
        self.writer = PacedWriter(self.write_reports)
        self.finished = False
        self.handles_sigterm = interrupt_on_sigterm()

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        display = display_for(self.config, self.config.pluginmanager.get_plugin("terminalreporter"))
        if display is not None:
            self.config.stash[DISPLAY] = display

    # collection ---------------------------------------------------------------------------------------
    def pytest_collect_file(self, file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
        if file_path.suffix not in YAML_SUFFIXES:
            return None
        try:
            text = file_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return None
        if not looks_like_scenarios(text):
            return None
        return ScenarioFile.from_parent(parent, path=file_path)

    # records ------------------------------------------------------------------------------------------
    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
        report = yield
        records = item.stash.get(RECORDS, None)
        if records:
            report.mlestimate = copy.deepcopy(records)
        return report

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_call(self, item: pytest.Item) -> Generator[None, Any, Any]:
        """With --mlestimate-history-window, a scenario is judged against its past runs too."""
        if self.history.window is None:
            return (yield)
        with self.history.judging(item):
            return (yield)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.is_worker:
            return
        records = getattr(report, "mlestimate", None)
        if records is None and report.failed and self._is_scenario(report):
            records = self._lost_record(report)  # e.g. an xdist worker died while measuring it
        with self.writer.lock:
            for record in records or []:
                key = (report.nodeid, record["name"])
                self.records[key] = self._merged(self.records.get(key, {}), record, report)
        if records and (report.when == "teardown" or report.failed):
            self.writer.changed()

    @staticmethod
    def _merged(previous: dict[str, Any], record: dict[str, Any], report: pytest.TestReport) -> dict[str, Any]:
        """One more phase of a scenario folded into its record; the first failure's message stays (a later
        phase's record, e.g. teardown's, carries none of an unexpected setup error)."""
        merged = {**previous, **record}
        merged["duration"] = (previous.get("duration") or 0.0) + report.duration
        merged["outcome"] = outcome_after(previous.get("outcome"), report.when, report.outcome)
        kept = previous.get("message")
        if kept and (previous.get("outcome") in ("failed", "error") or not merged.get("message")):
            merged["message"] = kept
        if merged["outcome"] in ("failed", "error") and not merged.get("message"):
            merged["message"] = _report_message(report)
        if report.outcome == "skipped" and not merged.get("message") and isinstance(report.longrepr, tuple):
            merged["message"] = safe_message(str(report.longrepr[2]))
        return merged

    def _is_scenario(self, report: pytest.TestReport) -> bool:
        return report.nodeid.split("::")[0].endswith((*YAML_SUFFIXES, ".csv"))

    def _lost_record(self, report: pytest.TestReport) -> list[dict[str, Any]]:
        file, _, name = report.nodeid.partition("::")
        line = (report.location[1] or 0) + 1
        record = new_record(name, relative_file(self.config, Path(self.config.rootpath, file)), line, report.nodeid)
        record["message"] = _report_message(report)
        return [record]

    # reports ------------------------------------------------------------------------------------------
    def ordered(self) -> list[dict[str, Any]]:
        with self.writer.lock:
            records = list(self.records.values())
            mark_provenance(records)
        return sorted(records, key=lambda r: (r["file"], r["line"], r["name"]))

    def write_reports(self) -> None:
        if not (self.json_path or self.junit_path or self.markdown_path):
            return
        records = self.ordered()
        if self.json_path:
            write_json(self.json_path, records)
        if self.junit_path:
            write_junit(self.junit_path, records)
        if self.markdown_path:
            from pytest_mlestimate.reports.markdown import code, write_markdown

            json_option = self.config.option.mlestimate_json
            write_markdown(self.markdown_path, records, f"the JSON report {code(json_option)}" if json_option else None)

    def write_html(self) -> None:
        """Once, after the other reports are written: a page that cannot be drawn costs no other report, and
        the terminal says why it is missing."""
        if not self.html_path:
            return
        try:
            from pytest_mlestimate.reports.html import write_html
            from pytest_mlestimate.reports.json_report import build_document

            write_html(build_document(self.ordered()), self.html_path)
        except Exception as exc:
            self.html_problem = f"the HTML report {self.html_path} was not written: {exc!r}"

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.is_worker:
            return
        self.finished = True
        self.writer.close()
        self.write_html()
        self.history_lines = self.history.record(self.ordered(), Path(self.config.rootpath))
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary and self.records:
            with open(summary, "a", encoding="utf-8") as handle:
                handle.write(github.step_summary(self.ordered()))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.is_worker or not self.records:
            return
        records = self.ordered()
        terminalreporter.write_sep("=", "mlestimate summary")
        lines = [*terminal.table(records), *terminal.skip_reasons(records), *terminal.explanations(records)]
        for line in [*lines, *terminal.error_rate(records, FAMILY_ALPHA)]:
            terminalreporter.write_line(line)
        verbose = self.config.get_verbosity() > 0
        shown, hidden = 0, 0
        for record in records:
            for warning in record.get("warnings") or []:
                if verbose or warning.startswith(ALWAYS_SHOWN):
                    terminalreporter.write_line(f"warning: {record['name']}: {warning}")
                    shown += 1
                else:
                    hidden += 1
        if hidden:
            terminalreporter.write_line(terminal.hidden_warnings(hidden, after_others=shown > 0))
        saved = SavedBaselines.of(records, self.config.stash[SETTINGS].save_dir)
        for line in saved.lines(self.config.invocation_params.dir):
            terminalreporter.write_line(line)
        html = None if self.html_problem else self.html_path
        for path in (self.json_path, self.junit_path, self.markdown_path, html):
            if path:
                terminalreporter.write_line(f"report written: {path}")
        if self.html_problem:
            terminalreporter.write_line(f"warning: {self.html_problem}", yellow=True)
        for line in self.history_lines:
            terminalreporter.write_line(line, yellow=line.startswith("warning:"))
        if os.environ.get("GITHUB_ACTIONS") == "true":
            for line in github.annotations(records):
                terminalreporter.write_line(line)

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        """A session that ended before its finish (an internal error) still leaves its reports."""
        if self.handles_sigterm and signal.getsignal(signal.SIGTERM) is _interrupt:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if not self.is_worker and not self.finished:
            self.writer.close()
        display = config.stash.get(DISPLAY, None)
        if display is not None:
            display.close()
            del config.stash[DISPLAY]
