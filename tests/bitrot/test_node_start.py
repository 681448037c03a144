"""Real node starts on damaged directories: one line naming the damage, then exit.

The offline trials (``test_offline``) open the plugins the way a node does at
start; this checks, on a few of their damaged directories (the first trials
of seed 1 found at start, of different file kinds), that the real server
refuses them with exactly one ``raftdb: node 1 cannot start: ...`` line that
names the damaged directory, and exits non-zero without a traceback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.bitrot.dump import open_and_dump
from tests.bitrot.flips import file_kind
from tests.bitrot.trials import damage, judge
from tests.integration.harness import free_ports

# Damaged directories started per storage/state machine pair in make test;
# make chaos starts BITROT_STARTS (marker slow).
STARTS = 2


def _serve(data: Path, storage: str, state_machine: str) -> subprocess.CompletedProcess[bytes]:
    api, peer = free_ports(2)
    argv = [sys.executable, "-m", "raftdb.cli", "serve", "--id", "1", "--port", str(api)]
    argv += [
        "--cluster",
        f"http://127.0.0.1:{peer}",
        "--data-dir",
        str(data),
        "--host",
        "127.0.0.1",
    ]
    argv += ["--storage", storage, "--state-machine", state_machine, "--tick-ms", "20"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTDB_")}
    return subprocess.run(argv, capture_output=True, timeout=60, env=env)


def _refusals(
    pristine: tuple[Path, str, str], tmp_path: Path, wanted: int
) -> list[tuple[Path, str, Path]]:
    """The first ``wanted`` damaged directories of seed 1 refused at start, one
    per file kind: ``(data_dir, kind, damaged file)``."""
    data, storage, state_machine = pristine
    scratch = tmp_path / "expected"
    shutil.copytree(data, scratch)
    expected = open_and_dump(scratch, storage, state_machine)
    found: list[tuple[Path, str, Path]] = []
    kinds: set[str] = set()
    trial = 0
    while len(found) < wanted and trial < 500:
        probe, copy = tmp_path / f"probe-{trial}", tmp_path / f"start-{trial}"
        kind, path, _ = damage(data, probe, seed=1, trial=trial, most_flips=8)
        if kind not in kinds and judge(probe, storage, state_machine, expected, path) == "start":
            damage(data, copy, seed=1, trial=trial, most_flips=8)  # a fresh copy to start
            found.append((copy, kind, copy / path.relative_to(probe)))
            kinds.add(kind)
        shutil.rmtree(probe)
        trial += 1
    assert len(found) == wanted, f"only {len(found)} kinds refused in {trial} trials"
    return found


@pytest.mark.deadline(180)
def test_a_damaged_directory_is_refused_with_one_line(
    pristine: tuple[Path, str, str], tmp_path: Path
) -> None:
    _check_starts(pristine, tmp_path, STARTS)


@pytest.mark.slow
@pytest.mark.deadline(900)
def test_damaged_directories_of_every_kind_are_refused_with_one_line(
    pristine: tuple[Path, str, str], tmp_path: Path
) -> None:
    """More kinds (``BITROT_STARTS``, at most the kinds the pair's directory has
    that can be refused: its LOG text files never are)."""
    data = pristine[0]
    kinds = {file_kind(data, p) for p in data.rglob("*") if p.is_file() and p.stat().st_size}
    refusable = kinds - {"log/LOG", "log/LOG.old", "state/LOG", "state/LOG.old", "cluster-id"}
    _check_starts(pristine, tmp_path, min(int(os.environ.get("BITROT_STARTS", 6)), len(refusable)))


def _check_starts(pristine: tuple[Path, str, str], tmp_path: Path, wanted: int) -> None:
    _, storage, state_machine = pristine
    for data, kind, damaged in _refusals(pristine, tmp_path, wanted):
        done = _serve(data, storage, state_machine)
        output = done.stdout.decode() + done.stderr.decode()
        assert done.returncode != 0, f"{kind}: {output[-2000:]}"
        assert "Traceback" not in output, f"{kind}: {output[-3000:]}"
        lines = [line for line in output.splitlines() if "cannot start" in line]
        assert len(lines) == 1, f"{kind}: {output[-2000:]}"
        assert "raftdb: node 1 cannot start: " in lines[0], lines[0]
        named = str(data / damaged.relative_to(data).parts[0])
        assert named in lines[0], f"{kind}: {lines[0]}"
