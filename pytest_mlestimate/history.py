"""Run history: every run's figures and raw samples kept by commit in one sqlite file.

A run is one ``pytest --mlestimate`` session (or one JSON report): its commit, branch, time (UTC) and, for
each measured scenario, the environment fingerprint, the scenario's fields, the figures the report showed
and every fresh-process run behind them with its samples (``regression.Run``). From it:

- a scenario's **series** of one metric on one environment, ordered as recorded, for ``mlestimate history``
  and its search for steps (``steps.py``);
- a **window** of the last N past runs on the same environment and scenario, which is a baseline as
  ``--mlestimate-compare`` uses one (``regression.compare_runs`` judges), measured over many sessions instead
  of one: its own spread shows the drift between sessions that a baseline's back-to-back runs cannot, so with
  enough sessions no drift floor is assumed (``WINDOW_MIN_SESSIONS``).

The file is safe for several processes: WAL, a busy timeout, and each run written in one ``BEGIN IMMEDIATE``
transaction. A file that is not a history (not sqlite, another program's database, a damaged one, a newer
format) raises ``HistoryError`` naming the path; nothing is overwritten. Importing this module loads neither
torch nor the engine.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pytest_mlestimate.errors import brief
from pytest_mlestimate.metrics import METRIC, Metric
from pytest_mlestimate.plugin.baseline import FINGERPRINT_KEYS, Comparison, comparable, device_kind
from pytest_mlestimate.regression import DRIFT_FLOOR, Run, compare_runs

HISTORY_FORMAT = 1
"""The schema's version, kept in the ``schema_version`` table; a file of a later format is refused."""
APPLICATION_ID = 0x6D6C6548
"""sqlite's application id for a history file ("mleH"), so that another program's database is told apart."""
BUSY_TIMEOUT_S = 60.0
"""How long a writer waits for another process's transaction before giving up with a ``HistoryError``."""
WINDOW_MIN_SESSIONS = 10
"""Past sessions a window needs before its own spread is trusted for the noise between sessions. With fewer,
timings are judged as against a saved baseline, never below ``regression.DRIFT_FLOOR``: a handful of sessions
may all have met the machine in one mood."""
SQLITE_HEADER = b"SQLite format 3\x00"

SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL, written_by TEXT NOT NULL);
CREATE TABLE runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    commit_sha TEXT,
    branch TEXT,
    recorded_at TEXT NOT NULL,
    environment TEXT NOT NULL
);
CREATE TABLE scenarios (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id INTEGER NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    file TEXT NOT NULL,
    name TEXT NOT NULL,
    outcome TEXT,
    measured TEXT,
    fingerprint TEXT NOT NULL,
    environment TEXT NOT NULL,
    scenario TEXT NOT NULL,
    UNIQUE (run_id, file, name)
);
CREATE INDEX scenarios_by_series ON scenarios (file, name, fingerprint, run_id);
CREATE TABLE figures (
    scenario_id INTEGER NOT NULL REFERENCES scenarios (id) ON DELETE CASCADE,
    metric TEXT NOT NULL,
    value REAL NOT NULL,
    PRIMARY KEY (scenario_id, metric)
);
CREATE TABLE measurements (
    scenario_id INTEGER NOT NULL REFERENCES scenarios (id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    run TEXT NOT NULL,
    PRIMARY KEY (scenario_id, position)
);
"""
"""runs: one per session (commit, branch, ISO 8601 UTC time, the report's environment); scenarios: one per
measured scenario of a run (``fingerprint`` is the canonical JSON of ``FINGERPRINT_KEYS``, ``scenario`` of all
its fields); figures: the report's documented figures by snake-case metric; measurements: each fresh-process
run as ``Run.to_dict`` (figures, samples, contended, breakdown)."""


class HistoryError(ValueError):
    """A history file that cannot be used; the message names the path and says what to do."""


# -- where a run comes from --------------------------------------------------------------------------------


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=False, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.SubprocessError):
        return None
    answer = done.stdout.strip()
    return answer if done.returncode == 0 and answer else None


def source_control(root: Path, environ: Mapping[str, str] | None = None) -> tuple[str | None, str | None]:
    """(commit, branch) of a run: GitHub Actions' variables where set (``GITHUB_SHA``; ``GITHUB_HEAD_REF`` on a pull
    request, else ``GITHUB_REF_NAME``), else git in ``root``, else None. A detached HEAD has no branch."""
    environ = os.environ if environ is None else environ
    commit = environ.get("GITHUB_SHA") or _git(root, "rev-parse", "HEAD")
    branch = (
        environ.get("GITHUB_HEAD_REF")
        or environ.get("GITHUB_REF_NAME")
        or _git(root, "rev-parse", "--abbrev-ref", "HEAD")
    )
    return commit, (None if branch == "HEAD" else branch)


def fingerprint(environment: Mapping[str, Any]) -> str:
    """What makes two environments comparable (``baseline.FINGERPRINT_KEYS``), as one canonical string."""
    return json.dumps({key: environment.get(key) for key in FINGERPRINT_KEYS}, sort_keys=True)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def figure_of(record: Mapping[str, Any], metric: Metric) -> float | None:
    """The documented figure a report record shows for ``metric``; None where it has none."""
    scenario = record.get("scenario") or {}
    batch = scenario.get("batch_size") if isinstance(scenario, Mapping) else None
    found: Any = record
    for part in metric.path_for(batch) if isinstance(batch, int) else metric.path:
        if not isinstance(found, Mapping):
            return None
        found = found.get(part)
    if isinstance(found, bool) or not isinstance(found, int | float) or not math.isfinite(found):
        return None
    return float(found)


# -- the file ----------------------------------------------------------------------------------------------


def _problem(path: Path, exc: sqlite3.Error) -> HistoryError:
    text = str(exc)
    if "locked" in text or "busy" in text:
        return HistoryError(
            f"history {path} stayed locked by another process for more than {BUSY_TIMEOUT_S:.0f} s ({text}): "
            "try again when that run has finished"
        )
    if isinstance(exc, sqlite3.DatabaseError) and ("malformed" in text or "not a database" in text):
        return HistoryError(
            f"history {path} is damaged ({text}): move it aside and give a new path; the JSON report is unaffected"
        )
    return HistoryError(f"history {path} cannot be used: {text}")


def _header_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a history, judged from its first bytes, or None."""
    if path.exists() and not path.is_file():
        return f"history {path} is not a file: give the path of an sqlite file"
    try:
        with path.open("rb") as handle:
            head = handle.read(len(SQLITE_HEADER))
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"history {path} cannot be read ({exc.strerror or exc})"
    if head and head != SQLITE_HEADER:
        return (
            f"history {path} is not an sqlite file (it begins {brief(head)}): give the path of a history file, "
            "or a new path"
        )
    return None


def _check_schema(connection: sqlite3.Connection, path: Path) -> bool:
    """True when ``path`` holds a history this version reads, False when it is empty; ``HistoryError`` else."""
    application = connection.execute("PRAGMA application_id").fetchone()[0]
    tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    if application != APPLICATION_ID:
        if not tables and application == 0:
            return False
        shown = ", ".join(sorted(t for t in tables if not t.startswith("sqlite_"))[:6]) or "none"
        raise HistoryError(
            f"history {path} is another program's sqlite database (tables: {shown}), not a pytest-mlestimate "
            "history: give a new path"
        )
    version = connection.execute("SELECT max(version) FROM schema_version").fetchone()[0]
    if version != HISTORY_FORMAT:
        raise HistoryError(
            f"history {path} has format {brief(version)}; this version of pytest-mlestimate reads format "
            f"{HISTORY_FORMAT}: use the version that wrote it, or give a new path"
        )
    return True


def _connect(path: Path, create: bool) -> sqlite3.Connection:
    problem = _header_problem(path)
    if problem:
        raise HistoryError(problem)
    if not create and not path.exists():
        raise HistoryError(f"history {path} does not exist: record runs with --mlestimate-history {path}")
    if create:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise HistoryError(f"history {path}: its folder cannot be created ({exc.strerror or exc})") from None
    connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    connection.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    connection.execute("PRAGMA foreign_keys = ON")
    return connection


def _retrying(action: Callable[[], Any]) -> Any:
    """``action`` again while another process holds a lock that sqlite's busy handler does not wait for (a journal
    mode change on a file being created), up to ``BUSY_TIMEOUT_S``."""
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            return action()
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextmanager
def opened(path: Path, create: bool = False) -> Iterator[sqlite3.Connection]:
    """A connection to the history at ``path`` (created, with its folder, when ``create``), its schema checked;
    every sqlite error inside is a ``HistoryError`` naming the path."""
    try:
        connection = _connect(path, create)
    except sqlite3.Error as exc:
        raise _problem(path, exc) from None
    except OSError as exc:  # a file that cannot be read or created, beside sqlite's own errors
        raise HistoryError(f"history {path} cannot be opened: {exc.strerror or exc}") from None
    try:
        if not _check_schema(connection, path):
            if not create:
                raise HistoryError(f"history {path} is empty: record runs with --mlestimate-history {path}")
            _retrying(lambda: _create(connection, path))
        _retrying(lambda: connection.execute("PRAGMA journal_mode = WAL"))
        yield connection
    except sqlite3.Error as exc:
        raise _problem(path, exc) from None
    finally:
        connection.close()


def _create(connection: sqlite3.Connection, path: Path) -> None:
    """The schema, unless another process created it meanwhile (checked again inside the write lock)."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        if not _check_schema(connection, path):
            for statement in filter(str.strip, SCHEMA.split(";")):
                connection.execute(statement)
            connection.execute("INSERT INTO schema_version VALUES (?, ?)", (HISTORY_FORMAT, "pytest-mlestimate"))
            connection.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        connection.execute("COMMIT")
    except BaseException:
        connection.execute("ROLLBACK")
        raise


# -- recording ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    """What one ``record_report`` added."""

    path: Path
    run_id: int | None
    """None when the report measured nothing: no run is added."""
    commit: str | None
    branch: str | None
    scenarios: int
    """Measured scenarios recorded; the others (skipped, invalid, not measured) are not kept."""


def _utc(moment: datetime | None) -> str:
    moment = moment or datetime.now(timezone.utc)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds")


def record_report(
    path: Path,
    document: Mapping[str, Any],
    commit: str | None = None,
    branch: str | None = None,
    recorded_at: datetime | None = None,
) -> Recorded:
    """Add a JSON report's document (``--mlestimate-json``; ``build_document``) to the history at ``path`` as one
    run, in one transaction. Scenarios with no runs (skipped, invalid, not measured) are left out; a report that
    measured nothing adds nothing (and creates no file)."""
    scenarios = document.get("scenarios") if isinstance(document, Mapping) else None
    if not isinstance(scenarios, list):
        raise HistoryError(f"not a JSON report: it has no 'scenarios' list (got {brief(document)}), nothing recorded")
    environment = document.get("environment") or {}
    measured = [r for r in scenarios if isinstance(r, Mapping) and r.get("runs") and isinstance(r.get("name"), str)]
    if not measured:
        return Recorded(path, None, commit, branch, 0)
    with opened(path, create=True) as connection:
        connection.execute("BEGIN IMMEDIATE")
        try:
            run_id = connection.execute(
                "INSERT INTO runs (commit_sha, branch, recorded_at, environment) VALUES (?, ?, ?, ?)",
                (commit, branch, _utc(recorded_at), _canonical(environment)),
            ).lastrowid
            assert run_id is not None
            for record in measured:
                _insert_scenario(connection, run_id, record, environment)
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
    return Recorded(path, run_id, commit, branch, len(measured))


def _insert_scenario(
    connection: sqlite3.Connection, run_id: int, record: Mapping[str, Any], environment: Mapping[str, Any]
) -> None:
    details = record.get("details") or {}
    own = details.get("environment") or environment
    scenario_id = connection.execute(
        "INSERT OR REPLACE INTO scenarios (run_id, file, name, outcome, measured, fingerprint, environment, scenario)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            run_id,
            str(record.get("file") or ""),
            record["name"],
            record.get("outcome"),
            record.get("measured"),
            fingerprint(own),
            _canonical(own),
            _canonical(record.get("scenario") or {}),
        ),
    ).lastrowid
    figures = [
        (scenario_id, name, value)
        for name, metric in METRIC.items()
        if (value := figure_of(record, metric)) is not None
    ]
    connection.executemany("INSERT INTO figures VALUES (?, ?, ?)", figures)
    runs = [Run.from_dict(run).to_dict() for run in record["runs"]]
    connection.executemany(
        "INSERT INTO measurements VALUES (?, ?, ?)",
        [(scenario_id, position, _canonical(run)) for position, run in enumerate(runs)],
    )


# -- reading -----------------------------------------------------------------------------------------------


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


@dataclass(frozen=True)
class ScenarioSummary:
    file: str
    name: str
    sessions: int
    environments: int
    last_commit: str | None
    last_recorded_at: str


def scenarios(path: Path) -> list[ScenarioSummary]:
    """Every scenario the history holds, by file and name."""
    with opened(path) as connection:
        rows = connection.execute(
            "SELECT s.file, s.name, count(*), count(DISTINCT s.fingerprint), "
            "(SELECT r2.commit_sha FROM scenarios s2 JOIN runs r2 ON r2.id = s2.run_id "
            "WHERE s2.file = s.file AND s2.name = s.name ORDER BY r2.recorded_at DESC, r2.id DESC LIMIT 1), "
            "max(r.recorded_at) FROM scenarios s JOIN runs r ON r.id = s.run_id "
            "GROUP BY s.file, s.name ORDER BY s.file, s.name"
        ).fetchall()
    return [ScenarioSummary(*row) for row in rows]


def resolve_scenario(path: Path, name: str | None) -> ScenarioSummary:
    """The one scenario ``name`` (or ``FILE::NAME``) means; without a name, the history's only scenario."""
    known = scenarios(path)
    if not known:
        raise HistoryError(f"history {path} holds no measured scenario yet")
    if name is None:
        if len(known) == 1:
            return known[0]
        raise HistoryError(f"history {path} holds {len(known)} scenarios: choose one with --scenario ({_names(known)})")
    file, _, bare = name.rpartition("::")
    found = [s for s in known if s.name == bare and (not file or s.file == file)]
    if len(found) == 1:
        return found[0]
    if found:
        raise HistoryError(
            f"scenario {brief(name)} is in {len(found)} files of history {path}: give it as FILE::NAME "
            f"({', '.join(f'{s.file}::{s.name}' for s in found)})"
        )
    raise HistoryError(f"history {path} has no scenario {brief(name)}; it holds: {_names(known)}")


def _names(known: Sequence[ScenarioSummary], shown: int = 12) -> str:
    names = [f"{s.file}::{s.name}" for s in known]
    more = len(names) - shown
    return ", ".join(names[:shown]) + (f" and {more} more" if more > 0 else "")


def metric_named(text: str) -> Metric:
    """A metric by its snake-case name (``total_training_time``) or documented key (``Total Training Time``)."""
    for metric in METRIC.values():
        if text in (metric.name, metric.key) or text.lower() == metric.key.lower():
            return metric
    raise HistoryError(f"metric {brief(text)} is unknown; the metrics are: {', '.join(METRIC)}")


def series(
    path: Path, name: str, metric: str | Metric, file: str | None = None, environment: Mapping[str, Any] | None = None
) -> Series:
    """A scenario's figures of ``metric`` on one environment (by default the environment it was last recorded
    on), ordered as recorded. ``name`` may be ``FILE::NAME``."""
    chosen = metric if isinstance(metric, Metric) else metric_named(metric)
    scenario = resolve_scenario(path, f"{file}::{name}" if file else name)
    with opened(path) as connection:
        rows = connection.execute(
            "SELECT r.id, r.commit_sha, r.branch, r.recorded_at, s.fingerprint, s.environment, s.measured, f.value "
            "FROM scenarios s JOIN runs r ON r.id = s.run_id "
            "LEFT JOIN figures f ON f.scenario_id = s.id AND f.metric = ? "
            "WHERE s.file = ? AND s.name = ? ORDER BY r.recorded_at, r.id",
            (chosen.name, scenario.file, scenario.name),
        ).fetchall()
    wanted = fingerprint(environment) if environment is not None else rows[-1][4]
    kept = [row for row in rows if row[4] == wanted]
    points = tuple(
        Point(run_id, commit, branch, recorded_at, value, measured)
        for run_id, commit, branch, recorded_at, _, _, measured, value in kept
        if value is not None
    )
    shown_environment = json.loads(kept[-1][5]) if kept else dict(environment or {})
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
    return _canonical(comparable(scenario))


def window(
    path: Path,
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
    if not path.exists():
        return Window((), 0)
    with opened(path) as connection:
        rows = connection.execute(
            "SELECT r.id, r.commit_sha, s.scenario, m.run FROM scenarios s JOIN runs r ON r.id = s.run_id "
            "JOIN measurements m ON m.scenario_id = s.id "
            "WHERE s.file = ? AND s.name = ? AND s.fingerprint = ? ORDER BY r.recorded_at DESC, r.id DESC, m.position",
            (file, name, fingerprint(environment)),
        ).fetchall()
    wanted = _compared(dict(scenario))
    new = {_figures_key(run) for run in exclude}
    parsed = [
        (run_id, commit, _compared(json.loads(fields)), Run.from_dict(json.loads(text)))
        for run_id, commit, fields, text in rows
    ]
    oldest = {_figures_key(run): position for position, (*_, run) in enumerate(parsed)}  # rows run newest first
    taken: dict[int, list[Run]] = {}
    commits: dict[int, str | None] = {}
    left_out: dict[str, int] = {}
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


def machine_of(environment: Mapping[str, Any]) -> str:
    """``cuda:0 (NVIDIA H100 80GB HBM3)``, ``cpu (AMD EPYC 7B13)``: the device a scenario ran on."""
    device = environment.get("device") or "?"
    machine = environment.get("gpu") if device_kind(environment) == "cuda" else environment.get("cpu")
    return f"{device} ({machine or 'unknown'})"


def compare_window(
    past: Window, runs: Sequence[Run], tolerances: Mapping[str, float], kind: str, path: Path
) -> Comparison:
    """The regression checks of ``runs`` against the window's runs: ``regression.compare_runs``, the window's runs
    as the baseline's."""
    result = Comparison(path)
    if not past.runs:
        result.missing = True
        result.warnings.append(f"baseline not compared: history {path} holds no earlier run of this scenario here")
        return result
    floor = window_floor(past.sessions, kind)
    result.changes = compare_runs(past.runs, runs, tolerances, floor=floor)
    result.baseline_runs = past.runs
    if floor:
        result.warnings.append(
            f"baseline window of history {path} holds {past.sessions} session(s), fewer than {WINDOW_MIN_SESSIONS}: "
            f"timings are judged with the assumed {floor:.0%} drift between runs, as against a saved baseline"
        )
    if runs and all(run.contended for run in runs):
        result.warnings.append("baseline timings not judged: every measurement of this run was contended")
    return result


def judge_window(
    path: Path,
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


# -- github-action-benchmark -------------------------------------------------------------------------------


def bigger_is_better(metric: Metric) -> bool:
    """Throughput-like figures (GPU utilisation, the largest batch) are better bigger: ``Metric.lower_is_worse``."""
    return metric.lower_is_worse


def benchmark_action(
    path: Path, bigger: bool = False, names: Sequence[str] = (), metrics: Sequence[Metric] = ()
) -> list[dict[str, Any]]:
    """Each scenario's figures of its latest session in github-action-benchmark's custom format (``name``,
    ``unit``, ``value``, ``range``, ``extra``): with ``bigger`` the metrics better bigger (its tool
    ``customBiggerIsBetter``), else the others (``customSmallerIsBetter``)."""
    chosen = [m for m in (metrics or METRIC.values()) if bigger_is_better(m) == bigger]
    wanted = [resolve_scenario(path, name) for name in names] if names else scenarios(path)
    found: list[dict[str, Any]] = []
    with opened(path) as connection:
        for summary in wanted:
            row = connection.execute(
                "SELECT s.id, r.commit_sha, r.branch, r.recorded_at, s.environment, s.scenario FROM scenarios s "
                "JOIN runs r ON r.id = s.run_id WHERE s.file = ? AND s.name = ? "
                "ORDER BY r.recorded_at DESC, r.id DESC LIMIT 1",
                (summary.file, summary.name),
            ).fetchone()
            scenario_id, commit, branch, recorded_at, environment, fields = row
            batch = json.loads(fields).get("batch_size")
            values = dict(connection.execute("SELECT metric, value FROM figures WHERE scenario_id = ?", (scenario_id,)))
            runs = [
                Run.from_dict(json.loads(text))
                for (text,) in connection.execute(
                    "SELECT run FROM measurements WHERE scenario_id = ? ORDER BY position", (scenario_id,)
                )
            ]
            device = machine_of(json.loads(environment))
            for metric in chosen:
                value = values.get(metric.name)
                if value is None:
                    continue
                entry: dict[str, Any] = {
                    "name": f"{summary.file}::{summary.name} - {_label(metric, batch)}",
                    "unit": metric.unit,
                    "value": value,
                }
                spread = _spread(metric, runs)
                if spread is not None:
                    entry["range"] = f"± {spread:.4g}"
                entry["extra"] = (
                    f"commit {commit or '-'} on {branch or '-'}, {recorded_at}\n{len(runs)} run(s) on {device}"
                )
                found.append(entry)
    return found


def _label(metric: Metric, batch: object) -> str:
    """The documented key, under its section where it has one: ``Batch Time.forward_pass``, ``Batch of 4 Inference
    Time``."""
    path = metric.path_for(batch) if isinstance(batch, int) else metric.path
    return ".".join(path[1:])


def _spread(metric: Metric, runs: Sequence[Run]) -> float | None:
    """The figure's standard error, in its unit: from the spread of the runs where there are several, else from the
    one run's own samples (timings); None for a single run of a peak."""
    values = [v for run in runs if (v := run.metrics.get(metric.name)) is not None]
    if len(values) > 1:
        return statistics.stdev(values) / math.sqrt(len(values))
    errors = [e * values[0] for run in runs if values and (e := run.relative_error(metric.name)) is not None]
    return errors[0] if errors else None
