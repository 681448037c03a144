"""The cluster identity file and its derivation (raftdb/node/identity.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftdb.node.identity import (
    CLUSTER_ID_FILE,
    ClusterIdError,
    derive_cluster_id,
    read_cluster_id,
    write_cluster_id,
)


def test_derivation_is_stable_and_separates_its_parts() -> None:
    a = derive_cluster_id("raftdb", "http://127.0.0.1:1", "http://127.0.0.1:2")
    assert a == derive_cluster_id(b"raftdb", "http://127.0.0.1:1", b"http://127.0.0.1:2")
    assert len(a) == 16
    assert int(a, 16) >= 0
    assert derive_cluster_id("ab", "c") != derive_cluster_id("a", "bc")
    assert derive_cluster_id("raftdb", "http://127.0.0.1:2", "http://127.0.0.1:1") != a


def test_written_id_reads_back_and_absent_is_none(tmp_path: Path) -> None:
    assert read_cluster_id(tmp_path) is None
    write_cluster_id(tmp_path / "d", "0123456789abcdef")
    assert read_cluster_id(tmp_path / "d") == "0123456789abcdef"
    write_cluster_id(tmp_path / "d", "fedcba9876543210")
    assert read_cluster_id(tmp_path / "d") == "fedcba9876543210"
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [CLUSTER_ID_FILE]


@pytest.mark.parametrize("text", [b"xyz", b"0123456789ABCDEF", b"\xff\xfe", b""])
def test_a_damaged_file_is_an_error(tmp_path: Path, text: bytes) -> None:
    (tmp_path / CLUSTER_ID_FILE).write_bytes(text)
    with pytest.raises(ClusterIdError, match="damaged"):
        read_cluster_id(tmp_path)


def test_only_an_id_can_be_written(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="16 lowercase hex"):
        write_cluster_id(tmp_path, "not-an-id")
