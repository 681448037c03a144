"""One soak run: a long chaos run with a modest load, sampled, then judged.

:func:`run_soak` starts a 3-node :class:`~tests.chaos.cluster.ChaosCluster` (a
:class:`~tests.powerloss.cluster.PowerCluster`, every node's data directory on a
power-loss filesystem of its own, when the faults include a power cut),
the chaos workload (:func:`tests.chaos.runner.chaos_workload`: puts, deletes,
conditional writes, linearizable and stale reads, ledger writes, bank
transactions, leases, watchers on every member) rate-limited to ``rate``
operations a second, and the chaos nemesis drawing from :data:`SOAK_FAULTS`
every few seconds, while a :class:`~tests.soak.sampler.Sampler` records every
node's RSS, fds, threads and event-loop lag every ``sample_seconds``. Node 1 is
spared from restarts (``Nemesis.spare``): its one process lives through the
run, so its figures are one long series (a power cut restarts its victims too, so
node 1 is never cut; ``powercut_all`` cuts the other two).

At the end the load stops, the cluster is healed and the chaos runner's end
checks run (:func:`tests.chaos.runner.check_run`: convergence, ledger,
indexes, lease settling, linearizability; not the whole-history checks, since
the soak's nodes keep a bounded ``watch_history``, as a real deployment does,
so that retention does not read as growth). Then the nodes are stopped and
every data directory passes the offline log checks
(:func:`tests.chaos.test_crash.check_disk`: no gaps, terms in order, hard state,
state machine and committed prefixes agreeing), the filesystems' own counters are
read (fsyncs, cuts, bytes and names dropped), the cluster is closed (the mounts
unmounted, whatever happened) and

- :func:`tests.soak.trend.check_trends` judges every segment's growth after ``warmup``;
- :func:`tests.soak.leaks.leftovers` looks for processes, ports and mounts left behind.

Everything goes to ``out/<run>/``: ``samples.csv``, ``summary.json``, ``rss.png``
and the cluster's directory (node logs, data) under ``cluster/``; with power cuts
also ``daemons.csv``, the filesystem daemons' figures (recorded, not judged).

The filesystems run in ``strict`` mode (:data:`FS_MODE`): a name is durable only
once its directory was fsynced, the least POSIX promises. That is the mode the
power-loss suite passes, and it drops more at each cut than ``ordered`` (which
keeps every namespace change, as ext4 does), so a soak in it covers what an
ordered filesystem would lose and more.
"""

from __future__ import annotations

import json
import math
import random
import signal
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from tests.chaos.cluster import ChaosCluster
from tests.chaos.nemesis import POWER_FAULTS, Nemesis
from tests.chaos.runner import (
    ELECTION_TICKS,
    TICK_MS,
    ChaosReport,
    Scenario,
    chaos_workload,
    check_run,
    cluster_settings,
)
from tests.chaos.test_crash import check_disk
from tests.powerloss.cluster import PowerCluster
from tests.powerloss.cluster import check_disk as check_disk_power
from tests.powerloss.mount import fuse_available
from tests.soak.leaks import leftovers
from tests.soak.plot import plot_samples
from tests.soak.sampler import Sampler
from tests.soak.samples import Sample, write_header
from tests.soak.trend import Growth, check_trends

__all__ = ["FS_MODE", "SOAK_FAULTS", "SOAK_SCENARIO", "SPARED", "SoakResult", "run_soak"]

#: The faults the soak draws from (a kind listed twice is drawn twice as often).
#: Each name is a ``Nemesis._<name>`` method; the power cuts put the cluster on
#: power-loss filesystems.
SOAK_FAULTS: Final = (
    "kill",
    "stop",
    "pause",
    "partition",
    "partition",
    "slow",
    "transfer",
    "member",
    "restart_all",
    "powercut",
    "powercut_all",
)
#: The power-loss filesystems' mode (see the module docstring).
FS_MODE: Final = "strict"
#: The node no fault restarts (see the module docstring).
SPARED: Final = frozenset({1})
#: The soak's cluster: small snapshots, and a watch history that fills in a few
#: minutes (well inside the warm-up) and then stays that size.
SOAK_SCENARIO: Final = Scenario(
    "soak",
    3,
    SOAK_FAULTS,
    clients=3,
    settings=(
        ("snapshot_entries", 1000),
        ("snapshot_keep_entries", 200),
        ("watch_history", 2000),
    ),
)
#: Seconds between two faults (one is held 0.8 to 2.5 s): "every few seconds".
QUIET: Final = (2.0, 5.0)
#: The share of the key-value reads sent with ``consistency=stale``.
STALE_READS: Final = 0.2


@dataclass
class SoakResult:
    """What a soak run did and found (``summary.json`` is its :meth:`to_json`)."""

    run: str
    directory: Path
    seed: int
    rate: float
    seconds: float
    sample_seconds: float
    warmup: float
    report: ChaosReport
    samples: list[Sample] = field(default_factory=list)
    growth: list[Growth] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    #: With power cuts: the filesystems' mode, what the cuts dropped in all, and each
    #: node's filesystem counters and daemon figures.
    power: dict[str, Any] | None = None
    daemon_samples: list[Sample] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def nodes(self) -> dict[str, dict[str, Any]]:
        """Per node: RSS first/last, slope of its longest judged process, max fds and
        threads, restarts, highest event-loop lag p99 and max."""
        out: dict[str, dict[str, Any]] = {}
        for node in sorted({s.node for s in self.samples}):
            mine = [s for s in self.samples if s.node == node]
            lags = [s.lag_p99_s for s in mine if not math.isnan(s.lag_p99_s)]
            maxes = [s.lag_max_s for s in mine if not math.isnan(s.lag_max_s)]
            rss = [g for g in self.growth if g.node == node and g.figure == "rss_mib"]
            longest = max(rss, key=lambda g: g.fit.span, default=None)
            slope = None if longest is None else round(longest.fit.per_hour, 2)
            slope_span = None if longest is None else round(longest.fit.span / 60, 1)
            median = sorted(lags)[len(lags) // 2] if lags else math.nan
            out[str(node)] = {
                "samples": len(mine),
                "processes": len({s.segment for s in mine}),
                "rss_mib_first": round(mine[0].rss_mib, 1),
                "rss_mib_last": round(mine[-1].rss_mib, 1),
                "rss_mib_max": round(max(s.rss_mib for s in mine), 1),
                "rss_slope_mib_per_hour": slope,
                "rss_slope_minutes": slope_span,
                "fds_max": max(s.fds for s in mine),
                "threads_max": max(s.threads for s in mine),
                "lag_p99_ms_max": round(1000 * max(lags), 1) if lags else None,
                "lag_p99_ms_median": round(1000 * median, 1) if lags else None,
                "lag_max_ms": round(1000 * max(maxes), 1) if maxes else None,
            }
        return out

    def to_json(self) -> dict[str, Any]:
        r = self.report
        return {
            "run": self.run,
            "ok": self.ok,
            "seed": self.seed,
            "rate": self.rate,
            "minutes": round(self.seconds / 60, 1),
            "sample_seconds": self.sample_seconds,
            "warmup_seconds": self.warmup,
            "faults": dict(sorted(r.faults.items())),
            "recovery_max_s": round(max(r.recoveries, default=0.0), 1),
            "ops": dict(sorted(r.ops.items())),
            "ledger": dict(sorted(r.ledger.items())),
            "txns": dict(sorted(r.txns.items())),
            "leases": dict(sorted(r.leases.items())),
            "keys": r.keys,
            "applied_index": r.applied_index,
            "check_seconds": round(r.check_seconds, 1),
            "nodes": self.nodes(),
            "growth": [
                {
                    "node": g.node,
                    "process": g.segment,
                    "figure": g.figure,
                    "per_hour": round(g.fit.per_hour, 3),
                    "mean": round(g.fit.mean, 2),
                    "minutes": round(g.fit.span / 60, 1),
                    "points": g.fit.points,
                    "grows": g.grows,
                }
                for g in self.growth
            ],
            "power": self.power_json(),
            "leaks": self.leaks,
            "problems": self.problems,
        }

    def power_json(self) -> dict[str, Any] | None:
        """The power cuts: how many, what they dropped, each node's filesystem."""
        if self.power is None:
            return None
        faults = self.report.faults
        daemons: dict[str, dict[str, Any]] = {}
        for node in sorted({s.node for s in self.daemon_samples}):
            mine = [s for s in self.daemon_samples if s.node == node]
            daemons[str(node)] = {
                "samples": len(mine),
                "rss_mib_first": round(mine[0].rss_mib, 1),
                "rss_mib_last": round(mine[-1].rss_mib, 1),
                "rss_mib_max": round(max(s.rss_mib for s in mine), 1),
                "fds_max": max(s.fds for s in mine),
            }
        return {
            **self.power,
            "cuts": faults["powercut"] + faults["powercut_all"],
            "daemons": daemons,
        }

    def summary(self) -> str:
        """The one line a run prints."""
        r = self.report
        faults = " ".join(f"{k}={v}" for k, v in sorted(r.faults.items())) or "none"
        judged = len({(g.node, g.segment) for g in self.growth})
        result = "PASS" if self.ok else f"FAIL ({len(self.problems)}: {self.problems[0][:300]})"
        power = self.power_json()
        cuts = ""
        if power is not None:
            dropped = power["dropped"]
            cuts = (
                f"; {power['cuts']} power cuts ({power['fs_mode']}) dropped "
                f"{dropped.get('bytes_dropped', 0)} bytes and "
                f"{dropped.get('names_reverted', 0)} names"
            )
        return (
            f"soak seed={self.seed} rate={self.rate:g}/s {self.seconds / 60:.1f} min: "
            f"{r.ops['checked']} ops checked ({r.ops['stale_reads']} stale reads), "
            f"{len(self.samples)} samples, {judged} processes judged; faults {faults}{cuts}; "
            f"{self.directory}: {result}"
        )


def run_soak(
    out: Path,
    *,
    seconds: float,
    sample_seconds: float = 60.0,
    rate: float = 10.0,
    seed: int = 1,
    warmup: float | None = None,
    faults: tuple[str, ...] = SOAK_FAULTS,
    plot: bool = True,
    log: Any = print,
) -> SoakResult:
    """Run the soak for ``seconds`` into ``out/<run>/``; see the module docstring.

    ``warmup`` defaults to a fifth of the run, at most 5 minutes; ``faults`` are the
    kinds the nemesis draws from (a short test takes the quick ones); any power
    cut among them puts the cluster on power-loss filesystems (FUSE is needed:
    ``RuntimeError`` without it).
    """
    power = any(kind in POWER_FAULTS for kind in faults)
    if power and (why := fuse_available()) is not None:
        raise RuntimeError(f"the soak's power cuts need FUSE: {why}")
    run = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-seed{seed}"
    directory = (out / run).resolve()  # the nodes run in their own directory
    directory.mkdir(parents=True, exist_ok=False)
    warm = min(300.0, seconds / 5) if warmup is None else warmup
    rng = random.Random(seed)
    report = ChaosReport("soak", seed, SOAK_SCENARIO.nodes)
    result = SoakResult(run, directory, seed, rate, 0.0, sample_seconds, warm, report)
    samples_path = directory / "samples.csv"
    write_header(samples_path)
    c = _cluster(directory / "cluster", power)
    ports: set[int] = set()
    sampler: Sampler | None = None
    try:
        c.start_all()
        c.wait_leader()
        workload = chaos_workload(
            c, SOAK_SCENARIO, seed, rate=rate, stale_reads=STALE_READS, run_id=run
        )
        nemesis = Nemesis(c, rng, faults, quiet=QUIET, spare=SPARED)
        started = time.monotonic()
        sampler = Sampler(c, samples_path, sample_seconds, started)
        if isinstance(c, PowerCluster):
            sampler.daemons = lambda: _daemon_pids(c)
            sampler.daemons_path = directory / "daemons.csv"
            write_header(sampler.daemons_path)
        sampler.start()
        workload.start()
        try:
            nemesis.run(seconds)
        finally:
            workload.stop()
            sampler.stop()
            report.faults = nemesis.counts
            report.recoveries = nemesis.recoveries
        result.seconds = report.seconds = time.monotonic() - started
        log(f"soak: load stopped after {result.seconds / 60:.1f} min; checking")
        check_run(c, workload, report, rng, history=False)
        result.problems += _check_disks(c)
        if isinstance(c, PowerCluster):
            result.power = {
                "fs_mode": c.fs_mode,
                "dropped": dict(sorted(c.dropped.items())),
                "filesystems": {str(i): m.stats() for i, m in sorted(c.mounts.items())},
            }
    finally:
        ports = {p for n in c.nodes.values() for p in (n.api_port, n.peer_port)}
        ports |= set(c.private_ports.values())
        c.close()
    result.samples = sampler.samples if sampler is not None else []
    result.daemon_samples = sampler.daemon_samples if sampler is not None else []
    result.problems = report.problems + result.problems
    if sampler is not None:
        result.problems += sampler.errors
        result.leaks = leftovers(directory, sampler.pids, ports)
    result.problems += result.leaks
    result.growth = check_trends(result.samples, warm)
    result.problems += [g.describe() for g in result.growth if g.grows]
    if not result.samples:
        result.problems.append("no sample was taken")
    if plot and result.samples:
        plot_samples(
            result.samples,
            directory / "rss.png",
            f"raftdb soak {run}: {result.seconds / 60:.0f} min, {rate:g} ops/s, "
            f"{sum(report.faults.values())} faults",
        )
    (directory / "summary.json").write_text(json.dumps(result.to_json(), indent=2) + "\n")
    log(result.summary())
    return result


def _cluster(root: Path, power: bool) -> ChaosCluster:
    """The soak's cluster: on power-loss filesystems if ``power``."""
    options: dict[str, Any] = {
        "size": SOAK_SCENARIO.nodes,
        "tick_ms": TICK_MS,
        "election_ticks": ELECTION_TICKS,
        "settings": cluster_settings(SOAK_SCENARIO),
    }
    if power:
        return PowerCluster(root, fs_mode=FS_MODE, **options)
    return ChaosCluster(root, **options)


def _daemon_pids(c: PowerCluster) -> dict[int, int]:
    return {i: m.proc.pid for i, m in sorted(c.mounts.items()) if m.proc is not None}


def _check_disks(c: ChaosCluster) -> list[str]:
    """Stop every node (gracefully) and run the offline log checks on its data."""
    problems = []
    for i in sorted(c.nodes):
        code = c.stop(i)
        if code not in (0, None, -signal.SIGTERM):
            problems.append(f"node {i} exited with {code} on SIGTERM at the end")
    if isinstance(c, PowerCluster):
        return problems + check_disk_power(c)
    return problems + check_disk({i: n.data_dir for i, n in c.nodes.items()})
