"""The run history in a real PostgreSQL server: runners recording at once, the window's verdicts and every query
row for row as the sqlite history's, and a database that cannot be used named without its password; and a fleet
runner's options, its Ray cluster and its shared profile cache."""

from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bench.history_power import REGIMES, environment, record_of, report_of, sessions
from pytest_mlestimate.commands.cli import main
from pytest_mlestimate.core.metrics import METRIC
from pytest_mlestimate.stores.interfaces import run_history_at
from pytest_mlestimate.stores.postgres import shown
from pytest_mlestimate.stores.postgres_history import PostgresRunHistory
from pytest_mlestimate.stores.run_history import HistoryError
from pytest_mlestimate.verdicts.history import WINDOW_MIN_SESSIONS, judge_window
from pytest_mlestimate.verdicts.history_recording import record_report
from tests.plugin.conftest import TINY, by_name, scenario_file
from tests.postgres_server import Server

RUNNERS = 4
START = datetime(2026, 11, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def cache_url(postgres_server: Server) -> Iterator[str]:
    """A database holding the tiny scenario's profile, measured once here, as the fleet's shared profile cache:
    the runs below answer from it and measure nothing. (Its contention is not judged: a profile measured while
    other processes load the CPUs is not cached.)"""
    from pytest_mlestimate.api import estimate
    from pytest_mlestimate.profiling import contention
    from pytest_mlestimate.stores.postgres import close_pools

    url = postgres_server.create_database("history_profiles")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(contention, "judge", lambda *args, **kwargs: False)
        seeded = estimate(TINY, isolate=False, cache_path=url)
    assert seeded.cache.get("stored"), seeded.cache
    yield url
    close_pools()


def runner_environment(commit: str) -> dict[str, str]:
    found = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "GITHUB_"))}
    return {**found, "GITHUB_SHA": commit, "GITHUB_REF_NAME": "main", "GITHUB_HEAD_REF": ""}


def start_runner(folder: Path, commit: str, *args: str) -> subprocess.Popen[str]:
    """``pytest --mlestimate`` on the scenario file in ``folder``, as a CI runner at ``commit`` starts it."""
    command = [sys.executable, "-m", "pytest", "--mlestimate", "-p", "no:cacheprovider", "scenarios.yaml", *args]
    return subprocess.Popen(
        command, cwd=folder, env=runner_environment(commit), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def finished(runners: list[subprocess.Popen[str]]) -> list[tuple[int, str]]:
    """Each runner's exit code and output, once all have ended."""
    outputs = [runner.communicate(timeout=240)[0] for runner in runners]
    return [(runner.returncode, output) for runner, output in zip(runners, outputs, strict=True)]


def history_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any, str]:
    code = main(["history", *args])
    out, err = capsys.readouterr()
    return code, json.loads(out) if code == 0 else None, err


# -- (a) runners recording at once --------------------------------------------------------------------------


def test_four_runners_record_at_once_and_the_command_reads_every_run(
    tmp_path: Path, database_url: str, cache_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "scenarios.yaml").write_text(scenario_file({"name": "tiny"}))
    commits = [f"{n + 1:040x}" for n in range(RUNNERS)]
    runners = [
        start_runner(
            tmp_path,
            commit,
            *("--mlestimate-history", database_url, "--mlestimate-cache", cache_url),
            *("--mlestimate-json", f"report-{n}.json"),
        )
        for n, commit in enumerate(commits)
    ]
    for (code, output), commit in zip(finished(runners), commits, strict=True):
        assert code == 0, output
        assert (
            f"history recorded: {shown(database_url)} (1 measured scenario(s), commit {commit[:7]} on main)" in output
        )
    for n in range(RUNNERS):  # each answered from the shared cache: none measured it again
        assert by_name(json.loads((tmp_path / f"report-{n}.json").read_text()))["tiny"]["measured"] == "cache"
    (summary,) = run_history_at(database_url).scenarios()
    assert (summary.file, summary.name, summary.sessions, summary.environments) == ("scenarios.yaml", "tiny", 4, 1)

    code, (found,), _ = history_json(capsys, database_url, "--json", "--metric", "forward_pass")
    assert code == 0 and found["name"] == "tiny" and found["other_environments"] == 0
    assert sorted(point["commit"] for point in found["points"]) == commits
    assert {point["branch"] for point in found["points"]} == {"main"}


# -- (b) the window's verdicts --------------------------------------------------------------------------------


def scaled_ram(document: dict[str, Any], factors: dict[str, float]) -> dict[str, Any]:
    """The report with each scenario's peak RAM times its factor in every run: figures no other session has, so
    that the window takes each session once (the same figures again are the cache's), and timings unchanged."""
    changed = copy.deepcopy(document)
    for record in changed["scenarios"]:
        for run in record["runs"]:
            run["metrics"]["peak_ram_memory"] *= factors[record["name"]]
    return changed


def test_the_window_gives_the_same_verdicts_on_postgresql_as_on_sqlite(
    tmp_path: Path, database_url: str, cache_url: str
) -> None:
    """Past sessions where the tiny scenario's peak RAM was as now, and the other one's half of it: the first
    passes, the second regressed, judged against either history alike."""
    (tmp_path / "scenarios.yaml").write_text(scenario_file({"name": "tiny"}, {"name": "tiny-ram"}))
    first = start_runner(tmp_path, "f" * 40, "--mlestimate-cache", cache_url, "--mlestimate-json", "now.json")
    ((code, output),) = finished([first])
    assert code == 0, output
    now = json.loads((tmp_path / "now.json").read_text())
    sqlite_path = tmp_path / "history.sqlite3"
    size = WINDOW_MIN_SESSIONS + 1
    for n in range(size):
        drift = 1 + 0.001 * (n + 1)  # never 1: the new run's own figures would be the cache's
        past = scaled_ram(now, {"tiny": drift, "tiny-ram": 0.5 * drift})
        for location in (sqlite_path, database_url):
            record_report(location, past, f"{n:040x}", "main", START + timedelta(hours=n))

    runners = [
        start_runner(
            tmp_path,
            "e" * 40,
            *("--mlestimate-history", str(location), "--mlestimate-history-window", str(size)),
            *("--mlestimate-cache", cache_url, "--mlestimate-json", f"judged-{n}.json"),
        )
        for n, location in enumerate((sqlite_path, database_url))
    ]
    outputs = finished(runners)
    on_sqlite, on_postgres = (by_name(json.loads((tmp_path / f"judged-{n}.json").read_text())) for n in range(2))
    assert [code for code, _ in outputs] == [1, 1], outputs
    for name, outcome in (("tiny", "passed"), ("tiny-ram", "failed")):
        judged = [check for check in on_postgres[name]["budgets"] if check["kind"] == "regression"]
        assert on_postgres[name]["outcome"] == on_sqlite[name]["outcome"] == outcome
        assert judged and judged == [check for check in on_sqlite[name]["budgets"] if check["kind"] == "regression"]
        warnings = [w.replace(shown(database_url), "HISTORY") for w in on_postgres[name]["warnings"]]
        assert warnings == [w.replace(str(sqlite_path), "HISTORY") for w in on_sqlite[name]["warnings"]]
        assert any(w.startswith(f"history window: judged against {size} run(s)") for w in warnings)
    regressed = {c["metric"] for c in on_postgres["tiny-ram"]["budgets"] if c["passed"] is False}
    assert regressed == {"peak_ram_memory"}


# -- (c) every query, row for row -----------------------------------------------------------------------------


def documents() -> list[tuple[dict[str, Any], str | None, str | None, datetime]]:
    """Reports as a history meets them: two environments, files and names that sort apart by case and accent, a
    name holding "::", one scenario in two files, a session without a commit, two sessions at the same second, a
    figure missing, and a scenario given twice in one report (its last record is kept)."""
    cpu, gpu = REGIMES["cpu"], REGIMES["gpu"]
    found = []
    drawn = zip(sessions(1, cpu, count=4), sessions(2, gpu, count=4), strict=True)
    for n, ((commit, runs), (_, other)) in enumerate(drawn):
        env = environment(cpu if n % 2 else gpu)
        records = [
            record_of(runs, name="alpha", file="b.yaml", **env),
            record_of(other, name="Zeta", file="B.yaml", **env),
            record_of(runs, name="éclair::x", file="a.yaml", **env),
            record_of(other, name="alpha", file="a.yaml", **env),
        ]
        if n == 1:
            del records[1]["training_time"]
            records.append(record_of(other, name="alpha", file="b.yaml", **env))
        moment = START + timedelta(hours=min(n, 2))
        found.append((report_of(records, env), None if n == 3 else commit, "main" if n else None, moment))
    return found


def answers(location: Path | str) -> dict[str, Any]:
    """What every query of the history at ``location`` answers (errors by their message, the history's name
    left out)."""
    store = run_history_at(location)
    found: dict[str, Any] = {"exists": store.exists(), "scenarios": store.scenarios()}
    for summary in found["scenarios"]:
        key = f"{summary.file}::{summary.name}"
        for name in (key, summary.name, None):
            try:
                found[f"resolve {name}"] = store.resolve(name)
            except HistoryError as exc:
                found[f"resolve {name}"] = str(exc).replace(str(getattr(store, "path", "")), "HISTORY")
        for metric in METRIC:
            rows = store.series_rows(summary.file, summary.name, metric)
            found[f"series {key} {metric}"] = rows
            for fingerprint in {row[4] for row in rows}:
                found[f"runs {key} {fingerprint}"] = store.measurement_rows(summary.file, summary.name, fingerprint)
        found[f"latest {key}"] = store.latest_session(summary.file, summary.name)
    found["latest missing"] = store.latest_session("a.yaml", "missing")
    return found


def test_every_query_answers_the_same_rows_on_both_stores(tmp_path: Path, database_url: str) -> None:
    sqlite_path = tmp_path / "history.sqlite3"
    assert run_history_at(database_url).exists() is run_history_at(sqlite_path).exists() is False
    for document, commit, branch, moment in documents():
        on_sqlite = record_report(sqlite_path, document, commit, branch, moment)
        on_postgres = record_report(database_url, document, commit, branch, moment)
        assert (on_postgres.run_id, on_postgres.scenarios) == (on_sqlite.run_id, on_sqlite.scenarios)
        assert on_postgres.path == shown(database_url)
    expected, found = answers(sqlite_path), answers(database_url)
    assert found == expected
    assert len(expected["scenarios"]) == 4 and expected["exists"] is True
    assert [(s.file, s.name) for s in expected["scenarios"]] == sorted((s.file, s.name) for s in expected["scenarios"])
    assert "give it as FILE::NAME" in expected["resolve alpha"]
    assert any(row[-1] is None for row in expected["series B.yaml::Zeta total_training_time"])
    with psycopg.connect(database_url) as raw:  # the report's doubled scenario: one row, its last record's
        assert raw.execute("SELECT count(*) FROM mlestimate_scenarios").fetchone() == (4 * 4,)


# -- (d) a database that cannot be used ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def with_password_checked(server: Server, role: str, password: str) -> None:
    """A role that must give its password (the server trusts every other one), on the running server."""
    hba = server.folder / "data" / "pg_hba.conf"
    rule = f"host all {role} 127.0.0.1/32 scram-sha-256\n"
    if rule not in hba.read_text():
        hba.write_text(rule + hba.read_text())
    with psycopg.connect(server.url(), autocommit=True) as admin:
        admin.execute(f"DROP ROLE IF EXISTS {role}")
        admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
        admin.execute("SELECT pg_reload_conf()")
    deadline = time.monotonic() + 10
    while True:  # the server reads its rules again a moment after it is asked to
        try:
            psycopg.connect(server.url().replace("postgres@", f"{role}:not-{password}@"), connect_timeout=5).close()
        except psycopg.OperationalError:
            return
        assert time.monotonic() < deadline, "the server kept trusting the role"
        time.sleep(0.05)


def test_an_unreachable_database_or_a_wrong_password_is_named_without_the_password(
    postgres_server: Server, database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "s3cr3t-history-pw"
    unreachable = f"postgresql://postgres:{secret}@127.0.0.1:{free_port()}/fleet"
    with_password_checked(postgres_server, "history_reader", "right-pw")
    database = database_url.rpartition("/")[2]
    refused = f"postgresql://history_reader:{secret}@127.0.0.1:{postgres_server.port}/{database}"
    for url, says in ((unreachable, "refused"), (refused, "password authentication failed")):
        store = PostgresRunHistory(url)
        for ask in (store.exists, store.scenarios, lambda to=url: record_report(to, documents()[0][0])):
            with pytest.raises(HistoryError) as raised:
                ask()
            message = str(raised.value)
            assert shown(url) in message and says in message and secret not in message
        code, _, err = history_json(capsys, url)
        assert code == 2 and shown(url) in err and secret not in err
        with pytest.raises(HistoryError, match=says):  # the window, as the plugin asks it
            judge_window(url, "a.yaml", "tiny", {}, {}, [], {}, 5)


# -- a runner of the fleet: its measurements on a Ray cluster ----------------------------------------------------


def test_with_a_ray_cluster_a_gpu_scenario_is_sent_there_not_skipped(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine stands in for the cluster: what matters is that the scenario reaches it, with the cache."""
    # loaded before the in-process run, which drops what it first imported (see tests/plugin/conftest.py)
    import pytest_mlestimate.plugin.session  # noqa: F401
    from pytest_mlestimate.core.errors import EstimateError
    from pytest_mlestimate.plugin.gpus import missing_gpu_reason

    asked: list[dict[str, Any]] = []

    def cluster(scenario: Any, **options: Any) -> None:
        asked.append(options)
        raise EstimateError("the cluster is a stand-in")

    monkeypatch.setattr("pytest_mlestimate.plugin.items.estimate", cluster)
    pytester.makefile(".yaml", scenarios=scenario_file({"name": "on-gpu", "device": "cuda"}))
    cache = "postgresql://ci:pw@db.example/fleet"
    result = pytester.runpytest_inprocess(
        "--mlestimate", "--mlestimate-ray", "ray://head:10001", "--mlestimate-cache", cache
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(
        [
            "mlestimate: profile cache postgresql://ci@db.example/fleet; measured on the Ray cluster at ray://head:10001",
            "*scenario 'on-gpu' could not be measured: the cluster is a stand-in*",
        ]
    )
    assert [(options["ray"], options["cache_path"]) for options in asked] == [("ray://head:10001", cache)]
    if missing_gpu_reason("cuda"):  # without the cluster, this machine skips it
        pytester.runpytest_inprocess("--mlestimate").assert_outcomes(skipped=1)
        assert len(asked) == 1


def test_the_fleet_options_that_cannot_work_stop_the_run(pytester: pytest.Pytester) -> None:
    contradicting = pytester.runpytest_inprocess("--mlestimate", "--mlestimate-cache", "here", "--mlestimate-no-cache")
    assert contradicting.ret == pytest.ExitCode.USAGE_ERROR
    assert "--mlestimate-cache names a profile cache and --mlestimate-no-cache keeps none" in contradicting.stderr.str()
    alone = pytester.runpytest_inprocess("--mlestimate-ray", "auto", "--mlestimate-cache", "here")
    assert alone.ret == pytest.ExitCode.USAGE_ERROR
    assert "--mlestimate-ray, --mlestimate-cache needs --mlestimate" in alone.stderr.str()
