"""The profile cache in a real PostgreSQL server: profiles, leases that make a configuration measured once across
hosts, take-over of a dead holder's lease, the schema's versions, and URLs that never show a password."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from pytest_mlestimate import estimate
from pytest_mlestimate.profiling.profile import Profile
from pytest_mlestimate.service.answers import failure
from pytest_mlestimate.stores.interfaces import profile_store_at
from pytest_mlestimate.stores.postgres import FORMAT, StoreError, connection, shown
from pytest_mlestimate.stores.postgres_profiles import PostgresProfiles, fleet_figures
from tests.postgres_server import Server
from tests.tiny_scenario import TINY


def a_profile(step: float = 0.5) -> Profile:
    return Profile(device="cpu", device_name="cpu", step_times=[step, step])


def test_a_database_url_names_the_shared_cache(database_url: str) -> None:
    store = profile_store_at(database_url)
    assert isinstance(store, PostgresProfiles)
    assert store.get("k") is None
    assert store.put("k", a_profile(0.25))
    found = profile_store_at(database_url).get("k")
    assert found is not None and found.step_times == [0.25, 0.25]
    assert store.put("k", a_profile(0.75))  # measured again (refresh): replaced
    again = store.get("k")
    assert again is not None and again.step_times == [0.75, 0.75]


def test_the_schema_is_migrated_once_and_a_later_format_is_refused(database_url: str) -> None:
    stores = [PostgresProfiles(database_url) for _ in range(4)]
    threads = [threading.Thread(target=s.get, args=("k",)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with psycopg.connect(database_url, autocommit=True) as raw:
        versions = raw.execute("SELECT version FROM mlestimate_schema_version").fetchall()
        assert versions == [(FORMAT,)]
        raw.execute("INSERT INTO mlestimate_schema_version (version, written_by) VALUES (%s, 'a later one')", (99,))
    from pytest_mlestimate.stores.postgres import close_pools

    close_pools()
    with pytest.raises(StoreError, match=r"format 99.*reads format 1"), connection(database_url):
        pass


def test_one_holder_measures_and_the_others_wait_for_its_profile(database_url: str) -> None:
    measured: list[int] = []
    answers: dict[int, Profile] = {}

    def ask(who: int) -> None:
        store = PostgresProfiles(database_url)
        with store.claim("k", wait=30) as found:
            if found is None:
                measured.append(who)
                time.sleep(1.0)  # measuring
                store.put("k", a_profile(float(who)))
                found = store.get("k")
            assert found is not None
            answers[who] = found

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(measured) == 1
    assert {p.step_times[0] for p in answers.values()} == {float(measured[0])}
    figures = fleet_figures(database_url)
    assert (figures.measuring, figures.measured, figures.takeovers) == (0, 1, 0)


def test_a_dead_holders_lease_expires_and_is_taken_over(database_url: str) -> None:
    store = PostgresProfiles(database_url, lease_seconds=1.0)
    assert store._take("k", "a-host:123:dead") is not None  # took it, then died: never renewed nor released
    started = time.monotonic()
    with store.claim("k", wait=30) as found:
        assert found is None  # nobody stored it: this one measures
        waited = time.monotonic() - started
        store.put("k", a_profile())
    assert 0.5 < waited < 10
    figures = fleet_figures(database_url)
    assert figures.takeovers == 1 and figures.measuring == 0
    with psycopg.connect(database_url) as raw:
        outcomes = raw.execute("SELECT holder, outcome FROM mlestimate_profile_runs ORDER BY id").fetchall()
        left = raw.execute("SELECT count(*) FROM mlestimate_leases").fetchone()
    assert outcomes[0] == ("a-host:123:dead", "lease expired") and outcomes[1][1] == "done"
    assert left == (0,)


def test_a_waiter_gives_up_with_a_clear_error(database_url: str) -> None:
    holder = PostgresProfiles(database_url)
    assert holder._take("k", "busy-host:1:alive") is not None
    with pytest.raises(StoreError, match="another replica has been measuring profile k for more than 1 s") as waited:  # noqa: SIM117
        with PostgresProfiles(database_url).claim("k", wait=1.0):
            pass
    status, body = failure(waited.value)  # the service answers it as a busy service, not an internal error
    assert status == 503 and "another replica has been measuring" in body["detail"]


def test_urls_are_shown_without_their_password(postgres_server: Server) -> None:
    secret = "s3cr3t-pw"
    url = f"postgresql://postgres:{secret}@127.0.0.1:{postgres_server.port}/no_such_database"
    assert secret not in shown(url) and shown(url).endswith(f"127.0.0.1:{postgres_server.port}/no_such_database")
    store = PostgresProfiles(url)
    assert store.get("k") is None  # a database that cannot be used is bypassed, with the reason
    assert store.problem is not None and "no_such_database" in store.problem and secret not in store.problem
    with store.claim("k", wait=5) as found:  # measured without a lease, as without the cache
        assert found is None
    assert "measured without a lease" in store.problem and secret not in store.problem


def test_estimates_share_the_database_cache(database_url: str) -> None:
    for _attempt in range(3):  # a profile measured while other processes took the CPU is not cached: again
        first = estimate(TINY, cache_path=database_url, isolate=False)
        if first.cache["stored"]:
            break
    second = estimate(TINY, cache_path=database_url, isolate=False)
    assert first.cache["hit"] is False and first.cache["stored"] is True
    assert second.cache["hit"] is True and second.cache["path"] == shown(database_url)
    assert second.profile.step_times == first.profile.step_times
