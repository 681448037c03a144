"""``wrk`` runs: one process per target node, their JSON results merged.

``load.lua`` (next to this file) builds the requests and prints, from wrk's
``done()``, one ``WRKJSON`` line: counts, errors and the latency percentiles
0.5, 1.0 ... 99.5, 99.9, 99.99 and the maximum. A run spread over several
nodes starts one ``wrk`` per node at once; their rates add up, and their
latency distributions are merged as a mixture weighted by each one's
request count (each percentile point stands for 0.5 % of that process's
requests), which is as exact as the percentile grid.
"""

from __future__ import annotations

import json
import shutil
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from benchmarks.cluster.procs import HOST, BenchError, ProcessSet

__all__ = ["LUA_SCRIPT", "Api", "Op", "Target", "WrkResult", "merge", "parse_output", "run_wrk"]

#: The wrk script.
LUA_SCRIPT: Final = Path(__file__).with_name("load.lua")
#: wrk's per-request timeout: long, so that slow answers count as latency, not errors.
WRK_TIMEOUT: Final = "10s"

Api = Literal["rest", "etcd"]
Op = Literal["put", "get", "stale", "txn", "audit"]


@dataclass(frozen=True)
class Target:
    """One wrk process: ``connections`` connections to 127.0.0.1:``port``."""

    port: int
    connections: int


@dataclass(frozen=True)
class WrkResult:
    """What one measured run (one or several wrk processes at once) gave.

    Attributes:
        requests: answers received (any status).
        errors: answers with status > 399, plus socket errors and timeouts.
        rps: successful answers per second, summed over the processes.
        p50_ms: median latency.
        p99_ms: 99th percentile latency.
        max_ms: the slowest answer.
        processes: how many wrk processes ran.
    """

    requests: int
    errors: int
    rps: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    processes: int

    def to_json(self) -> dict[str, Any]:
        """The fields as a dict."""
        return dict(self.__dict__)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WrkResult:
        """The inverse of :meth:`to_json`."""
        return cls(**data)


def parse_output(text: str) -> dict[str, Any]:
    """The ``WRKJSON`` object in wrk's stdout.

    Raises:
        BenchError: there is none (wrk failed before ``done()``).
    """
    for line in text.splitlines():
        if line.startswith("WRKJSON "):
            parsed: dict[str, Any] = json.loads(line[len("WRKJSON ") :])
            return parsed
    raise BenchError(f"wrk printed no result:\n{text[-2000:]}")


def _quantile(points: list[tuple[float, float]], total: float, q: float) -> float:
    """The value below which a fraction ``q`` of the mass of ``points`` lies."""
    wanted = q * total
    seen = 0.0
    for value, mass in points:
        seen += mass
        if seen >= wanted:
            return value
    return points[-1][0] if points else 0.0


def merge(results: Sequence[dict[str, Any]]) -> WrkResult:
    """One :class:`WrkResult` from the parsed outputs of wrk processes run together."""
    requests = sum(int(r["requests"]) for r in results)
    errors = sum(sum(int(v) for v in r["errors"].values()) for r in results)
    rps = 0.0
    points: list[tuple[float, float]] = []
    for r in results:
        seconds = max(int(r["duration_us"]), 1) / 1e6
        failed = sum(int(v) for v in r["errors"].values())
        rps += max(int(r["requests"]) - failed, 0) / seconds
        grid = sorted((float(p), float(v)) for p, v in r["percentiles_us"].items())
        below = 0.0
        for p, value in grid:
            # Each grid point stands for the requests between it and the point below.
            points.append((value / 1000.0, (p - below) / 100.0 * int(r["requests"])))
            below = p
    points.sort()
    total = sum(mass for _, mass in points)
    return WrkResult(
        requests=requests,
        errors=errors,
        rps=rps,
        p50_ms=_quantile(points, total, 0.50),
        p99_ms=_quantile(points, total, 0.99),
        max_ms=max((float(r["percentiles_us"]["100"]) / 1000.0 for r in results), default=0.0),
        processes=len(results),
    )


def wrk_binary() -> str:
    """The path of ``wrk``.

    Raises:
        BenchError: it is not installed.
    """
    path = shutil.which("wrk")
    if path is None:
        raise BenchError("wrk is not installed (apt-get install wrk)")
    return path


def run_wrk(
    targets: Sequence[Target],
    api: Api,
    op: Op,
    *,
    prefix: str,
    duration_s: float,
    nkeys: int = 1,
    quota: int = 0,
    threads: int = 1,
    log: Path | None = None,
    stop_when: Callable[[], bool] | None = None,
) -> WrkResult:
    """Run one wrk process per target, all at once, and merge their results.

    Args:
        targets: where to send load and with how many connections.
        api: ``rest`` (``/v1/kv``) or ``etcd`` (the JSON gateway).
        op: ``put``, ``get`` (linearizable) or ``stale``; ``txn`` (a 2-put transfer)
            or ``audit`` (a 2-get transaction) on the ``rest`` API only.
        prefix: key prefix for ``put``; each process gets ``prefix<i>``.
        duration_s: how long wrk runs (``quota`` may stop it earlier).
        nkeys: how many preloaded keys reads cycle over.
        quota: when > 0, each wrk thread stops sending after that many answers
            (wrk itself waits out ``duration_s``: give ``stop_when`` too).
        threads: wrk threads per process (at most its connections).
        log: where wrk's stderr goes.
        stop_when: polled every 0.2 s; once true, wrk gets ``SIGINT``, which
            ends its run early with its results printed.

    Returns:
        The merged result.

    Raises:
        BenchError: a wrk failed.
    """
    binary = wrk_binary()
    seconds = max(1, round(duration_s))
    outputs: list[dict[str, Any]] = []
    with ProcessSet("wrk") as procs:
        running = []
        for i, target in enumerate(targets):
            argv = [
                binary,
                f"-t{max(1, min(threads, target.connections))}",
                f"-c{target.connections}",
                f"-d{seconds}s",
                f"--timeout={WRK_TIMEOUT}",
                "-s",
                str(LUA_SCRIPT),
                f"http://{HOST}:{target.port}",
                "--",
                api,
                op,
                f"{prefix}{i}",
                str(nkeys),
                str(quota),
            ]
            running.append(procs.start(f"wrk-{target.port}", argv, capture=True, log=log))
        if stop_when is not None:
            while any(proc.poll() is None for proc in running) and not stop_when():
                time.sleep(0.2)
            for proc in running:
                if proc.poll() is None:
                    proc.send_signal(signal.SIGINT)
        for proc in running:
            stdout, _ = proc.communicate(timeout=seconds + 120)
            if proc.returncode != 0:
                raise BenchError(f"wrk exited with status {proc.returncode}: {stdout[-500:]!r}")
            outputs.append(parse_output(stdout.decode(errors="replace")))
    return merge(outputs)
