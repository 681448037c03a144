"""Seeded random byte flips in a stopped node's files, judged offline.

Each trial flips 1..``BITROT_FLIPS`` bytes of one random file of a copy of a
pristine data directory (``tests.bitrot.datadir``), opens it as a node does
at start and reads back all it would serve and replicate
(``tests.bitrot.dump``). It must be refused naming the damaged directory,
refused at the first read of the damaged keys, or be equal to the pristine
copy (``tests.bitrot.trials``). A failure prints the seed and the trial:
``BITROT_SEED=S BITROT_FIRST=T BITROT_TRIALS=1`` replays that one trial.

``make test`` runs :data:`BOUNDED` trials per combination; ``make chaos``
(marker ``slow``) runs ``BITROT_TRIALS`` (default 2000) with a fresh seed.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.bitrot.trials import run_trials

BOUNDED = 80


def _trials(pristine: tuple[Path, str, str], tmp_path: Path, seed: int, trials: int) -> str:
    data, storage, state_machine = pristine
    first = int(os.environ.get("BITROT_FIRST", "0"))
    most = int(os.environ.get("BITROT_FLIPS", "8"))
    run = run_trials(
        data,
        storage,
        state_machine,
        seed=seed,
        trials=trials,
        most_flips=most,
        work=tmp_path,
        first_trial=first,
    )
    line = run.line(f"{storage}/{state_machine} seed={seed}")
    assert not run.problems, f"{line}\n" + "\n".join(run.problems[:10])
    assert run.trials == trials
    return line


def test_random_flips_are_detected_or_harmless(
    pristine: tuple[Path, str, str], tmp_path: Path, summary: Callable[[str], None]
) -> None:
    seed = int(os.environ.get("BITROT_SEED", "1"))
    summary(_trials(pristine, tmp_path, seed, int(os.environ.get("BITROT_TRIALS", BOUNDED))))


@pytest.mark.slow
@pytest.mark.deadline(3600)
def test_random_flips_long(
    pristine: tuple[Path, str, str], tmp_path: Path, summary: Callable[[str], None]
) -> None:
    seed = int(os.environ.get("BITROT_SEED") or random.randrange(1, 1 << 30))
    summary(_trials(pristine, tmp_path, seed, int(os.environ.get("BITROT_TRIALS", "2000"))))
