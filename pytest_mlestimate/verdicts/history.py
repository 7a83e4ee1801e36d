"""The run history read back (``stores/run_history.py`` keeps it): a scenario's series and the window it is
judged against.

- a scenario's **series** of one metric on one environment, ordered as recorded, for ``mlestimate history``
  and its search for steps (``steps.py``);
- a **window** of the last N past runs on the same environment and scenario, which is a baseline as
  ``--mlestimate-compare`` uses one (``regression.compare_runs`` judges), measured over many sessions instead
  of one: its own spread shows the drift between sessions that a baseline's back-to-back runs cannot, so with
  enough sessions no drift floor is assumed (``WINDOW_MIN_SESSIONS``).

Importing this module loads neither torch nor the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_mlestimate.core.errors import brief
from pytest_mlestimate.core.metrics import METRIC, Metric
from pytest_mlestimate.stores.history_queries import HistoryError, canonical, stored_figure, stored_mapping
from pytest_mlestimate.stores.interfaces import run_history_at
from pytest_mlestimate.stores.postgres import is_database_url
from pytest_mlestimate.stores.run_history import named
from pytest_mlestimate.verdicts.baseline import Comparison, comparable
from pytest_mlestimate.verdicts.history_recording import stored_run
from pytest_mlestimate.verdicts.regression import DRIFT_FLOOR, Run, compare_runs
from pytest_mlestimate.verdicts.run_environment import device_kind, fingerprint

WINDOW_MIN_SESSIONS = 10
"""Past sessions a window needs before its own spread is trusted for the noise between sessions. With fewer,
timings are judged as against a saved baseline, never below ``regression.DRIFT_FLOOR``: a handful of sessions
may all have met the machine in one mood."""


# -- the series --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """One session's figure of a scenario's metric."""

    run_id: int
    commit: str | None
    branch: str | None
    recorded_at: str
    value: float
    measured: str | None
    """``this run``, ``cache`` or ``shared with ...``, as the report said."""

    @property
    def short(self) -> str:
        return self.commit[:7] if self.commit else "-"


@dataclass(frozen=True)
class Series:
    file: str
    name: str
    metric: Metric
    environment: Mapping[str, Any]
    points: tuple[Point, ...]
    elsewhere: int = 0
    """Sessions of the scenario on other environments, left out."""


def metric_named(text: str) -> Metric:
    """A metric by its snake-case name (``total_training_time``) or documented key (``Total Training Time``)."""
    for metric in METRIC.values():
        if text in (metric.name, metric.key) or text.lower() == metric.key.lower():
            return metric
    raise HistoryError(f"metric {brief(text)} is unknown; the metrics are: {', '.join(METRIC)}")


def series(
    path: Path | str,
    name: str,
    metric: str | Metric,
    file: str | None = None,
    environment: Mapping[str, Any] | None = None,
) -> Series:
    """A scenario's figures of ``metric`` on one environment (by default the environment it was last recorded
    on), ordered as recorded. ``name`` may be ``FILE::NAME``; ``path`` may be a ``postgresql://`` URL."""
    chosen = metric if isinstance(metric, Metric) else metric_named(metric)
    store = run_history_at(path)
    scenario = store.resolve(f"{file}::{name}" if file else name)
    rows = store.series_rows(scenario.file, scenario.name, chosen.name)
    wanted = fingerprint(environment) if environment is not None else rows[-1][4]
    kept = [row for row in rows if row[4] == wanted]
    points = tuple(
        Point(run_id, commit, branch, recorded_at, figure, measured)
        for run_id, commit, branch, recorded_at, _, _, measured, value in kept
        if (figure := stored_figure(value)) is not None
    )
    shown_environment = stored_mapping(kept[-1][5]) if kept else dict(environment or {})
    return Series(scenario.file, scenario.name, chosen, shown_environment, points, len(rows) - len(kept))


# -- the window --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Window:
    """The past runs a new measurement is judged against."""

    runs: tuple[Run, ...]
    sessions: int
    commits: tuple[str | None, ...] = ()
    """The sessions' commits, oldest first."""
    left_out: dict[str, int] = field(default_factory=dict)
    """Sessions not used, by reason: another scenario definition, contended, the same measurement again."""


def _figures_key(run: Run) -> tuple[tuple[str, float | None], ...]:
    return tuple(sorted(run.metrics.items()))


def _compared(scenario: Mapping[str, Any]) -> str:
    return canonical(comparable(scenario))


def window(
    path: Path | str,
    file: str,
    name: str,
    scenario: Mapping[str, Any],
    environment: Mapping[str, Any],
    size: int,
    exclude: Sequence[Run] = (),
) -> Window:
    """The runs of the last ``size`` sessions of the scenario on ``environment`` whose scenario fields equal
    ``scenario``. A run whose figures equal an earlier session's, or one of ``exclude`` (the new runs), is the same
    measurement recalled from the cache: it is taken once, in the session that measured it, or not at all.
    Contended runs are left out. A history not yet written is an empty window."""
    store = run_history_at(path)
    if not store.exists():
        return Window((), 0)
    rows = store.measurement_rows(file, name, fingerprint(environment))
    wanted = _compared(dict(scenario))
    new = {_figures_key(run) for run in exclude}
    left_out: dict[str, int] = {}
    parsed = []
    for run_id, commit, fields, text in rows:
        run, fields_read = stored_run(text), stored_mapping(fields)
        if run is None or not fields_read:  # a row another program or a crash damaged
            left_out["unreadable in the history"] = left_out.get("unreadable in the history", 0) + 1
            continue
        parsed.append((run_id, commit, _compared(fields_read), run))
    oldest = {_figures_key(run): position for position, (*_, run) in enumerate(parsed)}  # rows run newest first
    taken: dict[int, list[Run]] = {}
    commits: dict[int, str | None] = {}
    for position, (run_id, commit, fields, run) in enumerate(parsed):
        if run_id not in taken and len(taken) >= size:
            break
        key = _figures_key(run)
        if fields != wanted:
            reason: str | None = "the scenario was defined differently"
        elif run.contended:
            reason = "contended"
        elif key in new or oldest[key] != position:
            reason = "the same measurement again (cache)"
        else:
            reason = None
        if reason:
            left_out[reason] = left_out.get(reason, 0) + 1
            continue
        taken.setdefault(run_id, []).append(run)
        commits[run_id] = commit
    order = sorted(taken)
    return Window(
        tuple(run for run_id in order for run in taken[run_id]), len(order), tuple(commits[i] for i in order), left_out
    )


def window_floor(sessions: int, device_kind: str) -> float:
    """The least spread between runs assumed for timings against a window of ``sessions`` past sessions: none
    once the window is wide enough to show the drift between sessions itself, else ``DRIFT_FLOOR``."""
    return 0.0 if sessions >= WINDOW_MIN_SESSIONS else DRIFT_FLOOR[device_kind]


def compare_window(
    past: Window, runs: Sequence[Run], tolerances: Mapping[str, float], kind: str, path: Path | str
) -> Comparison:
    """The regression checks of ``runs`` against the window's runs: ``regression.compare_runs``, the window's runs
    as the baseline's."""
    where = named(path)
    # a database is named without its password: a comparison's path is only ever shown
    result = Comparison(where if is_database_url(path) else Path(path))  # type: ignore[arg-type]
    if not past.runs:
        result.missing = True
        result.warnings.append(f"baseline not compared: history {where} holds no earlier run of this scenario here")
        return result
    floor = window_floor(past.sessions, kind)
    result.changes = compare_runs(past.runs, runs, tolerances, floor=floor)
    result.baseline_runs = past.runs
    if floor:
        result.warnings.append(
            f"baseline window of history {where} holds {past.sessions} session(s), fewer than {WINDOW_MIN_SESSIONS}: "
            f"timings are judged with the assumed {floor:.0%} drift between runs, as against a saved baseline"
        )
    if runs and all(run.contended for run in runs):
        result.warnings.append("baseline timings not judged: every measurement of this run was contended")
    return result


def judge_window(
    path: Path | str,
    file: str,
    name: str,
    scenario: Mapping[str, Any],
    environment: Mapping[str, Any],
    runs: list[Run],
    tolerances: Mapping[str, float],
    size: int,
    measure_again: Callable[[], Run] | None = None,
) -> tuple[Comparison, Window]:
    """Judge a scenario's new ``runs`` against the last ``size`` sessions of the history, as the plugin judges
    against a saved baseline: a suspected timing regression judged on one run is measured once more
    (``measure_again``, appended to ``runs``) before the verdict."""
    past = window(path, file, name, scenario, environment, size, exclude=runs)
    kind = device_kind(environment)
    comparison = compare_window(past, runs, tolerances, kind, path)
    if measure_again is not None and len(runs) < 2 and comparison.wants_another_run(runs):
        runs.append(measure_again())
        comparison = compare_window(past, runs, tolerances, kind, path)
    return comparison, past
