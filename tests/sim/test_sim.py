"""The deterministic cluster simulation, over many seeds.

CI runs ``--sim-seeds`` seeds (default 300; ``--sim-first`` moves the range);
ask for more with ``pytest tests/sim --sim-seeds=5000``, and for fifty runs
five times as long with ``pytest -m slow tests/sim``. A failing seed prints the
one command that replays it.

Before the random seeds, each targeted schedule (``schedules.py``) runs over a
few seeds of its own: the sequences of faults that random draws almost never
make. They come first in this module, so that ``-x`` (the mutation check's
``python -m tests.mutation``) stops at them when they catch a broken core.

Besides the seeds, a few tests give the invariants a broken lease keeper or
Applier and check that a run catches it: invariants that never fire prove
nothing.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import raftdb.kv.applier
from raftdb.kv.changes import Change, Lease
from raftdb.kv.expiry import LeaseClock
from raftdb.kv.state_machine import MemoryStateMachine

from .invariants import InvariantViolation
from .schedules import SCHEDULE_NAMES
from .simulator import SimConfig, SimResult, Simulation

#: Seeds each targeted schedule runs with (each draws its other settings and
#: which node plays which part of the sequence).
SCHEDULE_SEEDS = range(3)
#: Ticks of random faults after a targeted schedule's sequence.
SCHEDULE_ROUNDS = 300


def _seeds(config: pytest.Config) -> list[int]:
    one = config.getoption("--sim-seed")
    if one is not None:
        return [int(one)]
    first = int(config.getoption("--sim-first"))
    return list(range(first, first + int(config.getoption("--sim-seeds"))))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "sim_seed" in metafunc.fixturenames:
        metafunc.parametrize("sim_seed", _seeds(metafunc.config))


@contextmanager
def _replayable(run: str, replay: str) -> Iterator[None]:
    """A violation fails with its message and the replay command; anything else
    (an error inside raftdb) keeps its traceback and gains the command."""
    try:
        yield
    except InvariantViolation as e:
        pytest.fail(f"{run}: {e}\nreplay: {replay}", pytrace=False)
    except Exception as e:
        e.add_note(f"{run}\nreplay: {replay}")
        raise


def targeted(schedule: str, seed: int) -> SimConfig:
    """The run of targeted ``schedule`` with ``seed``: its settings drawn from the
    seed, then those the schedule needs, and a shorter random phase after it."""
    cfg = SimConfig.from_seed(seed)
    cfg.schedule = None
    cfg.with_schedule(schedule)
    cfg.rounds = SCHEDULE_ROUNDS
    return cfg


@pytest.mark.parametrize(
    ("schedule", "variant"),
    [(name, seed) for name in SCHEDULE_NAMES for seed in SCHEDULE_SEEDS],
    ids=[f"{name}-{seed}" for name in SCHEDULE_NAMES for seed in SCHEDULE_SEEDS],
)
def test_targeted_schedule(schedule: str, variant: int) -> None:
    """A targeted schedule's sequence, then random faults: a correct core survives it."""
    replay = (
        f".venv/bin/pytest 'tests/sim/test_sim.py::test_targeted_schedule[{schedule}-{variant}]'"
    )
    with _replayable(f"schedule {schedule} (seed {variant})", replay):
        result = Simulation(targeted(schedule, variant)).run()
    assert result.faults.get(f"schedule-{schedule}") == 1
    assert result.linearizable


@pytest.fixture
def sim_summary(request: pytest.FixtureRequest) -> Path | None:
    """Where ``--sim-summary`` asks each run's figures to be appended, if anywhere."""
    path = request.config.getoption("--sim-summary")
    return None if path is None else Path(path)


def test_simulation(sim_seed: int, sim_summary: Path | None) -> None:
    replay = f".venv/bin/pytest tests/sim/test_sim.py --sim-seed={sim_seed} -x"
    cfg = SimConfig.from_seed(sim_seed)
    start = time.perf_counter()
    with _replayable(f"seed {sim_seed}", replay):
        result = Simulation(cfg).run()
    assert result.linearizable, f"seed {sim_seed}: linearizability check ran out of budget"
    if sim_summary is not None:
        figures = {
            "seed": sim_seed,
            "schedule": cfg.schedule,
            "nodes": cfg.nodes,
            "ops": result.ops,
            "elections": result.elections,
            "committed": result.committed,
            "faults": result.faults,
            "seconds": round(time.perf_counter() - start, 3),
        }
        with sim_summary.open("a") as f:
            f.write(json.dumps(figures) + "\n")


@pytest.mark.slow
@pytest.mark.parametrize("long_seed", range(1_000_000, 1_000_050))
def test_long_simulation(long_seed: int) -> None:
    """Fifty runs five times as long (``pytest -m slow tests/sim``)."""
    cfg = SimConfig.from_seed(long_seed)
    cfg.rounds = 5000
    replay = f".venv/bin/pytest -m slow 'tests/sim/test_sim.py::test_long_simulation[{long_seed}]'"
    with _replayable(f"seed {long_seed} (5000 rounds)", replay):
        result = Simulation(cfg).run()
    assert result.linearizable


def _runs(seeds: Iterable[int]) -> list[SimResult]:
    return [Simulation(SimConfig.from_seed(seed)).run() for seed in seeds]


def test_the_runs_reach_what_the_invariants_judge() -> None:
    """A few seeds do every thing the invariants are about: transactions and
    bank reads commit, retries are answered from the session, leases expire
    (also after the heal, within the bound), are revoked, and are kept alive
    across leader changes."""
    results = _runs((8, 11))
    total: dict[str, int] = {}
    for r in results:
        for name, n in {"txns": r.txns, "bank_reads": r.bank_reads, **r.leases}.items():
            total[name] = total.get(name, 0) + n
        total["duplicates"] = total.get("duplicates", 0) + r.duplicates
    for name in (
        "txns",
        "bank_reads",
        "duplicates",
        "expired",
        "revoked",
        "expired_after_heal",
        "leader_changes_survived",
    ):
        assert total[name] > 0, f"no {name} in seeds 8 and 11: {total}"


def _caught(seeds: Iterable[int]) -> str:
    """The first violation a run over ``seeds`` finds."""
    for seed in seeds:
        try:
            Simulation(SimConfig.from_seed(seed)).run()
        except InvariantViolation as e:
            return str(e)
    pytest.fail("no seed caught the broken component")


def _violations(seeds: Iterable[int]) -> list[str]:
    """Every violation a run over ``seeds`` finds, one per failing seed."""
    found = []
    for seed in seeds:
        try:
            Simulation(SimConfig.from_seed(seed)).run()
        except InvariantViolation as e:
            found.append(str(e))
    return found


def test_a_leader_that_expires_leases_at_once_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    become_leader = LeaseClock.become_leader

    def no_fresh_ttl(self: LeaseClock, now: float, leases: Iterable[Lease]) -> None:
        become_leader(self, now - 1000.0, leases)  # as if every TTL had run out

    monkeypatch.setattr(LeaseClock, "become_leader", no_fresh_ttl)
    assert "after it took over" in _caught(range(20))


def test_an_expiry_that_ignores_a_keepalive_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    # The Applier's check "renewed since the expiry was proposed" never runs.
    monkeypatch.setattr(raftdb.kv.applier, "_EXPIRE", -1)
    assert "was renewed at" in _caught(range(20))


def test_a_lease_keeper_that_misses_renewals_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LeaseClock, "renewed", lambda self, lease, now: None)
    # Some runs end with a lease that never expires ("no recovery"); the lease
    # clock's own check must name the missed renewal in others.
    assert any("lease clock names lease" in v for v in _violations(range(20)))


def test_a_watch_history_with_a_gap_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    history = MemoryStateMachine.history

    def gap(self: MemoryStateMachine, after: int, limit: int) -> tuple[int, list[Change]]:
        floor, changes = history(self, after, limit)
        return floor, changes[: len(changes) // 2] + changes[len(changes) // 2 + 1 :]

    monkeypatch.setattr(MemoryStateMachine, "history", gap)
    assert "watch history" in _caught(range(20))
