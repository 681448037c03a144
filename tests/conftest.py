"""Suite-wide pytest options.

- ``--rewrite``: regenerate the expected output of scenario files in place
  (review the diff before committing).
- ``--sim-seeds=N``: how many seeds the deterministic simulation runs
  (default: 300, the CI budget); ``--sim-seed=S``: run only seed S (the
  one-line replay a failing seed prints).
"""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--rewrite",
        action="store_true",
        default=False,
        help="rewrite the expected output of scenario test files",
    )
    parser.addoption(
        "--sim-seeds",
        type=int,
        default=300,
        help="number of seeds for the deterministic cluster simulation",
    )
    parser.addoption(
        "--sim-seed",
        type=int,
        default=None,
        help="run the simulation for this one seed only (replay)",
    )
