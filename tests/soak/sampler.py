"""The soak's sampler: every interval, a :class:`~tests.soak.samples.Sample` per node.

A thread of its own, beside the workload's and the nemesis, so that a long
fault (a member cycle) does not delay the samples. For every node process
that runs it reads ``/proc/<pid>`` and scrapes ``/metrics`` (2 s timeout: a
paused node gives its ``/proc`` figures and NaN lag). The lag p99 is over the
measurements since the previous scrape of the same process; a restarted
process starts a new segment and its first p99 covers its life so far.

Only the raftdb node processes are node samples. A soak with power cuts also runs
one power-loss filesystem daemon per node (:mod:`tests.powerloss.fs`); given
``daemons`` (node id → daemon pid), the sampler records their ``/proc`` figures
apart, in ``daemons_path``: they are the harness, not raftdb, so they are shown
but not judged.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.chaos.cluster import ChaosCluster
from tests.soak.samples import LagHistogram, Sample, append, lag_histogram, proc_figures, quantile

__all__ = ["Sampler"]


@dataclass
class Sampler:
    """Samples ``cluster``'s nodes every ``interval`` seconds into ``path`` (CSV).

    ``started`` is the run's ``time.monotonic()`` origin; ``pids`` collects every
    node process seen (the leak check looks for survivors).
    """

    cluster: ChaosCluster
    path: Path
    interval: float
    started: float
    daemons: Callable[[], dict[int, int]] | None = None
    daemons_path: Path | None = None
    samples: list[Sample] = field(default_factory=list)
    daemon_samples: list[Sample] = field(default_factory=list)
    pids: set[int] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    _last: dict[int, LagHistogram] = field(default_factory=dict)
    _halt: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        """Take a first sample now, then one every ``interval`` on a thread."""
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Take a last sample and stop."""
        self._halt.set()
        if self._thread is not None:
            self._thread.join(30.0)
            if self._thread.is_alive():
                self.errors.append("the sampler thread did not stop")

    def _run(self) -> None:
        with httpx.Client(timeout=httpx.Timeout(2.0, connect=1.0)) as http:
            due = time.monotonic()
            while True:
                try:
                    self.sample(http.get)
                except Exception as exc:  # a sampler bug must end the run visibly, not hang it
                    self.errors.append(f"sampler: {type(exc).__name__}: {exc}")
                    return
                if self._halt.is_set():
                    return
                due += self.interval
                # The sampling period itself, not a synchronisation: wake at the next due time.
                self._halt.wait(max(0.0, due - time.monotonic()))

    def sample(self, get: Callable[..., httpx.Response]) -> list[Sample]:
        """One sample of every running node (appended to the CSV and ``samples``)."""
        now = time.monotonic() - self.started
        taken: list[Sample] = []
        for node_id, node in sorted(self.cluster.nodes.items()):
            proc = node.proc
            if proc is None or proc.poll() is not None:
                continue
            figures = proc_figures(proc.pid)
            if figures is None:
                continue
            self.pids.add(proc.pid)
            lag_max = lag_p99 = math.nan
            if not node.paused:
                try:
                    r = get(f"{node.api_url}/metrics")
                    hist = lag_histogram(r.text) if r.status_code == 200 else None
                except httpx.HTTPError:
                    hist = None
                if hist is not None:
                    previous = self._last.get(proc.pid)
                    lag_p99 = quantile(0.99, hist.since(previous))
                    lag_max = hist.max_s
                    self._last[proc.pid] = hist
            taken.append(
                Sample(
                    t=round(now, 3),
                    node=node_id,
                    segment=node.starts,
                    pid=proc.pid,
                    rss_mib=round(figures.rss_mib, 3),
                    fds=figures.fds,
                    threads=figures.threads,
                    lag_max_s=lag_max,
                    lag_p99_s=lag_p99,
                )
            )
        append(self.path, taken)
        self.samples += taken
        self._sample_daemons(now)
        return taken

    def _sample_daemons(self, now: float) -> None:
        if self.daemons is None or self.daemons_path is None:
            return
        taken = []
        for node_id, pid in sorted(self.daemons().items()):
            figures = proc_figures(pid)
            if figures is None:
                continue
            taken.append(
                Sample(
                    t=round(now, 3),
                    node=node_id,
                    segment=1,
                    pid=pid,
                    rss_mib=round(figures.rss_mib, 3),
                    fds=figures.fds,
                    threads=figures.threads,
                    lag_max_s=math.nan,
                    lag_p99_s=math.nan,
                )
            )
        append(self.daemons_path, taken)
        self.daemon_samples += taken
