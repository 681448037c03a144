"""The soak's power cuts: refused without a cluster that can cut, and a short soak with them.

A power cut is ``kill -9`` plus the loss of what was not made durable; a cluster
whose nodes are not on power-loss filesystems cannot do the second half, so the
nemesis must refuse the fault, not quietly inject a kill. With FUSE, a short soak
draws only power cuts (one node, then all but the spared one) and must pass
every end check: acknowledged writes kept, convergence, linearizability, the
offline log checks, nothing left mounted or running.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from tests.chaos.cluster import ChaosCluster
from tests.chaos.nemesis import Nemesis, NemesisError
from tests.powerloss.cluster import PowerCluster
from tests.powerloss.mount import require_fuse
from tests.soak.leaks import leftovers
from tests.soak.run import SPARED, run_soak
from tests.soak.samples import read_samples


@pytest.mark.parametrize("kind", ["powercut", "powercut_all"])
def test_a_power_cut_needs_a_cluster_that_can_cut(tmp_path: Path, kind: str) -> None:
    c = ChaosCluster(tmp_path, size=3)
    try:
        with pytest.raises(NemesisError, match=rf"'{kind}' fault needs a cluster that can cut"):
            Nemesis(c, random.Random(1), ("kill", kind))
        # Called directly, the fault is refused the same way, before touching a node.
        nemesis = Nemesis(c, random.Random(1), ("kill",))
        with pytest.raises(NemesisError, match="ChaosCluster cannot"):
            getattr(nemesis, f"_{kind}")()
        assert not nemesis.counts
        assert all(n.proc is None for n in c.nodes.values())
    finally:
        c.close()


def test_an_unknown_fault_is_refused(tmp_path: Path) -> None:
    c = ChaosCluster(tmp_path, size=1)
    try:
        with pytest.raises(NemesisError, match="no such fault: 'powerkill'"):
            Nemesis(c, random.Random(1), ("powerkill",))
    finally:
        c.close()


def test_a_wiped_node_stays_wiped_across_a_cut(tmp_path: Path) -> None:
    """The ``member`` fault's wipe is a new, blank disk: a later cut must not bring
    the old directory back (on a strict filesystem an unsynced ``rm -rf`` would)."""
    require_fuse()
    c = PowerCluster(tmp_path, size=1)
    try:
        data = c.nodes[1].data_dir
        data.mkdir()
        with (data / "log").open("wb") as f:
            f.write(b"old")
            os.fsync(f.fileno())
        for directory in (data, data.parent):
            fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        c.wipe(1)
        c.power_cut([1])
        assert not data.exists()
    finally:
        c.close()
    assert leftovers(tmp_path, [], []) == []


@pytest.mark.deadline(90)
def test_a_short_soak_with_power_cuts(tmp_path: Path) -> None:
    require_fuse()
    lines: list[str] = []
    result = run_soak(
        tmp_path,
        seconds=10.0,
        sample_seconds=3.0,
        rate=10.0,
        seed=7,
        warmup=3.0,
        faults=("powercut", "powercut_all"),
        log=lines.append,
    )
    assert result.ok, result.problems
    faults = result.report.faults
    cuts = faults["powercut"] + faults["powercut_all"]
    assert cuts >= 1, faults
    assert set(faults) <= {"powercut", "powercut_all"}
    assert result.report.ledger["ok"] > 0  # acknowledged writes, every one found again
    assert result.report.ops["checked"] > 0  # and a linearizable history
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    # The node samples are raftdb's processes; the filesystem daemons are apart.
    samples = read_samples(run / "samples.csv")
    daemons = read_samples(run / "daemons.csv")
    assert {s.node for s in samples} == {s.node for s in daemons} == {1, 2, 3}
    assert not {s.pid for s in samples} & {s.pid for s in daemons}
    (witness,) = SPARED
    assert len({s.pid for s in samples if s.node == witness}) == 1
    # Every victim was restarted: a new process of a node other than the spared one.
    assert max(s.segment for s in samples if s.node != witness) >= 2
    summary = json.loads((run / "summary.json").read_text())
    assert summary["ok"] is True
    assert summary["leaks"] == []
    power = summary["power"]
    assert power["fs_mode"] == "strict"
    assert power["cuts"] == cuts
    assert set(power["dropped"]) == {"bytes_dropped", "names_reverted"}
    # The filesystems counted the cuts themselves: one per node cut, none of node 1.
    node_cuts = faults["powercut"] + 2 * faults["powercut_all"]
    per_node = {int(i): fs["cuts"] for i, fs in power["filesystems"].items()}
    assert per_node[witness] == 0
    assert sum(per_node.values()) == node_cuts
    assert (
        sum(fs["bytes_dropped"] for fs in power["filesystems"].values())
        == (power["dropped"]["bytes_dropped"])
    )
    assert set(power["daemons"]) == {"1", "2", "3"}
    assert f"{cuts} power cuts (strict) dropped" in lines[-1]
    assert lines[-1].endswith("PASS")
