"""``raftdb snapshot restore`` and ``raftdb recover``, in process (offline commands:
no cluster needed). The end-to-end drills with real servers are in
tests/integration/test_backup_restore.py."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from raftdb.cli import main
from raftdb.node.identity import read_cluster_id
from raftdb.plugins import open_state_machine
from tests.node.rebuild_data import NEW, OLD, log_entries, member_dir, snapshot_file


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("RAFTDB_"):
            monkeypatch.delenv(name)


def _restore(backup: Path, node_id: int, data_dir: Path, *extra: str) -> int:
    return main(
        [
            "snapshot",
            "restore",
            str(backup),
            "--id",
            str(node_id),
            "--cluster",
            ",".join(NEW),
            "--data-dir",
            str(data_dir),
            *extra,
        ]
    )


def test_restore_prints_what_it_built(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    backup = snapshot_file(tmp_path, keys=30)
    assert _restore(backup, 2, tmp_path / "m2") == 0
    out, err = capsys.readouterr()
    assert "restored" in out
    assert "31" in out  # keys: 30 + the leased and session keys - the deleted one
    assert "restoring backup.snap" in err  # the progress bar
    assert f"--data-dir {tmp_path / 'm2'}" in err  # how to start it
    assert _restore(backup, 3, tmp_path / "m3", "-w", "json") == 0
    record = json.loads(capsys.readouterr().out)
    assert record["id"] == 3
    assert record["keys"] == 31
    assert record["leases"] == 1
    assert record["members"] == [{"id": i, "peer_url": u} for i, u in enumerate(NEW, 1)]
    assert (
        record["cluster_id"] == read_cluster_id(tmp_path / "m3") == read_cluster_id(tmp_path / "m2")
    )
    assert record["bytes"] == backup.stat().st_size


def test_restore_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    backup = snapshot_file(tmp_path, keys=5)
    assert _restore(backup, 1, tmp_path / "m1") == 0
    capsys.readouterr()
    assert _restore(backup, 1, tmp_path / "m1") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("raftdb: snapshot restore: data directory")
    assert "is not empty" in err[-1]
    broken = tmp_path / "broken.snap"
    broken.write_bytes(b"not a snapshot at all")
    assert _restore(broken, 1, tmp_path / "m9") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"raftdb: snapshot restore: {broken} is not a whole raftdb snapshot: " + (
        "not a raftdb snapshot (bad magic)"
    )
    assert _restore(backup, 4, tmp_path / "m4") == 2  # id beyond the cluster list
    line = capsys.readouterr().err.strip()
    assert line.startswith("raftdb: ")
    assert "'id'" in line
    assert "\n" not in line
    assert not (tmp_path / "m4").exists()
    assert not (tmp_path / "m9").exists()


def _recover(data: Path, *extra: str) -> int:
    return main(
        ["recover", "--id", "1", "--cluster", ",".join(OLD), "--data-dir", str(data), *extra]
    )


def test_recover_shows_its_plan_and_needs_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entries = log_entries(40)
    data = member_dir(tmp_path, entries, applied=len(entries) - 10, commit=len(entries) - 4)
    assert _recover(data) == 2
    out, err = capsys.readouterr()
    assert "recovery plan" in out
    assert "entries past the commit index" in out
    assert "--force-new-cluster" in err
    sm = open_state_machine("leveldb", data / "state")
    assert sm.members() == dict(enumerate(OLD, 1))  # nothing changed
    sm.close()

    assert _recover(data, "--force-new-cluster", "-w", "json") == 0
    record = json.loads(capsys.readouterr().out)
    assert record["done"] is True
    assert record["entries_to_apply"] == 10
    assert record["entries_past_commit"] == 4
    assert record["new_index"] == len(entries) + 1
    assert record["cluster_id"] == read_cluster_id(data)
    sm = open_state_machine("leveldb", data / "state")
    assert sm.members() == {1: OLD[0]}
    sm.close()


def test_recover_refuses_a_directory_without_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _recover(tmp_path / "nowhere", "--force-new-cluster") == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("raftdb: recover: ")
    assert "holds no member's data" in err
    assert "\n" not in err
