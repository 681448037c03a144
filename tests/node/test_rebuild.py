"""Offline data-directory surgery (raftdb.node.rebuild): restore a member from a
snapshot file, recover a survivor as a cluster of one, and start nodes on the result."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from raftdb.config import NodeConfig
from raftdb.kv.snapshot import SnapshotReader
from raftdb.node.identity import derive_cluster_id, read_cluster_id
from raftdb.node.rebuild import RebuildError, plan_recover, recover_member, restore_member
from raftdb.plugins import open_state_machine, open_storage
from raftdb.raft import ConfState, HardState
from raftdb.state_machine import StateMachine
from raftdb.storage.protocol import Storage

from .cluster import LocalCluster, eventually
from .rebuild_data import NEW, OLD, log_entries, member_dir, snapshot_file


def _config(node_id: int, data_dir: Path, cluster: list[str] = NEW) -> NodeConfig:
    return NodeConfig(id=node_id, cluster=cluster, data_dir=data_dir)


def _open(data_dir: Path) -> tuple[Storage, StateMachine]:
    return open_storage("leveldb", data_dir / "log"), open_state_machine(
        "leveldb", data_dir / "state"
    )


def _content(sm: StateMachine) -> tuple[Any, ...]:
    """Everything of a snapshot but its header."""
    reader = SnapshotReader(iter(sm.snapshot()))
    content = (
        [kv for batch in reader.kv_batches() for kv in batch],
        [s.to_list() for batch in reader.session_batches() for s in batch],
        [lease.to_list() for batch in reader.lease_batches() for lease in batch],
        [c.to_list() for batch in reader.history_batches() for c in batch],
        reader.history_floor,
    )
    reader.finish()
    return content


def _chunks(path: Path) -> Iterator[bytes]:
    yield path.read_bytes()


def test_restore_builds_identical_members_of_a_new_cluster(tmp_path: Path) -> None:
    backup = snapshot_file(tmp_path)
    original = SnapshotReader(_chunks(backup)).info
    source = open_state_machine("leveldb", tmp_path / "member" / "state")
    with closing(source):
        expected = _content(source)
    streams = []
    ids = set()
    for node_id in (1, 2, 3):
        data_dir = tmp_path / f"new-{node_id}"
        done = restore_member(backup, _config(node_id, data_dir))
        assert (done.index, done.term, done.keys, done.leases, done.sessions) == (
            original.index,
            original.term,
            200 + 2 - 1,
            1,
            1,
        )
        assert done.members == dict(enumerate(NEW, start=1))
        storage, sm = _open(data_dir)
        with closing(storage), closing(sm):
            hard_state, conf = storage.initial_state()
            assert hard_state == HardState(original.term, 0, original.index)
            assert conf == ConfState((1, 2, 3))
            assert storage.snapshot().metadata.index == original.index
            assert storage.last_index() == original.index
            assert sm.applied_index == original.index
            assert sm.members() == dict(enumerate(NEW, start=1))
            assert sm.conf_state() == ConfState((1, 2, 3))
            assert _content(sm) == expected  # only the header changed
            kv = sm.get(b"k00199")
            assert kv is not None
            assert kv.value == b"v199"
            assert sm.get(b"k00000") is None
            lease = sm.lease(4)
            assert lease is not None
            assert set(lease.keys) == {b"leased"}
            streams.append(b"".join(sm.snapshot()))
        ids.add(read_cluster_id(data_dir))
        assert not list(tmp_path.glob(".new-*"))  # no staging directory left
    # Restored separately, the members agree byte for byte, and on the identity.
    assert streams[0] == streams[1] == streams[2]
    assert ids == {derive_cluster_id("restore", done.sha256, *NEW)}
    other = restore_member(backup, _config(1, tmp_path / "other", NEW[:2]))
    assert other.cluster_id != done.cluster_id


def test_restore_refuses_a_used_data_dir_and_a_damaged_file(tmp_path: Path) -> None:
    backup = snapshot_file(tmp_path, keys=20)
    used = tmp_path / "used"
    used.mkdir()
    (used / "something").write_text("x")
    with pytest.raises(RebuildError, match="is not empty"):
        restore_member(backup, _config(1, used))
    assert [p.name for p in used.iterdir()] == ["something"]
    damaged = tmp_path / "damaged.snap"
    data = bytearray(backup.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    target = tmp_path / "target"
    with pytest.raises(RebuildError, match="not a whole raftdb snapshot"):
        restore_member(damaged, _config(1, target))
    truncated = tmp_path / "truncated.snap"
    truncated.write_bytes(backup.read_bytes()[:-3])
    with pytest.raises(RebuildError, match="truncated"):
        restore_member(truncated, _config(1, target))
    with pytest.raises(RebuildError, match="cannot read"):
        restore_member(tmp_path / "missing.snap", _config(1, target))
    assert not target.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    # What a crashed restore left behind is removed (its process is gone).
    abandoned = tmp_path / ".target.restore-999999999"
    (abandoned / "state").mkdir(parents=True)
    assert restore_member(backup, _config(1, target)).keys == 20 + 2 - 1
    assert not abandoned.exists()
    # An existing empty directory is fine (a mount point made for it, say).
    empty = tmp_path / "empty"
    empty.mkdir()
    assert restore_member(backup, _config(2, empty)).keys == 20 + 2 - 1


def test_recover_applies_the_whole_log_and_keeps_onemember_dir(tmp_path: Path) -> None:
    entries = log_entries(300)
    last = len(entries)
    data = member_dir(tmp_path, entries, applied=last - 120, commit=last - 50)
    (data / "cluster-id").write_text("00112233445566aa\n")
    config = _config(2, data, OLD)
    plan = plan_recover(config)
    assert (plan.applied, plan.commit, plan.last_index) == (last - 120, last - 50, last)
    assert (plan.to_apply, plan.uncommitted, plan.new_index) == (120, 50, last + 1)
    assert plan.peer_url == OLD[1]
    assert plan.old_members == dict(enumerate(OLD, start=1))
    assert plan.old_cluster_id == "00112233445566aa"
    storage, sm = _open(data)  # plan_recover changed nothing
    with closing(storage), closing(sm):
        assert sm.applied_index == last - 120
        assert storage.initial_state()[0] == HardState(3, 1, last - 50)

    done = recover_member(config)
    assert done.cluster_id == read_cluster_id(data) != "00112233445566aa"
    storage, sm = _open(data)
    with closing(storage), closing(sm):
        hard_state, conf = storage.initial_state()
        assert hard_state == HardState(3, 0, last + 1)
        assert conf == ConfState((2,))
        assert storage.snapshot().metadata.index == storage.last_index() == last + 1
        assert sm.applied_index == last + 1
        assert sm.members() == {2: OLD[1]}
        assert sm.conf_state() == ConfState((2,))
        for k in range(1, 300):  # every entry of the log, even past the commit index
            kv = sm.get(b"k%05d" % k)
            assert kv is not None
            assert kv.value == b"v%d" % k
        assert sm.get(b"k00000") is None

    # Running it again (as after a crash midway) moves one index further, no harm done.
    again = recover_member(config)
    assert again.plan.to_apply == 0
    assert again.plan.new_index == last + 2


def test_recover_refuses_a_running_node_and_data_it_cannot_use(tmp_path: Path) -> None:
    with pytest.raises(RebuildError, match="holds no member's data"):
        plan_recover(_config(1, tmp_path / "nothing", OLD))
    entries = log_entries(10)
    data = member_dir(tmp_path, entries, len(entries), len(entries))
    with pytest.raises(RebuildError, match="node 4 is not a member .* is --id right"):
        plan_recover(_config(4, data, [*OLD, "http://127.0.0.1:4"]))
    storage = open_storage("leveldb", data / "log")  # as a running node holds it
    with closing(storage), pytest.raises(RebuildError, match="in use"):
        recover_member(_config(1, data, OLD))
    storage, sm = _open(data)
    with closing(storage), closing(sm):
        assert sm.members() == dict(enumerate(OLD, start=1))  # untouched


def test_restored_members_start_as_one_cluster_that_takes_writes(tmp_path: Path) -> None:
    backup = snapshot_file(tmp_path, keys=50)
    cluster = LocalCluster(tmp_path / "new", 3)
    for node_id in (1, 2, 3):
        restore_member(backup, cluster.config(node_id))

    async def body(c: LocalCluster) -> None:
        for node in c.nodes.values():
            members = {m.id: m.peer_url for m in node.status().members}
            assert members == dict(enumerate(c.urls, start=1))
            kv, _ = await node.get(b"k00049")
            assert kv is not None
            assert kv.value == b"v49"
        result = await c.nodes[2].put(b"after", b"restore")
        assert result.index > SnapshotReader(_chunks(backup)).info.index
        for node in c.nodes.values():
            kv, _ = await node.get(b"after")
            assert kv is not None

    cluster.run(body)


def test_a_recovered_member_serves_alone_and_takes_members_back(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, 3, snapshot_entries=40, snapshot_keep_entries=10)

    async def body(c: LocalCluster) -> None:
        for k in range(100):
            await c.nodes[1 + k % 3].put(b"k%03d" % k, b"v%d" % k)
        await eventually(
            lambda: c.nodes[3].status().applied_index >= c.nodes[1].status().commit_index,
            "node 3 to apply everything",
        )
        await c.stop_all()
        c.wipe(1)
        c.wipe(2)
        recover_member(c.config(3))
        node = await c.start(3)
        await eventually(node.is_ready, "the recovered member to lead alone")
        for k in range(100):
            kv, _ = await node.get(b"k%03d" % k)
            assert kv is not None
            assert kv.value == b"v%d" % k
        await node.put(b"alone", b"yes")
        await node.add_member(1, c.urls[0])
        joined = await c.start(1, join=True)
        await eventually(joined.is_ready, "the new member to catch up")
        kv, _ = await joined.get(b"k050")
        assert kv is not None
        assert kv.value == b"v50"
        await joined.put(b"together", b"yes")

    cluster.run(body)
