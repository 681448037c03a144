"""``raftdb.node.leases``: the lease keeper's deadlines and the leader's expiries,
on a clock the test moves (``now`` is an argument: no sleeps, no real time)."""

from __future__ import annotations

import asyncio

from raftdb.kv.changes import Lease
from raftdb.kv.commands import Command, CommandStatus, KVResult
from raftdb.kv.expiry import DEFAULT_RETRY_S
from raftdb.node.errors import ServiceUnavailableError
from raftdb.node.leases import LeaseKeeper
from raftdb.node.metrics import NodeMetrics


class Proposals:
    """Stands for the node's write path: records the expiries proposed."""

    def __init__(self) -> None:
        self.made: list[tuple[int, int]] = []

    async def __call__(self, cmd: Command) -> KVResult:
        assert cmd.expect is not None
        self.made.append((cmd.lease, cmd.expect))
        return KVResult(0, CommandStatus.OK)


def keeper(
    leases: list[Lease], metrics: NodeMetrics | None = None
) -> tuple[LeaseKeeper, Proposals]:
    proposals = Proposals()
    return LeaseKeeper(leases=lambda: leases, write=proposals, metrics=metrics), proposals


async def settle() -> None:
    """Let the expiry tasks the keeper started run."""
    for _ in range(3):
        await asyncio.sleep(0)


def granted(index: int, ttl: int) -> tuple[Command, KVResult]:
    return Command.lease_grant(ttl), KVResult(index, CommandStatus.OK, lease=index, ttl=ttl)


def test_a_follower_tracks_deadlines_but_never_proposes() -> None:
    async def body() -> None:
        k, proposals = keeper([])
        k.applied(*granted(5, 10), now=100.0)
        assert k.remaining(5, 104.0) == 6.0
        for now in (120.0, 130.0):
            k.tick(False, now)
        assert proposals.made == []
        assert not k.is_leader

    asyncio.run(body())


def test_a_new_leader_gives_every_lease_a_fresh_full_ttl_first() -> None:
    async def body() -> None:
        lease = Lease(5, 10, 5, frozenset({b"k"}))
        k, proposals = keeper([lease])
        k.load([lease], now=0.0)
        k.tick(False, 8.0)  # 8 s into the TTL as a follower
        k.tick(True, 8.0)  # leader now: a fresh 10 s from 8
        await settle()
        assert k.is_leader
        assert k.remaining(5, 8.0) == 10.0
        k.tick(True, 17.9)
        await settle()
        assert proposals.made == []
        k.tick(True, 18.1)
        await settle()
        assert proposals.made == [(5, 5)]

    asyncio.run(body())


def test_a_keepalive_renews_and_an_end_forgets() -> None:
    async def body() -> None:
        metrics = NodeMetrics(1)
        k, proposals = keeper([], metrics)
        k.tick(True, 0.0)
        await settle()
        k.applied(*granted(5, 10), now=0.0)
        k.applied(*granted(6, 10), now=0.0)
        assert len(k) == 2
        assert metrics.leases._value.get() == 2
        keepalive = KVResult(9, CommandStatus.OK, lease=5, ttl=10)
        k.applied(Command.lease_keepalive(5), keepalive, now=7.0)
        assert k.remaining(5, 7.0) == 10.0
        k.tick(True, 10.5)
        await settle()
        assert proposals.made == [(6, 6)]  # 5 was renewed at 7: due at 17
        expired = KVResult(11, CommandStatus.OK, lease=6)
        k.applied(Command.lease_expire(6, 6), expired, now=10.6)
        assert k.remaining(6, 10.6) is None
        assert metrics.lease_expiries._value.get() == 1
        k.applied(Command.lease_revoke(5), KVResult(12, CommandStatus.OK, lease=5), now=11.0)
        assert len(k) == 0
        k.tick(True, 30.0)
        await settle()
        assert proposals.made == [(6, 6)]

    asyncio.run(body())


def test_a_duplicate_grant_or_a_failed_expiry_changes_nothing() -> None:
    async def body() -> None:
        k, proposals = keeper([])
        k.tick(True, 0.0)
        await settle()
        k.applied(*granted(5, 10), now=0.0)
        duplicate = KVResult(8, CommandStatus.OK, lease=5, ttl=10, duplicate=True)
        k.applied(Command.lease_grant(10), duplicate, now=6.0)
        assert k.remaining(5, 6.0) == 4.0
        failed = KVResult(9, CommandStatus.CONDITION_FAILED, lease=5)
        k.applied(Command.lease_expire(5, 1), failed, now=6.0)
        assert k.remaining(5, 6.0) == 4.0

    asyncio.run(body())


def test_stepping_down_stops_expiring_and_load_replaces_everything() -> None:
    async def body() -> None:
        k, proposals = keeper([])
        k.tick(True, 0.0)
        await settle()
        k.applied(*granted(5, 10), now=0.0)
        k.tick(False, 20.0)
        assert proposals.made == []
        k.load([Lease(7, 30, 7, frozenset())], now=20.0)
        assert k.remaining(5, 20.0) is None
        assert k.remaining(7, 20.0) == 30.0
        assert len(k) == 1

    asyncio.run(body())


def test_a_failed_expiry_is_proposed_again_after_the_retry_delay() -> None:
    async def body() -> None:
        calls: list[int] = []

        async def refuse(cmd: Command) -> KVResult:
            calls.append(cmd.lease)
            raise ServiceUnavailableError("no quorum")

        k = LeaseKeeper(leases=list, write=refuse)
        k.tick(True, 0.0)
        k.applied(*granted(5, 10), now=0.0)
        k.tick(True, 10.0)
        await settle()
        k.tick(True, 10.5)  # within the clock's retry delay: not again yet
        await settle()
        assert calls == [5]
        k.tick(True, 10.0 + DEFAULT_RETRY_S)
        await settle()
        assert calls == [5, 5]
        await k.stop()

    asyncio.run(body())
