"""The node's cluster identity: written at bootstrap, adopted by a joiner, refused by old data.

In-process nodes on real transports (``tests.node.cluster.LocalCluster``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from raftdb.codec import CorruptionError
from raftdb.node.identity import CLUSTER_ID_FILE, derive_cluster_id, read_cluster_id
from raftdb.node.identity_keeper import ClusterIdKeeper, bootstrap_cluster_id

from .cluster import LocalCluster, eventually


def test_a_bootstrapped_cluster_records_one_identity_and_a_joiner_adopts_it(
    tmp_path: Path,
) -> None:
    async def body(c: LocalCluster) -> None:
        expected = derive_cluster_id("raftdb", *c.urls)
        for node_id, node in c.nodes.items():
            assert read_cluster_id(tmp_path / f"node{node_id}") == expected
            assert node.status().cluster_id == expected
            assert f'raftdb_cluster_info{{cluster_id="{expected}"}} 1.0' in node.metrics_text()
        await c.nodes[1].put(b"k", b"v")
        new_id = c.add_url()
        await c.nodes[1].add_member(new_id, c.urls[new_id - 1], learner=True)
        joiner = await c.start(new_id, join=True)
        await eventually(joiner.is_ready, "the joiner to catch up")
        assert joiner.status().cluster_id == expected
        assert read_cluster_id(tmp_path / f"node{new_id}") == expected

    LocalCluster(tmp_path, 3).run(body)


def test_old_data_without_an_identity_is_refused_by_the_cluster(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Node 3's data directory as it was before identities: it must not take
    # part any more, and says why; the others go on.
    async def body(c: LocalCluster) -> None:
        await c.stop(3)
        (tmp_path / "node3" / CLUSTER_ID_FILE).unlink()
        caplog.set_level(logging.WARNING, logger="raftdb")
        old = await c.start(3)
        assert old.status().cluster_id is None
        await eventually(
            lambda: (
                "node 3: closing peer connection" in caplog.text
                and "and this node's data records no cluster id" in caplog.text
            ),
            "node 3's refusal",
        )
        before = old.status().commit_index
        await c.nodes[1].put(b"after", b"refusal")
        await eventually(lambda: c.nodes[2].status().applied_index > before, "the others to go on")
        assert old.status().commit_index == before
        assert not old.is_ready()

    LocalCluster(tmp_path, 3).run(body)


def test_a_cluster_from_before_identities_runs_as_before(tmp_path: Path) -> None:
    async def body(c: LocalCluster) -> None:
        for node_id in (1, 2, 3):
            await c.stop(node_id)
            (tmp_path / f"node{node_id}" / CLUSTER_ID_FILE).unlink()
        for node_id in (1, 2, 3):
            await c.start(node_id)
        await c.wait_ready()
        await c.nodes[1].put(b"k", b"v")
        assert all(n.status().cluster_id is None for n in c.nodes.values())
        # A member joining it adopts nothing and catches up as before.
        new_id = c.add_url()
        await c.nodes[1].add_member(new_id, c.urls[new_id - 1], learner=True)
        joiner = await c.start(new_id, join=True)
        await eventually(joiner.is_ready, "the joiner to catch up")
        assert joiner.status().cluster_id is None
        assert read_cluster_id(tmp_path / f"node{new_id}") is None

    LocalCluster(tmp_path, 3).run(body)


def test_a_damaged_identity_file_stops_the_start(tmp_path: Path) -> None:
    keeper = ClusterIdKeeper(tmp_path, 1)
    (tmp_path / CLUSTER_ID_FILE).write_text("not an id\n")
    with pytest.raises(CorruptionError, match="is damaged"):
        keeper.open(bootstrap=None, empty=None)


def test_the_keeper_bootstraps_adopts_once_and_only_while_empty(tmp_path: Path) -> None:
    token_id = bootstrap_cluster_id("t", ["http://a:1", "http://b:2"])
    assert token_id == derive_cluster_id("t", "http://a:1", "http://b:2")
    founder = ClusterIdKeeper(tmp_path / "f", 1)
    founder.open(bootstrap=token_id, empty=None)
    assert (founder.value, founder.adopter) == (token_id, None)
    assert read_cluster_id(tmp_path / "f") == token_id

    empty = [True]
    joiner = ClusterIdKeeper(tmp_path / "j", 2)
    joiner.open(bootstrap=None, empty=lambda: empty[0])
    adopt = joiner.adopter
    assert adopt is not None
    assert adopt(token_id) is True
    assert read_cluster_id(tmp_path / "j") == token_id
    assert (joiner.value, joiner.adopter) == (token_id, None)

    late = ClusterIdKeeper(tmp_path / "l", 3)
    late.open(bootstrap=None, empty=lambda: empty[0])
    empty[0] = False  # it took data from a member without an identity
    adopt = late.adopter
    assert adopt is not None
    assert adopt(token_id) is False
    assert (late.value, late.adopter) == (None, None)
    assert read_cluster_id(tmp_path / "l") is None

    # Restarted, a founder keeps its identity and adopts nothing.
    again = ClusterIdKeeper(tmp_path / "f", 1)
    again.open(bootstrap=None, empty=lambda: True)
    assert (again.value, again.adopter) == (token_id, None)
