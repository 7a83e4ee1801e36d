"""The profile cache in PostgreSQL, and the leases that make each configuration measured once in the whole fleet.

Whoever is about to measure a profile first takes its key's lease (``claim``); the others asking for the same key
meanwhile wait for its row instead of measuring it again. The holder renews its lease while it measures; a holder
that died stops renewing, its lease expires after ``LEASE_SECONDS`` and the next one asking takes it over (its run
is logged as ``lease expired``). Expired leases are swept whenever a lease is taken, so none outlives its expiry
for longer than the next claim. Every lease taken is logged in ``mlestimate_profile_runs``: the profiles the fleet
measured, counted for monitoring.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pytest_mlestimate.stores.postgres import StoreError, connection, shown
from pytest_mlestimate.stores.profile_cache import usable

if TYPE_CHECKING:
    from pytest_mlestimate.profiling.profile import Profile

log = logging.getLogger("pytest_mlestimate.stores.postgres_profiles")

LEASE_SECONDS = float(os.environ.get("MLESTIMATE_LEASE_SECONDS") or 30.0)
"""How long a lease lasts unless renewed (``MLESTIMATE_LEASE_SECONDS``); the holder renews it every third of that.
A holder that died is taken over after at most this long."""
POLL_SECONDS = 0.25
"""How often a waiter looks for the holder's profile."""


def holder_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass
class PostgresProfiles:
    url: str
    lease_seconds: float = LEASE_SECONDS
    path: str = field(init=False)
    problem: str | None = field(default=None, init=False)
    stale: str | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.path = shown(self.url)

    def get(self, key: str) -> Profile | None:
        self.stale = None
        try:
            with connection(self.url) as opened:
                row = opened.execute("SELECT profile FROM mlestimate_profiles WHERE key = %s", (key,)).fetchone()
        except StoreError as exc:
            self._report(f"cache {exc}; bypassed")
            return None
        profile, self.stale = usable(key, row[0] if row else None)
        return profile

    def put(self, key: str, profile: Profile) -> bool:
        try:
            with connection(self.url) as opened:
                opened.execute(
                    "INSERT INTO mlestimate_profiles (key, created, profile) VALUES (%s, %s, %s) "
                    "ON CONFLICT (key) DO UPDATE SET created = EXCLUDED.created, profile = EXCLUDED.profile",
                    (key, time.time(), profile.model_dump_json()),
                )
            return True
        except StoreError as exc:
            self._report(f"cache {exc}; the profile was not stored")
            return False

    def _report(self, problem: str) -> None:
        self.problem = problem
        log.warning("%s", problem)

    @contextmanager
    def claim(self, key: str, wait: float) -> Iterator[Profile | None]:
        """The profile another holder measured while this one waited (at most ``wait`` seconds), or None with the
        key's lease held by this one until the block ends: measure it then, and ``put`` it before leaving."""
        holder = holder_name()
        deadline = time.monotonic() + wait
        try:
            run = self._take(key, holder)
        except StoreError as exc:  # a database out of reach is bypassed, as by get and put: measured, unshared
            self._report(f"cache {exc}; measured without a lease")
            yield None
            return
        while run is None:
            found = self.get(key)
            if found is not None:
                yield found
                return
            if time.monotonic() > deadline:
                raise StoreError(
                    f"another replica has been measuring profile {key[:12]} for more than {wait:.0f} s "
                    f"(lease in {self.path}); try again later"
                )
            time.sleep(POLL_SECONDS)
            run = self._take(key, holder)
        found = self.get(key)  # stored by the last holder just before it let go
        renewing = _Renewal(self, key, holder)
        outcome = "found" if found is not None else "failed"  # until the block ends without raising
        try:
            yield found
            if found is None:
                outcome = "done"
        finally:
            renewing.stop()
            self._release(key, holder, run, outcome)

    def _take(self, key: str, holder: str) -> int | None:
        """The id of this holder's run when the lease was free (or expired), else None."""
        with connection(self.url) as opened, opened.transaction():
            expired = [
                k
                for (k,) in opened.execute(
                    "DELETE FROM mlestimate_leases WHERE expires < clock_timestamp() RETURNING key"
                ).fetchall()
            ]
            if expired:
                opened.execute(
                    "UPDATE mlestimate_profile_runs SET finished = clock_timestamp(), outcome = 'lease expired' "
                    "WHERE finished IS NULL AND key = ANY(%s)",
                    (expired,),
                )
            taken = opened.execute(
                "INSERT INTO mlestimate_leases (key, holder, taken, expires) "
                "VALUES (%s, %s, clock_timestamp(), clock_timestamp() + make_interval(secs => %s)) "
                "ON CONFLICT (key) DO NOTHING RETURNING key",
                (key, holder, self.lease_seconds),
            ).fetchone()
            if taken is None:
                return None
            row = opened.execute(
                "INSERT INTO mlestimate_profile_runs (key, holder, took_over) VALUES (%s, %s, %s) RETURNING id",
                (key, holder, key in expired),
            ).fetchone()
        if key in expired:
            log.warning("took over the expired lease of profile %s (its holder stopped renewing it)", key[:12])
        return int(row[0]) if row else None

    def renew(self, key: str, holder: str) -> bool:
        with connection(self.url) as opened:
            renewed = opened.execute(
                "UPDATE mlestimate_leases SET expires = clock_timestamp() + make_interval(secs => %s) "
                "WHERE key = %s AND holder = %s",
                (self.lease_seconds, key, holder),
            )
            return renewed.rowcount == 1

    def _release(self, key: str, holder: str, run: int, outcome: str) -> None:
        try:
            with connection(self.url) as opened, opened.transaction():
                opened.execute("DELETE FROM mlestimate_leases WHERE key = %s AND holder = %s", (key, holder))
                opened.execute(
                    "UPDATE mlestimate_profile_runs SET finished = clock_timestamp(), outcome = %s "
                    "WHERE id = %s AND finished IS NULL",
                    (outcome, run),
                )
        except StoreError as exc:  # the lease expires by itself
            log.warning("lease of profile %s not released: %s", key[:12], exc)


class _Renewal:
    """Renews a lease every third of its length until stopped; a lease lost meanwhile is logged, not fatal (the
    profile is still measured and stored, and the one who took it over finds it)."""

    def __init__(self, store: PostgresProfiles, key: str, holder: str) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(store, key, holder), daemon=True)
        self._thread.start()

    def _loop(self, store: PostgresProfiles, key: str, holder: str) -> None:
        while not self._stop.wait(store.lease_seconds / 3):
            try:
                if not store.renew(key, holder):
                    log.warning("lost the lease of profile %s: another holder took it over", key[:12])
                    return
            except StoreError as exc:
                log.warning("could not renew the lease of profile %s: %s", key[:12], exc)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


@dataclass(frozen=True)
class FleetFigures:
    """What the fleet's database says of its profiles, for monitoring."""

    measuring: int
    """Leases held and not expired: profiles in flight in the whole fleet."""
    measured: int
    """Leases whose holder finished its block (measured the profile, or found it measured)."""
    takeovers: int
    """Leases taken over after their holder stopped renewing them."""
    failed: int


def fleet_figures(url: str) -> FleetFigures:
    with connection(url) as opened:
        measuring = opened.execute(
            "SELECT count(*) FROM mlestimate_leases WHERE expires >= clock_timestamp()"
        ).fetchone()
        counts = dict(
            opened.execute(
                "SELECT outcome, count(*) FROM mlestimate_profile_runs WHERE outcome IS NOT NULL GROUP BY outcome"
            ).fetchall()
        )
        takeovers = opened.execute("SELECT count(*) FROM mlestimate_profile_runs WHERE took_over").fetchone()
    return FleetFigures(
        measuring=int(measuring[0]) if measuring else 0,
        measured=int(counts.get("done", 0)),
        takeovers=int(takeovers[0]) if takeovers else 0,
        failed=int(counts.get("failed", 0)),
    )
