"""Nemesis runs over real processes: faults while clients work, then every check.

CI runs each scenario once for :data:`CI_SECONDS` with a fixed seed. The
``slow`` runs (``make chaos``) run every scenario for ``CHAOS_SECONDS``
(default 120) with ``CHAOS_SEEDS`` seeds (default 5) each; replay one with
``CHAOS_SEED=<seed> pytest tests/chaos -m slow -k <scenario>``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from tests.chaos.conftest import ChaosFactory
from tests.chaos.runner import SCENARIOS, run_chaos

CI_SECONDS = float(os.environ.get("CHAOS_CI_SECONDS", "20"))
LONG_SECONDS = float(os.environ.get("CHAOS_SECONDS", "120"))
_ONE_SEED = os.environ.get("CHAOS_SEED")
LONG_SEEDS = (
    [int(_ONE_SEED)] if _ONE_SEED else list(range(1, int(os.environ.get("CHAOS_SEEDS", "5")) + 1))
)


@pytest.mark.deadline(CI_SECONDS + 150)
@pytest.mark.parametrize("name", ["crash", "partition", "slow", "membership", "tls"])
def test_chaos(name: str, chaos_cluster: ChaosFactory, summary: Callable[[str], None]) -> None:
    report = run_chaos(chaos_cluster, SCENARIOS[name], seed=1, seconds=CI_SECONDS, log=summary)
    assert report.ok, "\n".join(report.problems[:20])
    assert report.ops["ok"] > 100, report.summary()  # the cluster served through the faults
    assert sum(report.faults.values()) >= 3, report.summary()


@pytest.mark.slow
@pytest.mark.deadline(LONG_SECONDS + 300)
@pytest.mark.parametrize("seed", LONG_SEEDS)
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_chaos_long(
    name: str, seed: int, chaos_cluster: ChaosFactory, summary: Callable[[str], None]
) -> None:
    report = run_chaos(chaos_cluster, SCENARIOS[name], seed=seed, seconds=LONG_SECONDS, log=summary)
    assert report.ok, "\n".join(report.problems[:20])
