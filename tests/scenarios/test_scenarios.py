"""Scenario (interaction) tests: every ``testdata/*.txt`` file run through InteractionEnv.

A file whose first lines contain ``# xfail: <reason>`` documents a known core
bug: its expected output is the *correct* behaviour, and the test is marked
``xfail(strict=True)`` so that it turns red once the bug is fixed (then drop
the marker). ``pytest --rewrite`` regenerates expected outputs in place, except
in xfail files, whose expectations are written by hand.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.scenarios.datadriven import run_file
from tests.scenarios.harness import InteractionEnv

TESTDATA = Path(__file__).parent / "testdata"


def _xfail_reason(path: Path) -> str | None:
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        if line.startswith("# xfail:"):
            return line.removeprefix("# xfail:").strip()
    return None


def _params() -> list[object]:
    params: list[object] = []
    for path in sorted(TESTDATA.glob("*.txt")):
        reason = _xfail_reason(path)
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        params.append(pytest.param(path, id=path.stem, marks=marks))
    return params


@pytest.mark.parametrize("path", _params())
def test_scenario(path: Path, request: pytest.FixtureRequest) -> None:
    rewrite = bool(request.config.getoption("--rewrite")) and _xfail_reason(path) is None
    env = InteractionEnv()
    result = run_file(path, env.handle, rewrite=rewrite)
    assert result.cases > 0, f"{path.name} has no test cases"
    if result.mismatches:
        mismatch = result.mismatches[0]
        pytest.fail(
            f"{mismatch.case.pos}: output of {mismatch.case.directive!r} differs "
            f"(run with --rewrite to accept):\n{mismatch.diff()}",
            pytrace=False,
        )
