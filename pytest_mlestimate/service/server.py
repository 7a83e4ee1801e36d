"""How ``mlestimate serve`` serves the app: uvicorn, with limits that keep slow or idle clients from holding
connections.

uvicorn closes a kept-alive connection that idles past its keep-alive timeout, but it has no limit on how long
a client may take to send a request: a client sending its headers a byte at a time, or never sending any, holds
its connection for as long as it likes. ``ReadDeadline`` adds that limit: a request's head and body must
arrive within ``read_timeout`` seconds of its first byte (of the connection, for the first request), or the
connection is closed. ``max_connections`` (uvicorn's ``limit_concurrency``) answers 503 past that many
connections and requests at once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from pytest_mlestimate.service.settings import ServiceSettings

log = logging.getLogger("pytest_mlestimate.service")

READING = (h11.IDLE, h11.SEND_BODY)
"""The client's h11 states while its request is not yet all received."""


class ReadDeadline(H11Protocol):
    read_timeout: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._deadline is None:  # the first bytes of the next request on a kept-alive connection
            self._arm()
        super().data_received(data)
        if self.conn.their_state not in READING:
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # arms uvicorn's keep-alive timer for the idle time until the next request
        self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._deadline = self.loop.call_later(self.read_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.conn.their_state in READING and not self.transport.is_closing():
            where = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
            log.warning("closed the connection of %s: its request did not arrive within %g s", where, self.read_timeout)
            self.transport.close()


def serve(app: FastAPI, settings: ServiceSettings, **options: Any) -> None:
    """uvicorn in one process (the queue that keeps profiles apart lives in it), with the settings' limits."""
    protocol = type("ReadDeadline", (ReadDeadline,), {"read_timeout": settings.read_timeout})
    uvicorn.run(
        app,
        http=protocol,
        timeout_keep_alive=settings.keep_alive_timeout,
        limit_concurrency=settings.max_connections,
        workers=1,
        **options,
    )
