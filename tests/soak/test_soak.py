"""A tiny soak end to end: the harness samples, plots, checks and cleans up.

Ten seconds of load with quick faults only (pause, partition, kill),
sampled every 3 s; ``make soak`` runs the real one for hours.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tests.soak.run import SPARED, run_soak
from tests.soak.samples import read_samples


@pytest.mark.deadline(60)
def test_a_short_soak_records_plots_and_checks(tmp_path: Path) -> None:
    lines: list[str] = []
    result = run_soak(
        tmp_path,
        seconds=10.0,
        sample_seconds=3.0,
        rate=10.0,
        seed=5,
        warmup=3.0,
        faults=("pause", "partition", "kill"),
        log=lines.append,
    )
    assert result.ok, result.problems
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    samples = read_samples(run / "samples.csv")
    assert [repr(s) for s in samples] == [repr(s) for s in result.samples]  # NaN != NaN
    assert {s.node for s in samples} == {1, 2, 3}
    # The spared node is one process throughout, sampled at every interval.
    (witness,) = SPARED
    mine = [s for s in samples if s.node == witness]
    assert len({s.pid for s in mine}) == 1
    assert len(mine) >= 4
    assert all(s.rss_mib > 10 and s.fds > 5 and s.threads >= 1 for s in mine)
    assert any(not math.isnan(s.lag_p99_s) and s.lag_max_s >= 0 for s in mine)
    # Its figures were fitted (and found flat), the run's faults counted.
    judged = {g.figure for g in result.growth if g.node == witness}
    assert judged == {"rss_mib", "fds", "threads"}
    assert not [g for g in result.growth if g.grows]
    assert result.report.ops["checked"] > 0
    assert (run / "rss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["ok"] is True
    assert summary["leaks"] == []
    assert summary["nodes"][str(witness)]["processes"] == 1
    assert lines[-1].startswith("soak seed=5")
    assert lines[-1].endswith("PASS")
