"""A transaction whose node caught up through a snapshot before applying it.

The 75-minute soak with power cuts (docs/reliability.md) found an audit, a
read-only transaction sent without an ``Idempotency-Key``, answered
``succeeded`` with no results. Its node (a follower) had forwarded it; the
leader committed it while the follower heard no appends; the follower then
installed a snapshot that already held it, so it never applied that entry
itself, and its second proposal of the request was answered from the node's
session, which keeps no reads.

Here the follower drops the leader's appends (heartbeats and the snapshot
still arrive) while its transaction commits and the leader compacts past it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

from raftdb.kv.txn import CmpOp, Compare, Target, Txn, TxnOp, TxnOpKind
from raftdb.node import Node
from raftdb.node.handle import TxnAnswer
from raftdb.raft import Message, MessageType

from .cluster import LocalCluster, eventually

ACCOUNTS = [b"acct/%d" % i for i in range(4)]


def _deaf_to_appends(node: Node) -> Callable[[], None]:
    """Make ``node`` drop every append from its leader; returns what undoes it."""
    step = node.on_messages

    def without_appends(messages: list[Message]) -> None:
        step([m for m in messages if m.type != MessageType.APP])

    node.on_messages = without_appends  # type: ignore[method-assign]
    return lambda: setattr(node, "on_messages", step)


async def _through_a_snapshot(c: LocalCluster, txn: Txn) -> TxnAnswer:
    """Send ``txn`` to a follower that catches up through a snapshot holding it,
    and return its answer."""
    await eventually(lambda: c.leader() is not None, "a leader")
    leader = c.leader()
    assert leader is not None
    for key in ACCOUNTS:
        await leader.put(key, b"100")
    follower = next(n for n in c.nodes.values() if n is not leader)
    await eventually(
        lambda: follower.status().applied_index >= leader.status().applied_index,
        "the follower to apply the accounts",
    )
    installed = leader.status().applied_index
    hear = _deaf_to_appends(follower)
    answer = asyncio.create_task(follower.txn(txn))
    # The leader commits the forwarded transaction with the other follower ...
    await eventually(lambda: leader.status().applied_index > installed, "the transaction to commit")
    at = leader.status().applied_index
    # ... and compacts its log past it (snapshot_entries=20, keep 0), so that
    # the follower can only learn of it from a snapshot (it may be sent while
    # the follower is still deaf: that is the same case).
    for n in range(60):
        await leader.put(b"filler", b"%d" % n)
    await eventually(lambda: leader.status().first_index > at, "the leader to compact")
    hear()
    return await answer


def test_a_read_only_transaction_is_answered_with_its_reads(tmp_path: Path) -> None:
    txn = Txn(success=tuple(TxnOp.get(key) for key in ACCOUNTS))
    got: list[TxnAnswer] = []

    async def body(c: LocalCluster) -> None:
        got.append(await _through_a_snapshot(c, txn))

    LocalCluster(tmp_path, 3, "memory", snapshot_entries=20, snapshot_keep_entries=0).run(body)
    (answer,) = got
    assert answer.succeeded
    assert not answer.duplicate
    assert answer.results is not None
    assert [r.kind for r in answer.results] == [TxnOpKind.GET] * len(ACCOUNTS)
    assert all(r.kv is not None and r.kv.value == b"100" for r in answer.results)


def test_a_transaction_that_wrote_is_answered_as_applied_once(tmp_path: Path) -> None:
    """Its writes are applied once and its results are lost: the answer says so
    (a duplicate's shape: the first copy's index and branch, no results)."""
    txn = Txn(
        compare=(Compare(ACCOUNTS[0], Target.VALUE, CmpOp.EQ, b"100"),),
        success=(TxnOp.put(ACCOUNTS[0], b"90"), TxnOp.put(ACCOUNTS[1], b"110")),
    )
    got: list[TxnAnswer] = []

    async def body(c: LocalCluster) -> None:
        answer = await _through_a_snapshot(c, txn)
        got.append(answer)
        for node in c.nodes.values():
            kv, _ = await node.get(ACCOUNTS[1])
            assert kv is not None
            assert kv.value == b"110"
            assert kv.mod_index == answer.index  # the first copy's: applied once

    LocalCluster(tmp_path, 3, "memory", snapshot_entries=20, snapshot_keep_entries=0).run(body)
    (answer,) = got
    assert answer.succeeded
    assert answer.duplicate
    assert answer.results is None
