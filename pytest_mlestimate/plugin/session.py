"""What a ``--mlestimate`` run adds to pytest: collecting scenario files, gathering each scenario's record
(on the controller when xdist runs workers) and writing the reports after every scenario and at the end,
so that an interrupted run or a crashed scenario still leaves them behind."""

from __future__ import annotations

import copy
import os
from collections.abc import Generator
from pathlib import Path
from typing import Any

import pytest

from pytest_mlestimate.plugin.items import ScenarioFile, relative_file
from pytest_mlestimate.plugin.record import RECORDS, new_record, outcome_after
from pytest_mlestimate.plugin.reports import github, terminal
from pytest_mlestimate.plugin.reports.json_report import write_json
from pytest_mlestimate.plugin.reports.junit_report import write_junit
from pytest_mlestimate.plugin.scenario_file import looks_like_scenarios
from pytest_mlestimate.plugin.verdict import PLUGIN_WARNINGS

YAML_SUFFIXES = (".yaml", ".yml")


def _path_option(config: pytest.Config, value: str | None) -> Path | None:
    if not value:
        return None
    path = Path(value)
    return path if path.is_absolute() else Path(config.invocation_params.dir) / path


class MlestimateRun:
    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.is_worker = hasattr(config, "workerinput")
        self.json_path = _path_option(config, config.option.mlestimate_json)
        self.junit_path = _path_option(config, config.option.mlestimate_junitxml)
        self.records: dict[tuple[str, str], dict[str, Any]] = {}

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

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if self.is_worker:
            return
        records = getattr(report, "mlestimate", None)
        if records is None and report.failed and self._is_scenario(report):
            records = self._lost_record(report)  # e.g. an xdist worker died while measuring it
        for record in records or []:
            key = (report.nodeid, record["name"])
            previous = self.records.get(key, {}).get("outcome")
            merged = {**self.records.get(key, {}), **record}
            merged["outcome"] = outcome_after(previous, report.when, report.outcome)
            if merged["outcome"] in ("failed", "error") and not merged.get("message"):
                merged["message"] = report.longreprtext[-4000:]
            if report.outcome == "skipped" and not merged.get("message") and isinstance(report.longrepr, tuple):
                merged["message"] = report.longrepr[2]
            self.records[key] = merged
        if records and (report.when == "teardown" or report.failed):
            self.write_reports()

    def _is_scenario(self, report: pytest.TestReport) -> bool:
        return report.nodeid.split("::")[0].endswith(YAML_SUFFIXES)

    def _lost_record(self, report: pytest.TestReport) -> list[dict[str, Any]]:
        file, _, name = report.nodeid.partition("::")
        line = (report.location[1] or 0) + 1
        record = new_record(name, relative_file(self.config, Path(self.config.rootpath, file)), line, report.nodeid)
        record["message"] = report.longreprtext[-4000:]
        return [record]

    # reports ------------------------------------------------------------------------------------------
    def ordered(self) -> list[dict[str, Any]]:
        return sorted(self.records.values(), key=lambda r: (r["file"], r["line"], r["name"]))

    def write_reports(self) -> None:
        records = self.ordered()
        if self.json_path:
            write_json(self.json_path, records)
        if self.junit_path:
            write_junit(self.junit_path, records)

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.is_worker:
            return
        self.write_reports()
        summary = os.environ.get("GITHUB_STEP_SUMMARY")
        if summary and self.records:
            with open(summary, "a", encoding="utf-8") as handle:
                handle.write(github.step_summary(self.ordered()))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.is_worker or not self.records:
            return
        records = self.ordered()
        terminalreporter.write_sep("=", "mlestimate summary")
        for line in terminal.table(records):
            terminalreporter.write_line(line)
        verbose = self.config.get_verbosity() > 0
        hidden = 0
        for record in records:
            for warning in record.get("warnings") or []:
                if verbose or warning.startswith(PLUGIN_WARNINGS):
                    terminalreporter.write_line(f"warning: {record['name']}: {warning}")
                else:
                    hidden += 1
        if hidden:
            terminalreporter.write_line(
                f"{hidden} more warning(s) from the measurements: run with -v or read the report"
            )
        for path in (self.json_path, self.junit_path):
            if path:
                terminalreporter.write_line(f"report written: {path}")
        if os.environ.get("GITHUB_ACTIONS") == "true":
            for line in github.annotations(records):
                terminalreporter.write_line(line)
