"""One node's resource figures at one moment, read from ``/proc`` and ``/metrics``.

A :class:`Sample` is what the soak records per node every sample interval:
the resident set size, open file descriptors and threads of the node's
process (``/proc/<pid>/status`` and ``/proc/<pid>/fd``), and its event-loop lag
(:mod:`raftdb.node.loop_lag`): the largest lag of the node's last minute, and
the p99 of the lags measured since the previous sample of the same process,
from the difference of two scrapes of the lag histogram.

Samples are written as CSV (:func:`write_header`, :func:`append`) so that a run
that dies half-way leaves every sample taken so far, and read back by
:func:`read_samples` for the trend check and the plot.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

__all__ = [
    "LagHistogram",
    "ProcFigures",
    "Sample",
    "append",
    "lag_histogram",
    "proc_figures",
    "quantile",
    "read_samples",
    "write_header",
]

_LAG = "raftdb_event_loop_lag_seconds"
_LAG_MAX = "raftdb_event_loop_lag_max_seconds"


@dataclass(frozen=True)
class Sample:
    """One node at one moment. ``segment`` counts the node's process starts, so that
    the samples of one process (between two restarts) share it; ``lag_*`` are NaN
    when the node did not answer ``/metrics`` (paused, or starting)."""

    t: float  # seconds since the run began
    node: int
    segment: int
    pid: int
    rss_mib: float
    fds: int
    threads: int
    lag_max_s: float
    lag_p99_s: float


@dataclass(frozen=True)
class ProcFigures:
    """What ``/proc/<pid>`` says of one process."""

    rss_mib: float
    fds: int
    threads: int


def proc_figures(pid: int, proc: Path = Path("/proc")) -> ProcFigures | None:
    """RSS, open fds and threads of ``pid``; None if it is gone (or a zombie)."""
    try:
        status = (proc / str(pid) / "status").read_text()
        fds = len(os.listdir(proc / str(pid) / "fd"))
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    values: dict[str, str] = {}
    for line in status.splitlines():
        name, _, rest = line.partition(":")
        values[name] = rest.strip()
    if "VmRSS" not in values:  # a zombie has no memory left
        return None
    rss_kib = int(values["VmRSS"].split()[0])
    return ProcFigures(rss_kib / 1024, fds, int(values["Threads"]))


@dataclass(frozen=True)
class LagHistogram:
    """The lag histogram of one scrape: cumulative counts per upper bound, and the
    window max gauge."""

    buckets: tuple[tuple[float, float], ...]  # (le, cumulative count), ascending
    max_s: float

    def since(self, earlier: LagHistogram | None) -> list[tuple[float, float]]:
        """Cumulative counts of the measurements after ``earlier`` (same process)."""
        if earlier is None or len(earlier.buckets) != len(self.buckets):
            return list(self.buckets)
        return [(le, n - m) for (le, n), (_, m) in zip(self.buckets, earlier.buckets, strict=True)]


def lag_histogram(metrics_text: str) -> LagHistogram | None:
    """The lag histogram and max gauge of a ``/metrics`` text; None without them."""
    buckets: list[tuple[float, float]] = []
    max_s: float | None = None
    for line in metrics_text.splitlines():
        if line.startswith(f"{_LAG}_bucket{{"):
            labels, _, value = line.rpartition(" ")
            le = labels.split('le="', 1)[1].split('"', 1)[0]
            buckets.append((math.inf if le == "+Inf" else float(le), float(value)))
        elif line.startswith(f"{_LAG_MAX} "):
            max_s = float(line.split()[1])
    if not buckets or max_s is None:
        return None
    return LagHistogram(tuple(sorted(buckets)), max_s)


def quantile(q: float, cumulative: list[tuple[float, float]]) -> float:
    """The ``q`` quantile of cumulative bucket counts, interpolated inside its bucket
    as Prometheus' ``histogram_quantile`` does (NaN when there are no counts; the
    highest finite bound when it falls in ``+Inf``)."""
    if not cumulative or cumulative[-1][1] <= 0:
        return math.nan
    rank = q * cumulative[-1][1]
    lower, below = 0.0, 0.0
    for le, count in cumulative:
        if count >= rank:
            if math.isinf(le):
                return lower
            if count == below:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return lower


_COLUMNS = [f.name for f in fields(Sample)]


def write_header(path: Path) -> None:
    """Start ``path`` as an empty samples CSV."""
    with path.open("w", newline="") as f:
        csv.writer(f).writerow(_COLUMNS)


def append(path: Path, samples: list[Sample]) -> None:
    """Add ``samples`` to the CSV at ``path`` (flushed: a crash keeps them)."""
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, _COLUMNS)
        for s in samples:
            row = asdict(s)
            row["rss_mib"] = f"{s.rss_mib:.3f}"
            writer.writerow(row)


def read_samples(path: Path) -> list[Sample]:
    """Every sample of the CSV at ``path``."""
    with path.open(newline="") as f:
        return [
            Sample(
                t=float(r["t"]),
                node=int(r["node"]),
                segment=int(r["segment"]),
                pid=int(r["pid"]),
                rss_mib=float(r["rss_mib"]),
                fds=int(r["fds"]),
                threads=int(r["threads"]),
                lag_max_s=float(r["lag_max_s"]),
                lag_p99_s=float(r["lag_p99_s"]),
            )
            for r in csv.DictReader(f)
        ]
