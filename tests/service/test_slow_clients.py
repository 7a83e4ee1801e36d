"""A real ``mlestimate serve`` closes connections whose request does not arrive within --read-timeout, whether
the client never writes, sends its headers a byte at a time, or stalls in its body; others are served as usual."""

from __future__ import annotations

import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from tests.service.real_server import serving

READ_TIMEOUT = 1.0


def connect(base: str) -> socket.socket:
    address = urlsplit(base)
    conn = socket.create_connection((address.hostname, address.port), timeout=10)
    conn.settimeout(10)
    return conn


def health(conn: socket.socket) -> bytes:
    """A whole answer to GET /healthz on ``conn``."""
    conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = b""
    while not answer.endswith(b'{"status":"ok"}'):
        chunk = conn.recv(4096)
        if not chunk:
            break
        answer += chunk
    return answer


def seconds_until_closed(conn: socket.socket, trickle: bytes = b"") -> float:
    """Sends ``trickle`` a byte each 0.2 s (then nothing) until the server closes; the seconds that took."""
    started = time.monotonic()
    for byte in trickle:
        try:
            conn.sendall(bytes([byte]))
        except OSError:
            break
        conn.settimeout(0.2)
        try:
            if conn.recv(4096) == b"":
                return time.monotonic() - started
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - started
    conn.settimeout(10)
    try:
        while conn.recv(4096):
            pass
    except OSError:
        pass
    return time.monotonic() - started


def test_slow_and_idle_clients_are_cut_off_and_the_rest_are_served(tmp_path: Path) -> None:
    with serving(tmp_path, "--read-timeout", str(READ_TIMEOUT), "--keep-alive-timeout", "30") as server:
        idle = connect(server.base)
        head = connect(server.base)
        body = connect(server.base)
        body.sendall(
            b"POST /api/v1/estimate-resource HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 400\r\n\r\n{"
        )
        kept = connect(server.base)
        assert b"200 OK" in health(kept)

        # the slow header: a byte every 0.2 s for 4 s, far past the limit
        assert seconds_until_closed(head, b"GET /healthz HTTP/1.1\r\nX-Slow: " + b"a" * 20) < READ_TIMEOUT + 2
        assert seconds_until_closed(idle) < READ_TIMEOUT + 2
        assert seconds_until_closed(body) < READ_TIMEOUT + 2
        # a kept-alive connection idles under uvicorn's keep-alive timeout (30 s here), not the read timeout ...
        time.sleep(READ_TIMEOUT + 0.5)
        assert b"200 OK" in health(kept)
        # ... and its next request is held to the read timeout from its first byte
        assert seconds_until_closed(kept, b"GET /hea") < READ_TIMEOUT + 2
        assert httpx.get(f"{server.base}/healthz", timeout=5).status_code == 200
    assert server.log.count("did not arrive within 1 s") == 4
