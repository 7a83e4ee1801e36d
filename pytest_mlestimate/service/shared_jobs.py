"""Asynchronous jobs kept in the database the replicas share, so that a job accepted by one can be polled on any.

The replica that accepts a job writes its row (the endpoint and the request's body with it) and keeps it up to date:
its state when it finishes, and a heartbeat every ``HEARTBEAT_SECONDS`` while it runs. A replica asked for a job it
does not hold answers from the row; when the row's owner stopped beating (it died), the replica asking takes the job
over: it submits the same request itself (its profile is then found in the shared cache, or measured once under the
profile's lease) and answers from then on as the job's owner.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

from pytest_mlestimate.stores.postgres import StoreError, connection

log = logging.getLogger("pytest_mlestimate.service")

HEARTBEAT_SECONDS = float(os.environ.get("MLESTIMATE_JOB_HEARTBEAT_SECONDS") or 2.0)
ORPHANED_AFTER_SECONDS = 5 * HEARTBEAT_SECONDS
"""A running job whose owner has not beaten for this long is taken over by the replica asking for it."""
UNFINISHED = ("queued", "running")


@dataclass(frozen=True)
class JobRow:
    description: dict[str, Any]
    orphaned: bool


class SharedJobs:
    def __init__(self, url: str, replica: str | None = None) -> None:
        self.url = url
        self.replica = replica or f"{socket.gethostname()}:{os.getpid()}"
        self._beating = threading.Thread(target=self._beat, name="job-heartbeat", daemon=True)
        self._beating.start()

    def record(self, job_id: str, endpoint: str, request: bytes, description: dict[str, Any]) -> None:
        with connection(self.url) as opened:
            opened.execute(
                "INSERT INTO mlestimate_jobs (id, endpoint, request, owner, status, description, created) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (job_id, endpoint, request, self.replica, description["status"], _text(description), time.time()),
            )

    def update(self, job_id: str, description: dict[str, Any]) -> None:
        try:
            with connection(self.url) as opened:
                opened.execute(
                    "UPDATE mlestimate_jobs SET status = %s, description = %s, heartbeat = clock_timestamp() "
                    "WHERE id = %s AND owner = %s",
                    (description["status"], _text(description), job_id, self.replica),
                )
        except StoreError as exc:
            log.warning("job %s finished here but its row could not be updated: %s", job_id, exc)

    def find(self, job_id: str) -> JobRow | None:
        with connection(self.url) as opened:
            row = opened.execute(
                "SELECT description, status = ANY(%s) AND heartbeat < clock_timestamp() - make_interval(secs => %s) "
                "FROM mlestimate_jobs WHERE id = %s",
                (list(UNFINISHED), ORPHANED_AFTER_SECONDS, job_id),
            ).fetchone()
        return JobRow(json.loads(row[0]), bool(row[1])) if row else None

    def take_over(self, job_id: str) -> tuple[str, bytes] | None:
        """The endpoint and body of an orphaned job, now this replica's; None when another replica took it first
        (or its owner came back)."""
        with connection(self.url) as opened:
            row = opened.execute(
                "UPDATE mlestimate_jobs SET owner = %s, heartbeat = clock_timestamp() WHERE id = %s "
                "AND status = ANY(%s) AND heartbeat < clock_timestamp() - make_interval(secs => %s) "
                "RETURNING endpoint, request",
                (self.replica, job_id, list(UNFINISHED), ORPHANED_AFTER_SECONDS),
            ).fetchone()
        if row is None:
            return None
        log.warning("took over job %s: the replica that accepted it stopped beating", job_id)
        return str(row[0]), bytes(row[1])

    def _beat(self) -> None:
        while True:
            time.sleep(HEARTBEAT_SECONDS)
            try:
                with connection(self.url) as opened:
                    opened.execute(
                        "UPDATE mlestimate_jobs SET heartbeat = clock_timestamp() "
                        "WHERE owner = %s AND status = ANY(%s)",
                        (self.replica, list(UNFINISHED)),
                    )
            except StoreError as exc:
                log.warning("job heartbeat not written: %s", exc)


def _text(description: dict[str, Any]) -> str:
    return json.dumps(description, default=str)
