"""The deterministic cluster simulation, over many seeds.

CI runs ``--sim-seeds`` seeds (default 300); ask for more with
``pytest tests/sim --sim-seeds=5000``. A failing seed prints the one command
that replays it.
"""

from __future__ import annotations

import pytest

from .invariants import InvariantViolation
from .simulator import SimConfig, Simulation


def _seeds(config: pytest.Config) -> list[int]:
    one = config.getoption("--sim-seed")
    if one is not None:
        return [int(one)]
    return list(range(int(config.getoption("--sim-seeds"))))


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "sim_seed" in metafunc.fixturenames:
        metafunc.parametrize("sim_seed", _seeds(metafunc.config))


def test_simulation(sim_seed: int) -> None:
    sim = Simulation(SimConfig.from_seed(sim_seed))
    try:
        result = sim.run()
    except InvariantViolation as e:
        pytest.fail(
            f"seed {sim_seed}: {e}\n"
            f"replay: .venv/bin/pytest tests/sim/test_sim.py --sim-seed={sim_seed} -x",
            pytrace=False,
        )
    assert result.linearizable, f"seed {sim_seed}: linearizability check ran out of budget"


@pytest.mark.slow
@pytest.mark.parametrize("long_seed", range(1_000_000, 1_000_050))
def test_long_simulation(long_seed: int) -> None:
    """Fifty runs five times as long (``pytest -m slow tests/sim``)."""
    cfg = SimConfig.from_seed(long_seed)
    cfg.rounds = 5000
    try:
        result = Simulation(cfg).run()
    except InvariantViolation as e:
        pytest.fail(f"seed {long_seed} (5000 rounds): {e}", pytrace=False)
    assert result.linearizable
