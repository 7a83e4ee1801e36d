"""Profiling children started from a warm parent, which has imported torch, torchvision and the profiler once.

A fresh interpreter per profile spends 2-7 s importing torch and torchvision before it measures anything.
Instead the caller keeps one warm parent (``python -m pytest_mlestimate.profiling.warm_parent``), which imports what
every profile needs without initialising CUDA, and forks it once per profile: the child is still a process
of its own (its RAM and GPU memory are its own, an out-of-memory or a crash ends it alone), it just starts
with the imports done. ``multiprocessing``'s forkserver does the same, but runs the caller's ``__main__``
again in every child, so a script calling ``estimate`` without an ``if __name__ == "__main__":`` guard
would recurse.

The caller hands the warm parent a request and the ends of the pipes the child talks through (over a Unix
socket, ``socket.send_fds``): the child reads the scenario and the caller's import path, environment and
working directory from one pipe, writes its result on another and its output in an unnamed temporary file;
the warm parent answers the child's pid, and writes its exit status on a last pipe once it has reaped it.
The child dies with the warm parent, which dies with its caller (``worker.die_with``).
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import IO, Any

PRELOAD = ("torch", "torchvision", "pytest_mlestimate.profiling.profiler", "pytest_mlestimate.scenarios.scenario")
FRESH_VARIABLE = "MLESTIMATE_FRESH_INTERPRETER"
"""Set to 1 to start every profile in a fresh interpreter, as before the warm parent."""
READY = b"ready\n"
REAP_INTERVAL = 0.1
START_TIMEOUT = 120.0
"""Seconds the warm parent may take to import torch and torchvision on a slow, busy machine."""


def available() -> bool:
    if os.environ.get(FRESH_VARIABLE, "") not in ("", "0"):
        return False
    return sys.platform.startswith("linux") and hasattr(socket, "send_fds") and hasattr(os, "fork")


@dataclass(eq=False)
class Child:
    """A forked profiling child, as the caller sees it: its pid, and the pipes its outcome arrives on."""

    pid: int
    result: int
    status: int
    output: IO[bytes]

    def kill(self) -> None:
        """The child and whatever it started (its own process group)."""
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def wait(self, timeout: float | None) -> tuple[bytes, int | None] | None:
        """The result bytes and the exit code (negative: the signal that ended it); None past ``timeout``.
        The exit code is None when the warm parent died before it could say."""
        limit = None if timeout is None else time.monotonic() + timeout
        chunks = []
        while True:
            left = None if limit is None else max(0.0, limit - time.monotonic())
            ready, _, _ = select.select([self.result], [], [], left)
            if not ready:
                return None
            chunk = os.read(self.result, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
        status = b""
        while chunk := os.read(self.status, 64):  # the warm parent reaps within REAP_INTERVAL
            status += chunk
        return b"".join(chunks), int(status) if status.strip() else None

    def output_tail(self, limit: int = 1 << 16) -> str:
        self.output.seek(0, os.SEEK_END)
        size = self.output.tell()
        self.output.seek(max(0, size - limit))
        return self.output.read().decode("utf-8", "replace")

    def close(self) -> None:
        for fd in (self.result, self.status):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.output.close()


WARM_PARENT_MODULE = "pytest_mlestimate.profiling.warm_parent"
"""What the warm parent runs as; the children it forks share its command line."""


class WarmParent:
    """The caller's side of one warm parent process; ``fork`` is safe from several threads."""

    def __init__(self, environment: dict[str, str]) -> None:
        self._socket, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        command = [sys.executable, "-m", WARM_PARENT_MODULE, "--warm", str(theirs.fileno())]
        command += ["--parent", str(os.getpid())]
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=environment,
            pass_fds=(theirs.fileno(),),
            process_group=0,
        )
        theirs.close()
        self._lock = threading.Lock()
        self._socket.settimeout(START_TIMEOUT)
        try:
            ready = self._socket.recv(len(READY))
        except OSError:
            ready = b""
        self._socket.settimeout(None)
        if ready != READY:
            self.stop()
            raise OSError("the warm parent did not start")

    def alive(self) -> bool:
        return self.process.poll() is None

    def fork(self, request: dict[str, Any], progress: int | None, turns: tuple[int, ...] = ()) -> Child:
        """Start one child; ``request`` (JSON) is what it reads first, ``progress`` a pipe it may write to,
        ``turns`` the ends it takes its turns through (``turns.TurnEnds``)."""
        scenario_r, scenario_w = os.pipe()
        result_r, result_w = os.pipe()
        status_r, status_w = os.pipe()
        output = tempfile.TemporaryFile(prefix="mlestimate-")  # noqa: SIM115 (Child.close closes it); unnamed
        theirs = [scenario_r, result_w, status_w, output.fileno()] + ([progress] if progress is not None else [])
        request = {**request, "turns": len(theirs) if turns else None}
        theirs += list(turns)
        try:
            with self._lock:
                socket.send_fds(self._socket, [b"%d\n" % len(theirs)], theirs)
                reply = b""
                while not reply.endswith(b"\n"):
                    part = self._socket.recv(32)
                    if not part:
                        raise OSError("the warm parent ended")
                    reply += part
        except BaseException:
            for fd in (scenario_w, result_r, status_r):
                os.close(fd)
            output.close()
            raise
        finally:
            for fd in (scenario_r, result_w, status_w):
                os.close(fd)
        with os.fdopen(scenario_w, "wb") as pipe, contextlib.suppress(BrokenPipeError):
            pipe.write(json.dumps(request).encode())
        return Child(int(reply), result_r, status_r, output)

    def stop(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self._socket.close()


_warm: WarmParent | None = None
_warm_lock = threading.Lock()


def warm_parent(environment: dict[str, str]) -> WarmParent:
    """This process's warm parent, started on first use and again if it died."""
    global _warm
    with _warm_lock:
        if _warm is None or not _warm.alive():
            _warm = _start_in_a_thread_of_its_own(environment)
        return _warm


def _start_in_a_thread_of_its_own(environment: dict[str, str]) -> WarmParent:
    """The parent-death signal fires when the *thread* that started the warm parent ends: started from the
    thread of a profile (a pool's, a request's), the warm parent and every running profile would die with that
    thread. This thread lives as long as the warm parent."""
    started: queue.SimpleQueue[WarmParent | BaseException] = queue.SimpleQueue()

    def run() -> None:
        try:
            parent = WarmParent(environment)
        except BaseException as exc:
            started.put(exc)
            return
        started.put(parent)
        parent.process.wait()

    threading.Thread(target=run, name="mlestimate-warm-parent", daemon=True).start()
    outcome = started.get()
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome


def stop_warm_parent() -> None:
    """No lock: safe in a signal handler."""
    if _warm is not None:
        with contextlib.suppress(OSError):
            os.killpg(_warm.process.pid, signal.SIGKILL)


PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
MADV_POPULATE_READ = 22
"""Linux 5.14+: fault a range into the page table, as reading each page would."""


def resident_file_pages() -> list[tuple[int, int]]:
    """(start, length) of the runs of file-backed pages (shared libraries, mostly torch's) that this process
    has in its page table.

    A fork copies the page table of private anonymous memory, not of file mappings: the child would count
    in its RSS only the library pages it touches itself, where a fresh interpreter also counts every page
    its imports touched. On the 2-core development VM that made a forked child's Peak RAM Memory 37 % lower
    than a fresh process's for the tiny model. So the warm parent notes these runs once, and each child
    faults them in first (``populate``): its RSS then counts what a fresh process's would."""
    runs: list[tuple[int, int]] = []
    try:
        with open("/proc/self/maps", encoding="utf-8") as maps, open("/proc/self/pagemap", "rb") as pagemap:
            for line in maps:
                fields = line.split()
                if len(fields) < 6 or not fields[5].startswith("/") or not fields[1].startswith("r"):
                    continue
                start, end = (int(part, 16) for part in fields[0].split("-"))
                pagemap.seek(start // PAGE * 8)
                entries = pagemap.read((end - start) // PAGE * 8)
                run_start = None
                for index in range(len(entries) // 8):
                    present = entries[index * 8 + 7] & 0x80
                    address = start + index * PAGE
                    if present and run_start is None:
                        run_start = address
                    elif not present and run_start is not None:
                        runs.append((run_start, address - run_start))
                        run_start = None
                if run_start is not None:
                    runs.append((run_start, end - run_start))
    except OSError:
        return []
    return runs


def populate(runs: list[tuple[int, int]]) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for start, length in runs:
        if libc.madvise(ctypes.c_void_p(start), ctypes.c_size_t(length), MADV_POPULATE_READ) != 0:
            for address in range(start, start + length, PAGE):  # an older kernel: touch each page
                with contextlib.suppress(Exception):
                    ctypes.string_at(address, 1)


def serve(channel: int, caller: int) -> int:
    """The warm parent's loop: import once, then fork a child per request until the caller goes away. No
    thread of its own (a fork copies only the thread that forks): it looks for its caller between requests."""
    for name in PRELOAD:
        __import__(name)
    runs = resident_file_pages()
    me = os.getpid()
    sock = socket.socket(fileno=channel)
    sock.sendall(READY)
    statuses: dict[int, int] = {}
    while True:
        ready, _, _ = select.select([sock], [], [], REAP_INTERVAL)
        _reap(statuses)
        if os.getppid() != caller:
            return 0
        if not ready:
            continue
        try:
            message, fds, _flags, _address = socket.recv_fds(sock, 64, 8)
        except OSError:
            return 0
        if not message:  # the caller closed its end: it is gone
            return 0
        pid = os.fork()
        if pid == 0:
            sock.close()
            for sibling in statuses.values():  # held, a sibling's status pipe would not end when the warm parent
                os.close(sibling)  # closes it, and its caller would wait for this child too
            _run_child(fds, runs, me)  # never returns
        statuses[pid] = fds[2]
        for fd in fds[:2] + fds[3:]:
            os.close(fd)
        sock.sendall(b"%d\n" % pid)


def _reap(statuses: dict[int, int]) -> None:
    while statuses:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        fd = statuses.pop(pid, None)
        if fd is not None:
            with contextlib.suppress(OSError):
                os.write(fd, str(os.waitstatus_to_exitcode(status)).encode())
            os.close(fd)


def _run_child(fds: list[int], runs: list[tuple[int, int]], parent: int) -> None:
    code = 1
    try:
        from pytest_mlestimate.profiling import worker

        scenario_r, result_w, status_w, output = fds[:4]
        os.close(status_w)
        os.setpgrp()  # a group of its own: the caller kills it with whatever it starts
        os.dup2(output, 1)
        os.dup2(output, 2)
        os.close(output)
        with os.fdopen(scenario_r, "rb") as pipe:
            request = json.loads(pipe.read())
        at = request.get("turns")
        progress = fds[4] if len(fds) > 4 and at != 4 else None
        if at is not None:
            from pytest_mlestimate.profiling import turns

            turns.install(fds[at], fds[at + 1])  # before anything that computes
        populate(runs)
        worker.die_with(parent)
        deadline = request.get("deadline")
        worker.watch(parent, time.monotonic() + deadline if deadline else None)
        sys.path[:] = request["path"]
        threads = _threads_of(request)
        os.environ.clear()
        os.environ.update(request["environment"])
        with contextlib.suppress(OSError):
            os.chdir(request["cwd"])
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        with os.fdopen(result_w, "w", encoding="utf-8") as out:
            code = worker.measure(request["scenario"], out, progress)
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _threads_of(request: dict[str, Any]) -> int | None:
    """Pins this child to the CPUs of the caller's thread (a service's lane pins its thread: a fresh child
    inherited that), and the torch threads a fresh interpreter would have chosen, when they differ from the warm
    parent's: torch sizes its OpenMP pool when it is imported, from OMP_NUM_THREADS or the CPUs it may use, and
    a fork keeps the warm parent's pool. None: the warm parent's count is right."""
    cpus = set(request.get("cpus") or ())
    inherited = (os.sched_getaffinity(0), os.environ.get("OMP_NUM_THREADS"))
    if cpus and cpus != inherited[0]:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, cpus)
    wanted = (os.sched_getaffinity(0), request["environment"].get("OMP_NUM_THREADS"))
    if wanted == inherited:
        return None
    first = (wanted[1] or "").split(",")[0].strip()
    return int(first) if first.isdigit() and int(first) > 0 else len(wanted[0])
