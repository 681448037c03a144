"""The lease keeper: a node's clock for lease expiry, around ``raftdb.kv.expiry.LeaseClock``.

Theory of operation
-------------------
The state machine never reads a clock: a lease ends only by a log entry,
``LEASE_REVOKE`` from a client or ``LEASE_EXPIRE`` from the leader. This
module is where the leader decides the latter, from its own monotonic time
(``loop.time()``), as etcd's lessor does:

- every member tracks a deadline per lease, from the time it applied the
  grant or the last keep-alive (:meth:`LeaseKeeper.applied`), so that any
  member can say how long a lease has left (``lease_info``'s ``remaining``);
- a member that becomes leader gives every lease a fresh full TTL first
  (``LeaseClock.become_leader``): a leader change never expires a lease early,
  however long the election took, since the new leader cannot know when the
  old one last heard a keep-alive. The minimum TTL is above twice the election
  timeout (``NodeConfig.min_lease_ttl``);
- every :data:`TICK_S` the leader proposes ``LEASE_EXPIRE(id, renewed_index)``
  for each lease past its deadline, through the normal write path. The entry
  names the renewal it saw expire, so a keep-alive committed first wins (the
  expiry then changes nothing); an expiry that fails for another reason (no
  quorum, a leader change) is proposed again after the clock's retry delay.

A snapshot from the leader replaces the state machine's leases: the keeper
follows exactly them from then on (:meth:`LeaseKeeper.load`); one it did not
know, or that was renewed since, gets a full TTL from the restore.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Final

from raftdb.kv.changes import Lease
from raftdb.kv.commands import Command, CommandStatus, KVResult, Op
from raftdb.kv.expiry import LeaseClock
from raftdb.node.errors import ConditionFailedError, LeaseNotFoundError, NodeError

if TYPE_CHECKING:
    from raftdb.node.metrics import NodeMetrics

__all__ = ["TICK_S", "LeaseKeeper"]

log = logging.getLogger("raftdb.node")

#: How often the leader looks for expired leases, in seconds.
TICK_S: Final = 0.1


class LeaseKeeper:
    """One node's lease deadlines, and the leader's expiry proposals: see the module
    docstring. Every method runs on the node's event loop; ``now`` is its ``loop.time()``.
    """

    def __init__(
        self,
        *,
        leases: Callable[[], Iterable[Lease]],
        write: Callable[[Command], Awaitable[KVResult]],
        metrics: NodeMetrics | None = None,
        node_id: int = 0,
    ) -> None:
        """Args:
        leases: the state machine's leases now (read when this node becomes leader).
        write: the node's write path: proposes a command and waits until it is
            applied (an expiry's answer does not matter here: see :meth:`_expire`).
        metrics: where the tracked leases and applied expiries are counted.
        node_id: for the log.
        """
        self._leases = leases
        self._write = write
        self._metrics = metrics
        self._id = node_id
        self._clock = LeaseClock()
        self._ticker: asyncio.Task[None] | None = None
        self._expiries: set[asyncio.Task[None]] = set()

    def start(self, leading: Callable[[], bool | None]) -> None:
        """Tick every :data:`TICK_S` on the running loop; ``leading()`` says whether
        this node leads (``None``: it does not serve now, nothing changes)."""
        self._ticker = asyncio.get_running_loop().create_task(
            self._run(leading), name=f"raftdb-leases-{self._id}"
        )

    async def stop(self) -> None:
        """Stop ticking and drop the expiries in flight (the next leader proposes them)."""
        tasks = [t for t in (self._ticker, *self._expiries) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._ticker = None

    async def _run(self, leading: Callable[[], bool | None]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(TICK_S)
            leader = leading()
            if leader is None:
                continue
            try:
                self.tick(leader, loop.time())
            except NodeError as e:  # the state machine's leases could not be read
                log.warning("node %d: lease keeper: %s", self._id, e.message)

    @property
    def is_leader(self) -> bool:
        """Whether the keeper acts as leader (it proposes expiries)."""
        return self._clock.is_leader

    def __len__(self) -> int:
        """How many leases it tracks."""
        return len(self._clock)

    def load(self, leases: Iterable[Lease], now: float) -> None:
        """Track exactly ``leases``: at start, and after a snapshot replaced the state
        machine's state. A lease already tracked at the same renewal keeps its
        deadline; any other gets a full TTL from ``now``."""
        self._clock.track(now, leases)
        self._count()

    def applied(self, cmd: Command, result: KVResult, now: float) -> None:
        """A lease command's entry was applied with ``result``: follow it."""
        op = cmd.op
        status = result.status
        if status == CommandStatus.OK and not result.duplicate:
            if op == Op.LEASE_GRANT:
                self._renewed(Lease(result.lease, result.ttl, result.index, frozenset()), now)
            elif op == Op.LEASE_KEEPALIVE:
                self._renewed(Lease(cmd.lease, result.ttl, result.index, frozenset()), now)
            elif op in (Op.LEASE_REVOKE, Op.LEASE_EXPIRE):
                self._ended(cmd.lease)
                if op == Op.LEASE_EXPIRE and self._metrics is not None:
                    self._metrics.lease_expiries.inc()
        elif status == CommandStatus.LEASE_NOT_FOUND and cmd.lease:
            self._ended(cmd.lease)  # gone already: nothing left to expire

    def tick(self, leader: bool, now: float) -> None:
        """Follow this node's role; as leader, propose the expiry of every lease due.

        Called every :data:`TICK_S`. On becoming leader every lease gets a fresh
        full TTL from ``now`` before any may expire.
        """
        clock = self._clock
        if leader and not clock.is_leader:
            leases = list(self._leases())
            clock.become_leader(now, leases)
            self._count()
            log.info("leases: leader now; %d leases get a fresh TTL", len(leases))
        elif not leader and clock.is_leader:
            clock.become_follower()
        if clock.is_leader:
            for lease_id, renewed_index in clock.due(now):
                self._propose_expiry(lease_id, renewed_index)

    def _propose_expiry(self, lease_id: int, renewed_index: int) -> None:
        """Propose, in the background, that ``lease_id`` expired at ``renewed_index``
        (the clock names it again after its retry delay if it is not applied)."""
        task = asyncio.get_running_loop().create_task(self._expire(lease_id, renewed_index))
        self._expiries.add(task)
        task.add_done_callback(self._expiries.discard)

    async def _expire(self, lease_id: int, renewed_index: int) -> None:
        try:
            await self._write(Command.lease_expire(lease_id, renewed_index))
        except (ConditionFailedError, LeaseNotFoundError):
            pass  # kept alive or revoked meanwhile: nothing to expire
        except NodeError as e:  # no quorum, a leader change: proposed again later
            log.info("node %d: the expiry of lease %d failed: %s", self._id, lease_id, e)
        else:
            log.info("node %d: lease %d expired", self._id, lease_id)

    def remaining(self, lease_id: int, now: float) -> float | None:
        """Seconds left before the lease is due as this member sees it, or ``None``
        when it does not track the lease (not applied here yet)."""
        return self._clock.remaining(lease_id, now)

    def _renewed(self, lease: Lease, now: float) -> None:
        self._clock.renewed(lease, now)
        self._count()

    def _ended(self, lease_id: int) -> None:
        self._clock.ended(lease_id)
        self._count()

    def _count(self) -> None:
        if self._metrics is not None:
            self._metrics.leases.set(len(self._clock))
