"""``sync = false`` is loud: one WARNING line at start, and ``sync`` in the status."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.node.cluster import LocalCluster, eventually


def test_sync_off_warns_at_start_and_shows_in_status(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("WARNING", logger="raftdb.node")

    async def body(c: LocalCluster) -> None:
        await eventually(lambda: c.leader() is not None, "a leader")
        node = c.nodes[1]
        assert node.status().sync is False
        assert node.status().alarms == []

    LocalCluster(tmp_path, 1, "memory", sync=False).run(body)
    lines = [r.getMessage() for r in caplog.records if "sync = false" in r.getMessage()]
    assert len(lines) == 1, lines
    assert "two leaders" in lines[0]
    assert "power loss" in lines[0]
