"""Processes the benchmark starts, and always stops; free ports; tiny HTTP helpers.

Every server and every ``wrk`` runs in a process group of its own
(``start_new_session``) and asks the kernel to send it ``SIGTERM`` when the
runner dies (``PR_SET_PDEATHSIG``), so nothing outlives the benchmark even if
the runner is killed with ``SIGKILL``. :class:`ProcessSet` stops its groups
with ``SIGTERM``, then ``SIGKILL`` after a grace period; the runner turns
``SIGINT``/``SIGTERM``/``SIGHUP`` into exceptions so that its ``finally``
blocks run, and an ``atexit`` hook stops whatever is left.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import http.client
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

__all__ = [
    "HOST",
    "BenchError",
    "ProcessSet",
    "cpu_seconds",
    "free_ports",
    "http_request",
    "http_json",
    "log_tail",
    "wait_until",
]

#: Every process listens on, and every request goes to, this address.
HOST: Final = "127.0.0.1"
#: Seconds between ``SIGTERM`` and ``SIGKILL`` when stopping a process group.
STOP_GRACE_S: Final = 10.0

_PR_SET_PDEATHSIG: Final = 1
T = TypeVar("T")


class BenchError(RuntimeError):
    """The benchmark cannot go on (a server did not start, a tool is missing...)."""


def cpu_seconds(pids: Sequence[int]) -> float:
    """The CPU time (user + system, every thread's, exited ones included) the
    processes ``pids`` have used so far, summed; a process that is gone counts 0."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports on 127.0.0.1 that are free now (bound to port 0)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _die_with_parent() -> None:
    """In the child before ``exec``: ``SIGTERM`` when the parent goes away."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ProcessSet:
    """Process groups started by the benchmark; :meth:`stop_all` ends every one.

    Args:
        name: shown in error messages.
    """

    _live: Final[list[ProcessSet]] = []

    def __init__(self, name: str) -> None:
        self.name = name
        self.procs: list[tuple[str, subprocess.Popen[bytes], Path | None]] = []
        ProcessSet._live.append(self)

    def start(
        self,
        label: str,
        argv: Sequence[str],
        *,
        log: Path | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        capture: bool = False,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` in a new process group.

        Args:
            label: a name for messages (``raftdb-1``).
            argv: the command.
            log: file for its stdout and stderr (``capture`` wins).
            env: the environment (default: the runner's).
            cwd: the working directory.
            capture: pipe stdout (for ``wrk``) and send stderr to ``log`` or nowhere.

        Returns:
            The process.

        Raises:
            BenchError: the command is not there.
        """
        out: Any
        if capture:
            out = subprocess.PIPE
            err: Any = log.open("ab") if log is not None else subprocess.DEVNULL
        else:
            out = log.open("ab") if log is not None else subprocess.DEVNULL
            err = subprocess.STDOUT
        try:
            proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=dict(env) if env is not None else None,
                cwd=cwd,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # only prctl: safe between fork and exec
            )
        except FileNotFoundError as exc:
            raise BenchError(f"{self.name}: cannot start {label}: {exc}") from None
        finally:
            for stream in (out, err):
                if hasattr(stream, "close"):
                    stream.close()
        self.procs.append((label, proc, log))
        return proc

    def check_running(self) -> None:
        """Raise :class:`BenchError` (with the log's tail) if a process has exited."""
        for label, proc, log in self.procs:
            if proc.poll() is not None:
                raise BenchError(
                    f"{self.name}: {label} exited with status {proc.returncode}" + log_tail(log)
                )

    def stop_all(self) -> None:
        """``SIGTERM`` every group, wait, then ``SIGKILL`` what is left; idempotent."""
        for _, proc, _ in self.procs:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for _, proc, _ in self.procs:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                proc.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()
            # The group may hold children that outlive its leader.
            _signal_group(proc, signal.SIGKILL)
            if proc.stdout is not None:
                proc.stdout.close()
        self.procs.clear()
        with contextlib.suppress(ValueError):
            ProcessSet._live.remove(self)

    def __enter__(self) -> ProcessSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    @classmethod
    def stop_everything(cls) -> None:
        """Stop every set still live (the ``atexit`` hook and the signal path)."""
        for live in list(cls._live):
            live.stop_all()


atexit.register(ProcessSet.stop_everything)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # The group id is the leader's pid (start_new_session); it may be gone already.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def log_tail(log: Path | None, lines: int = 15) -> str:
    """The last ``lines`` lines of ``log``, indented, for an error message."""
    if log is None or not log.exists():
        return ""
    text = log.read_text(errors="replace").splitlines()[-lines:]
    return "\n  " + "\n  ".join(text) if text else ""


def wait_until(
    what: str, probe: Callable[[], T | None], timeout: float, check: Callable[[], None]
) -> T:
    """Poll ``probe`` until it returns something other than ``None``.

    Args:
        what: for the error message.
        probe: returns ``None`` while not there yet (exceptions count as not yet).
        timeout: seconds.
        check: called between polls; raises when waiting is pointless (a process died).

    Returns:
        What ``probe`` returned.

    Raises:
        BenchError: on timeout.
    """
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = probe()
        except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
            last, result = exc, None
        if result is not None:
            return result
        check()
        time.sleep(0.1)
    raise BenchError(f"timed out after {timeout:.0f} s waiting for {what} (last error: {last})")


def http_request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    *,
    timeout: float = 5.0,
    conn: http.client.HTTPConnection | None = None,
) -> tuple[int, bytes]:
    """One HTTP/1.1 request to 127.0.0.1:``port``; returns ``(status, body)``.

    Args:
        port: the server's port.
        method: ``GET``, ``PUT``, ``POST``...
        path: the request target.
        body: the request body.
        timeout: socket timeout in seconds.
        conn: a kept-alive connection to reuse (it must point at ``port``).
    """
    own = conn is None
    connection = conn or http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request(method, path, body=body)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        if own:
            connection.close()


def http_json(port: int, method: str, path: str, payload: object | None = None) -> Any:
    """``http_request`` with a JSON body and a JSON answer; ``None`` unless status 200."""
    body = None if payload is None else json.dumps(payload).encode()
    status, data = http_request(port, method, path, body)
    if status != 200:
        return None
    return json.loads(data)
