"""Power cuts of real raftdb nodes (see :mod:`tests.powerloss.scenarios`).

The CI share covers every pair of plugins in two mixed clusters (a node's storage
and state machine are its own choice): cuts of one node and of the whole cluster
under write load, and cuts during snapshots, log compaction and snapshot installs.
The long runs (``-m slow``, ``make chaos``) give each pair a cluster of its own and
``POWERLOSS_CUTS`` cuts.

A node with the in-memory state machine starts from an empty state and replays its
log: it cannot restart once its log was compacted (it refuses, saying so), with or
without a power cut, so clusters holding one never compact.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest

from raftdb_leveldb.state_machine import WRITE_BUFFER_ENV
from tests.powerloss.cluster import PowerCluster
from tests.powerloss.scenarios import finish, start_load

LONG_CUTS = int(os.environ.get("POWERLOSS_CUTS", "60"))

BASE: dict[str, Any] = {"request_timeout_s": 2.0}
NO_COMPACTION: dict[str, Any] = {**BASE, "snapshot_entries": 10**9}
COMPACTING: dict[str, Any] = {**BASE, "snapshot_entries": 100, "snapshot_keep_entries": 20}

PAIRS = [("leveldb", "leveldb"), ("sqlite", "leveldb"), ("leveldb", "memory"), ("sqlite", "memory")]

ClusterFactory = Callable[..., PowerCluster]


def plugins(storage: str, state_machine: str) -> dict[str, str]:
    return {"storage": storage, "state_machine": state_machine}


@pytest.mark.deadline(150)
def test_power_cuts_under_write_load(
    power_cluster: ClusterFactory, summary: Callable[[str], None]
) -> None:
    c = power_cluster(
        3,
        settings=NO_COMPACTION,
        node_settings={
            1: plugins("leveldb", "memory"),
            2: plugins("sqlite", "memory"),
            3: plugins("leveldb", "leveldb"),
        },
    )
    run = start_load(c, seed=31)
    try:
        for _ in range(4):
            run.cut_one()
        run.cut_all()
        run.cut_one()
    finally:
        run.workload.stop()
    finish(run, "write-load", summary)


@pytest.mark.deadline(150)
def test_power_cuts_at_snapshots_and_installs(
    power_cluster: ClusterFactory, summary: Callable[[str], None]
) -> None:
    c = power_cluster(
        3,
        settings=COMPACTING,
        node_settings={
            1: plugins("sqlite", "leveldb"),
            2: plugins("leveldb", "leveldb"),
            3: plugins("sqlite", "leveldb"),
        },
    )
    run = start_load(c, seed=32)
    try:
        run.cut_during_install()
        run.cut_at_snapshot(c.wait_leader())
        run.cut_at_snapshot(run.rng.choice(sorted(c.nodes)))
        run.cut_during_install()
        run.cut_all()
    finally:
        run.workload.stop()
    finish(run, "snapshots", summary)


@pytest.mark.deadline(150)
def test_power_cuts_while_leveldb_rotates_its_log_often(
    power_cluster: ClusterFactory,
    summary: Callable[[str], None],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The LevelDB state machine makes each batch durable after answering it, before
    the next one: with a 16 KiB write buffer its log rotates every few dozen writes,
    so cuts land next to rotations, where a batch sits in a log LevelDB closed unsynced."""
    monkeypatch.setenv(WRITE_BUFFER_ENV, str(16 << 10))  # the nodes inherit it
    c = power_cluster(3, settings={**COMPACTING, **plugins("leveldb", "leveldb")})
    run = start_load(c, seed=33)
    try:
        for _ in range(3):
            run.cut_one()
        run.cut_all()
        run.cut_at_snapshot(run.rng.choice(sorted(c.nodes)))
        run.cut_one()
    finally:
        run.workload.stop()
    finish(run, "rotating-log", summary)


@pytest.mark.slow
@pytest.mark.deadline(120 + 12 * LONG_CUTS)
@pytest.mark.parametrize(("storage", "state_machine"), PAIRS)
def test_power_cuts_long(
    power_cluster: ClusterFactory,
    summary: Callable[[str], None],
    storage: str,
    state_machine: str,
) -> None:
    compacts = state_machine != "memory"
    c = power_cluster(
        3,
        settings={**(COMPACTING if compacts else NO_COMPACTION), **plugins(storage, state_machine)},
    )
    run = start_load(c, seed=40 + PAIRS.index((storage, state_machine)))
    try:
        for _ in range(LONG_CUTS):
            roll = run.rng.random()
            if roll < 0.1:
                run.cut_all()
            elif compacts and roll < 0.25:
                run.cut_at_snapshot(run.rng.choice(sorted(c.nodes)))
            elif compacts and roll < 0.4:
                run.cut_during_install()
            else:
                run.cut_one()
    finally:
        run.workload.stop()
    finish(run, f"long {storage}/{state_machine}", summary)
