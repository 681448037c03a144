"""The requests a node holds while they wait: writes and membership changes
until their entries are applied, reads until their read index is confirmed
and applied (``raftdb.node.node`` serves the API through them).

Theory of operation
-------------------
Requests wait on plain futures; their time limits are entries of one heap
(``raftdb.node.deadlines``) that the node's ticker sweeps (:meth:`WaitingRequests.expire`).
Writes are queued and proposed together at the top of the Ready loop
(:meth:`WaitingRequests.propose_queued`, one ``propose_many``): one append
message per follower per Ready, however many writes arrived meanwhile.
Linearizable reads likewise share one ``read_index`` request per turn
(:meth:`WaitingRequests.ask_reads`): one context for the core to track, and on
a follower one forwarded request to the leader, for all of them.

A write carries this node's client session (``client_id`` + ``seq``, Raft
thesis §6.3), so it is found again when applied — even when proposed through
another leader — and may be proposed again safely if a forwarded proposal was
lost (:meth:`WaitingRequests.tick`): the state machine answers a repeated
``seq`` from the session instead of applying it twice. A write with an
``Idempotency-Key`` is a session of its own, of one request.

Admission control
-----------------
A node holds at most ``max_pending_requests`` waiting writes, linearizable
reads and membership changes together (:attr:`WaitingRequests.pending`, one
counter: admitting a request is an integer compare). One more is refused at
once with ``429`` (:class:`~raftdb.node.errors.TooManyRequestsError`), before
anything is queued or proposed, so a flood of slow requests costs the node a
bounded amount of memory and work. Writes are also refused while this node's
state machine applies more than :data:`MAX_APPLY_LAG` entries behind its commit
index (etcd's ``maxGapBetweenApplyAndCommitIndex``): more writes would only
lengthen a queue that already takes long to drain.

Every way a request leaves (answered, timed out, cancelled) takes it out of
its table in O(1) or O(log n): a time limit that expires never scans the
other waiting requests, however many there are (``benchmarks/test_requests_bench.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from raftdb.kv.commands import (
    Command,
    CommandStatus,
    ConfChangeResult,
    InvalidCommandError,
    KVResult,
    Op,
)
from raftdb.node.deadlines import Deadlines
from raftdb.node.errors import (
    BadRequestError,
    ConditionFailedError,
    LeaseNotFoundError,
    OutcomeUnknownError,
    ServiceUnavailableError,
    TooManyRequestsError,
)
from raftdb.raft import ConfChange, NotLeaderError, ProposalDroppedError, RawNode

if TYPE_CHECKING:
    from raftdb.config import NodeConfig
    from raftdb.node.metrics import NodeMetrics
    from raftdb.raft import ReadState

__all__ = ["MAX_APPLY_LAG", "WaitingRequests", "no_leader"]

log = logging.getLogger("raftdb.node")

# A write or conf change waiting this many ticks is proposed again (safe: see
# the module docstring), in case a forwarded proposal was dropped on the way.
_REPROPOSE_TICKS_FACTOR = 2

#: Writes are refused (``429``) while the applied index lags the commit index by
#: more than this many entries, as etcd does (``maxGapBetweenApplyAndCommitIndex``).
MAX_APPLY_LAG: Final = 5000

#: ``Retry-After`` of a ``429``, in seconds: time for waiting requests to drain.
_BUSY_RETRY_AFTER: Final = 1.0

# The heap of reads waiting for an index to be applied is rebuilt without the
# ones that left (timed out, cancelled) once they are most of it.
_COMPACT_SLACK: Final = 64


@dataclass(slots=True, eq=False)
class _PendingWrite:
    data: bytes
    future: asyncio.Future[KVResult]
    proposed_at: int  # tick
    key: int | bytes  # its key in writes (seq) or in _idem (client id)


@dataclass(slots=True, eq=False)
class _PendingConf:
    change: ConfChange
    future: asyncio.Future[ConfChangeResult]
    proposed_at: int


class _ReadBatch:
    """The linearizable reads that share one ``read_index`` request of the core.

    Each read keeps a reference to its batch, so that one timing out (or
    cancelled) leaves it in O(1): before the batch is asked for, the batch is
    :attr:`WaitingRequests.unasked`; once asked, ``ctx`` names it in
    :attr:`WaitingRequests.reads`.
    """

    __slots__ = ("ctx", "waiters")

    def __init__(self) -> None:
        self.ctx: bytes | None = None
        self.waiters: dict[asyncio.Future[int], None] = {}

    def __len__(self) -> int:
        return len(self.waiters)


def no_leader(raw: RawNode, what: str, config: NodeConfig) -> ServiceUnavailableError:
    """The ``503`` for a request that needs a leader while none is known; its
    ``Retry-After`` is one election timeout."""
    retry = config.election_ticks * config.tick_ms / 1000
    return ServiceUnavailableError(f"no leader is known to {what}; retry shortly", retry, raw.lead)


class WaitingRequests:
    """This node's waiting requests, and its client session: see the module docstring.

    Every method is called on the node's event loop.
    """

    def __init__(
        self,
        config: NodeConfig,
        metrics: NodeMetrics,
        *,
        wake: Callable[[], None],
        applied_index: Callable[[], int],
    ) -> None:
        """Args:
        config: the node's settings (request timeout, election ticks).
        metrics: where proposals and their latency are counted.
        wake: wakes the Ready loop (a request has something for the core).
        applied_index: the state machine's applied index, which reads wait for.
        """
        self._id = config.id
        self._config = config
        self._timeout = float(config.request_timeout_s)
        self._metrics = metrics
        self._wake = wake
        self._applied_index = applied_index
        self._ticks = 0
        # Client session of this node's writes: a new id per start (and after the
        # state machine expired it). ``seq`` keeps counting across sessions, so a
        # pending write is found by ``seq`` whichever session it was sent in.
        self._session = self._new_session_id()
        self._sessions = {self._session}
        # Whether the state machine has applied a write of the current session:
        # until then it has no record of it, and ``ack`` must stay 1 (see write).
        self._session_open = False
        self._seq = itertools.count(1)
        self.writes: dict[int, _PendingWrite] = {}  # seq -> pending (insertion = seq order)
        # The lowest seq that may still be in writes: the ``ack`` of the next write.
        # (``next(iter(writes))`` was O(n) after many deletions at the dict's front.)
        self._lowest_seq = 1
        self.queued: list[_PendingWrite] = []  # not proposed yet: see propose_queued
        self._queued_done = False  # some queued write was answered before its proposal
        self._deadlines = Deadlines()
        self._idem: dict[bytes, _PendingWrite] = {}  # idempotency client id -> pending
        # Waiting membership changes by change (a result names only its change).
        self._confs: dict[ConfChange, dict[_PendingConf, None]] = {}
        self._read_ctx = itertools.count(1)
        # Reads not asked for yet (see ask_reads), and those asked: context -> batch.
        self.unasked = _ReadBatch()
        self.reads: dict[bytes, _ReadBatch] = {}
        self._applied_waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._applied_waiting = 0  # how many of _applied_waiters still wait
        self._waiter_seq = itertools.count()
        self._max_pending = config.max_pending_requests
        #: Writes, linearizable reads and membership changes waiting now (admission).
        self.pending = 0

    # -- admission -------------------------------------------------------------------

    def _admit(self) -> None:
        """Refuse a request beyond ``max_pending_requests`` (see the module docstring).

        Raises:
            TooManyRequestsError: the node holds as many as it may; nothing was done.
        """
        if self.pending >= self._max_pending:
            raise TooManyRequestsError(
                f"this node holds {self.pending} waiting requests, its limit "
                f"(max_pending_requests); retry shortly",
                _BUSY_RETRY_AFTER,
            )

    def _admit_write(self, raw: RawNode) -> None:
        """:meth:`_admit`, and refuse writes while applying lags far behind committing.

        Raises:
            TooManyRequestsError: as :meth:`_admit`, or the state machine is more
                than :data:`MAX_APPLY_LAG` entries behind the commit index.
        """
        self._admit()
        lag = raw.commit_index - self._applied_index()
        if lag > MAX_APPLY_LAG:
            raise TooManyRequestsError(
                f"this node applies {lag} committed entries behind (more than "
                f"{MAX_APPLY_LAG}); retry once it catches up",
                _BUSY_RETRY_AFTER,
            )

    # -- time ------------------------------------------------------------------------

    def expire(self, now: float) -> None:
        """Fail the requests whose time limit is at or before ``now`` (loop time)."""
        self._deadlines.sweep(now)

    def tick(self, raw: RawNode) -> None:
        """One more tick of the core; every few election timeouts, propose again
        what has waited that long."""
        self._ticks += 1
        if self._ticks % (_REPROPOSE_TICKS_FACTOR * self._config.election_ticks) == 0:
            self._repropose(raw)

    def _repropose(self, raw: RawNode) -> None:
        """Propose again what has waited long: a forwarded proposal may have been lost."""
        if raw.lead == 0:
            return
        horizon = self._ticks - _REPROPOSE_TICKS_FACTOR * self._config.election_ticks
        for pending in itertools.chain(self.writes.values(), self._idem.values()):
            if pending.proposed_at <= horizon and not pending.future.done():
                with contextlib.suppress(ProposalDroppedError):
                    raw.propose(pending.data)
                    pending.proposed_at = self._ticks
        for conf in itertools.chain.from_iterable(self._confs.values()):
            if conf.proposed_at <= horizon and not conf.future.done():
                with contextlib.suppress(ProposalDroppedError):
                    raw.propose_conf_change(conf.change)
                    conf.proposed_at = self._ticks
        # A read index request or its answer may have been lost the same way.
        self.reissue_reads(raw)

    def fail_all(self, error: ServiceUnavailableError) -> None:
        """Answer every waiting request: reads with ``error``; writes and membership
        changes with ``504``, as they were proposed and may still commit through
        the other members (``error``'s ``503`` would say that nothing was done)."""
        unknown = OutcomeUnknownError(
            f"{error.message}; the request was proposed before, and may still commit"
        )
        proposed: list[asyncio.Future[Any]] = [w.future for w in self.writes.values()]
        proposed += [w.future for w in self._idem.values()]
        proposed += [c.future for c in itertools.chain.from_iterable(self._confs.values())]
        reads: list[asyncio.Future[Any]] = [f for b in self.reads.values() for f in b.waiters]
        reads += self.unasked.waiters
        reads += [f for _, _, f in self._applied_waiters]
        for futures, exc in ((proposed, unknown), (reads, error)):
            for f in futures:
                if not f.done():
                    f.set_exception(exc)
        self.writes.clear()
        self._idem.clear()
        self.queued.clear()
        self._confs.clear()
        self.reads.clear()
        self.unasked = _ReadBatch()
        self._applied_waiters.clear()
        self._deadlines.clear()

    # -- writes ----------------------------------------------------------------------

    async def write(self, raw: RawNode, cmd: Command, idempotency_key: bytes | None) -> KVResult:
        """Queue ``cmd`` in this node's session (or the key's) and wait until it is applied.

        Raises:
            ServiceUnavailableError: no leader is known, the key's request is in progress,
                or the proposal was refused (``503``: nothing was done).
            OutcomeUnknownError: not applied in time, or the session's answer was
                not OK (``504``: it may or may not have been applied).
            ConditionFailedError: the condition on the key's modify index failed.
            BadRequestError: the command is invalid.
            LeaseNotFoundError: the command names a lease that does not exist
                (``LEASE_NOT_FOUND``: nothing changed).
            TooManyRequestsError: the node holds ``max_pending_requests`` waiting
                requests, or applies too far behind (``429``: nothing was done).
        """
        self._admit_write(raw)
        if raw.lead == 0:
            raise no_leader(raw, "take the write", self._config)
        self.pending += 1
        try:
            return await self._write(raw, cmd, idempotency_key)
        finally:
            self.pending -= 1

    async def _write(self, raw: RawNode, cmd: Command, idempotency_key: bytes | None) -> KVResult:
        """:meth:`write`, once admitted."""
        if idempotency_key is not None:
            # An earlier attempt with this key may be committed but not yet applied
            # here. Its entry carries the same session, so it would answer this
            # retry with its own first-time result (duplicate=False) instead of
            # the retry's entry answering from the session. Apply everything
            # committed before this request first (ReadIndex, the barrier of a
            # linearizable read): the entries that can answer it are then those
            # proposed after it began, among them its own. A refusal is a 503:
            # nothing was proposed. (The read is part of this admitted write.)
            await self._read_index(raw)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[KVResult] = loop.create_future()
        pending: _PendingWrite
        if idempotency_key is not None:
            # Each key is a session of one request: a retry is answered from it.
            client_id = b"idem:" + idempotency_key
            if client_id in self._idem:
                raise ServiceUnavailableError("a request with this Idempotency-Key is in progress")
            try:
                data = _with_session(cmd, client_id, 1, 1).encode()
            except InvalidCommandError as e:
                raise BadRequestError(f"Idempotency-Key: {e}") from None
            pending = _PendingWrite(data, future, self._ticks, client_id)
            self._idem[client_id] = pending
        else:
            seq = next(self._seq)
            # ``ack``: the lowest seq this node has no answer for. A write that
            # timed out was dropped from writes unanswered; once the session is
            # known to the state machine, moving past it only lets it forget
            # answers. Before that, nothing of the session was answered, and an
            # ``ack`` above 1 would tell the state machine that its record of
            # the session was lost (SESSION_EXPIRED, every write refused).
            ack = self._ack(seq) if self._session_open else 1
            data = _with_session(cmd, self._session, seq, ack).encode()
            pending = _PendingWrite(data, future, self._ticks, seq)
            self.writes[seq] = pending
        self.queued.append(pending)
        token = self._deadlines.add(
            loop.time() + self._timeout, future, lambda: self._write_timed_out(pending)
        )
        self._metrics.proposals.inc()
        started = time.perf_counter()
        self._wake()
        try:
            result = await future
        finally:
            self._deadlines.discard(token)
            if future.cancelled():  # the client went away: nobody waits for the answer
                self._forget(pending)
        self._metrics.proposal_seconds.observe(time.perf_counter() - started)
        if result.status == CommandStatus.CONDITION_FAILED:
            raise ConditionFailedError(
                f"the key's modify index is {result.mod_index}", result.mod_index
            )
        if result.status == CommandStatus.INVALID:
            raise BadRequestError(result.message or "invalid command")
        if result.status == CommandStatus.LEASE_NOT_FOUND:
            raise LeaseNotFoundError(_lease_not_found(cmd))
        if result.status != CommandStatus.OK:
            raise OutcomeUnknownError(f"the write's session answered {result.status.name}")
        return result

    def _ack(self, seq: int) -> int:
        """The lowest seq of this node's writes still waiting, or ``seq`` if none.

        Seqs only grow, so the pointer only moves forward: O(1) amortized.
        """
        low, writes = self._lowest_seq, self.writes
        while low < seq and low not in writes:
            low += 1
        self._lowest_seq = low
        return low

    def propose_queued(self, raw: RawNode) -> None:
        """Propose every queued write in one message (see the module docstring).

        A refusal (no leader, too much uncommitted) answers each of them ``503``:
        none of them was proposed. A queued write already answered (timed out,
        cancelled) is not proposed.
        """
        batch, self.queued = self.queued, []
        if self._queued_done:
            self._queued_done = False
            batch = [pending for pending in batch if not pending.future.done()]
            if not batch:
                return
        try:
            raw.propose_many([pending.data for pending in batch])
        except (NotLeaderError, ProposalDroppedError) as e:
            for pending in batch:
                self._forget(pending)
                if not pending.future.done():
                    if isinstance(e, NotLeaderError):
                        error = no_leader(raw, f"take the write ({e.reason})", self._config)
                    else:
                        error = ServiceUnavailableError(f"the write was refused: {e.reason}", 1)
                    pending.future.set_exception(error)

    def _write_timed_out(self, pending: _PendingWrite) -> BaseException:
        self._forget(pending)
        return OutcomeUnknownError(
            f"the write was not applied within {self._timeout:g}s; it may still be. "
            "Retry with an Idempotency-Key to learn the outcome safely"
        )

    def _forget(self, pending: _PendingWrite) -> None:
        """Drop ``pending`` from its table, in O(1); a queued one is skipped when
        proposing (:meth:`propose_queued`)."""
        key = pending.key
        table: dict[Any, _PendingWrite] = self.writes if isinstance(key, int) else self._idem
        if table.get(key) is pending:
            del table[key]
        if self.queued:
            self._queued_done = True

    def resolve_write(self, result: KVResult, client_id: bytes | None, seq: int) -> None:
        """The command of session ``client_id`` (``None``: none) and ``seq`` was
        applied with ``result``: answer its write, if it waits here."""
        if client_id in self._sessions:
            if client_id == self._session:
                if result.status == CommandStatus.SESSION_EXPIRED:
                    self._rotate_session()
                else:
                    self._session_open = True
            pending = self.writes.pop(seq, None)
        elif client_id is not None:
            pending = self._idem.pop(client_id, None)
        else:
            return
        if pending is not None and not pending.future.done():
            pending.future.set_result(result)

    def _new_session_id(self) -> bytes:
        return f"node-{self._id}-{os.urandom(6).hex()}".encode()

    def _rotate_session(self) -> None:
        """The state machine expired this node's session (unused for too long):
        write under a new one from now on. Writes still pending in the old one
        are answered from the old one's results (``504`` for the expired)."""
        old, self._session = self._session, self._new_session_id()
        self._sessions.add(self._session)
        self._session_open = False
        log.info("node %d: session %s expired; writes go on in a new one", self._id, old)

    # -- reads -----------------------------------------------------------------------

    async def read_index(self, raw: RawNode) -> int:
        """Confirm leadership (ReadIndex) and wait until this node applied the read index.

        The read joins the batch that :meth:`ask_reads` asks for at the Ready
        loop's next turn: one ``read_index`` request of the core for every read
        that arrived meanwhile (as etcd's server batches its linearizable reads).
        Never a batch asked for before the read arrived: that one's read index
        may predate a write that completed before this read began.

        Raises:
            ServiceUnavailableError: no leader is known, or the read index was not
                confirmed or not applied in time.
            TooManyRequestsError: the node holds ``max_pending_requests`` waiting
                requests (``429``).
        """
        self._admit()
        self.pending += 1
        try:
            return await self._read_index(raw)
        finally:
            self.pending -= 1

    async def _read_index(self, raw: RawNode) -> int:
        """:meth:`read_index`, once admitted."""
        if raw.lead == 0:
            raise no_leader(raw, "confirm the read", self._config)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        batch = self.unasked
        batch.waiters[future] = None
        self._wake()
        deadline = loop.time() + self._timeout
        token = self._deadlines.add(deadline, future, lambda: self._read_timed_out(batch, future))
        try:
            index = await future
        finally:
            self._deadlines.discard(token)
            if future.cancelled():
                self._leave(batch, future)
        await self._wait_applied(index, deadline)
        return index

    def ask_reads(self, raw: RawNode) -> None:
        """Ask the core for one read index for every read waiting to be asked.

        A refusal (no leader known) answers each of them ``503``.
        """
        batch, self.unasked = self.unasked, _ReadBatch()
        if not batch:  # reads that left (timed out, cancelled) left the batch
            return
        ctx = next(self._read_ctx).to_bytes(8, "big")
        try:
            raw.read_index(ctx)
        except ProposalDroppedError as e:
            for f in batch.waiters:
                if not f.done():
                    f.set_exception(no_leader(raw, f"confirm the read ({e.reason})", self._config))
            return
        batch.ctx = ctx
        self.reads[ctx] = batch

    def _leave(self, batch: _ReadBatch, future: asyncio.Future[int]) -> None:
        """Take a read that stopped waiting out of its batch, and an asked batch
        left empty out of ``reads``: O(1)."""
        batch.waiters.pop(future, None)
        if not batch.waiters and batch.ctx is not None and self.reads.get(batch.ctx) is batch:
            del self.reads[batch.ctx]

    def _read_timed_out(self, batch: _ReadBatch, future: asyncio.Future[int]) -> BaseException:
        """Forget a read whose leadership round did not come back in time."""
        self._leave(batch, future)
        return ServiceUnavailableError("could not confirm leadership with a quorum in time", 1)

    async def _wait_applied(self, index: int, deadline: float) -> None:
        if self._applied_index() >= index:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiters = self._applied_waiters
        if len(waiters) > 2 * self._applied_waiting + _COMPACT_SLACK:
            # Most entries are reads that left (timed out while applying is
            # stuck): rebuild without them. O(1) amortized; memory stays
            # bounded by the reads that wait.
            waiters[:] = [w for w in waiters if not w[2].done()]
            heapq.heapify(waiters)
        heapq.heappush(waiters, (index, next(self._waiter_seq), fut))
        self._applied_waiting += 1
        token = self._deadlines.add(
            deadline,
            fut,
            lambda: ServiceUnavailableError(
                f"this node has not applied up to the read index {index} in time", 1
            ),
        )
        try:
            await fut
        finally:
            self._deadlines.discard(token)
            self._applied_waiting -= 1

    def answer_reads(self, read_states: list[ReadState]) -> None:
        """The leader confirmed these read indexes: hand each to its read."""
        for rs in read_states:
            batch = self.reads.pop(rs.context, None)
            if batch is not None:
                for fut in batch.waiters:
                    if not fut.done():
                        fut.set_result(rs.index)

    def reissue_reads(self, raw: RawNode) -> None:
        """Ask for the read index of every waiting read again (same context).

        Whichever answer comes first serves the read; a later one finds no
        waiter. Safe: any confirmed read index at or after the request's start
        gives a linearizable read.
        """
        if raw.lead == 0:
            return
        for ctx, batch in self.reads.items():
            if batch:  # reads that stopped waiting have left it
                with contextlib.suppress(ProposalDroppedError):
                    raw.read_index(ctx)

    def wake_applied(self) -> None:
        """Release the reads that wait for an index now applied."""
        applied = self._applied_index()
        waiters = self._applied_waiters
        while waiters and waiters[0][0] <= applied:
            _, _, fut = heapq.heappop(waiters)
            if not fut.done():
                fut.set_result(None)

    # -- membership changes ----------------------------------------------------------

    async def change(self, raw: RawNode, change: ConfChange) -> ConfChangeResult:
        """Propose a membership change and wait until it is applied.

        Raises:
            ServiceUnavailableError: no leader is known, or the change was refused.
            OutcomeUnknownError: not applied in time (it may still be).
            TooManyRequestsError: the node holds ``max_pending_requests`` waiting
                requests (``429``).
        """
        self._admit()
        self.pending += 1
        try:
            return await self._change(raw, change)
        finally:
            self.pending -= 1

    async def _change(self, raw: RawNode, change: ConfChange) -> ConfChangeResult:
        """:meth:`change`, once admitted."""
        if raw.lead == 0:
            raise no_leader(raw, "change the membership", self._config)
        try:
            raw.propose_conf_change(change)
        except NotLeaderError:
            raise no_leader(raw, "change the membership", self._config) from None
        except ProposalDroppedError as e:
            raise ServiceUnavailableError(f"membership change refused: {e.reason}", 2) from None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[ConfChangeResult] = loop.create_future()
        pending = _PendingConf(change, future, self._ticks)
        self._confs.setdefault(change, {})[pending] = None
        self._wake()
        token = self._deadlines.add(
            loop.time() + self._timeout, future, lambda: self._conf_timed_out(pending)
        )
        try:
            return await future
        finally:
            self._deadlines.discard(token)
            if future.cancelled():
                self._forget_conf(pending)

    def _forget_conf(self, pending: _PendingConf) -> None:
        same = self._confs.get(pending.change)
        if same is not None:
            same.pop(pending, None)
            if not same:
                del self._confs[pending.change]

    def _conf_timed_out(self, pending: _PendingConf) -> BaseException:
        self._forget_conf(pending)
        return OutcomeUnknownError("the membership change was not applied in time; it may still be")

    def resolve_conf(self, result: ConfChangeResult) -> None:
        """A membership change was applied: answer the requests that proposed it."""
        if result.change is None:
            return
        for pending in self._confs.pop(result.change, ()):
            if not pending.future.done():
                pending.future.set_result(result)


def _lease_not_found(cmd: Command) -> str:
    """The message of a ``LEASE_NOT_FOUND`` answer to ``cmd``."""
    why = "never granted, revoked or expired"
    if cmd.op == Op.TXN:
        return (
            f"a put of the transaction names a lease that does not exist ({why}); nothing changed"
        )
    if cmd.op == Op.PUT:
        return f"lease {cmd.lease} does not exist ({why}); the key was not written"
    return f"lease {cmd.lease} does not exist ({why})"


def _with_session(cmd: Command, client_id: bytes, seq: int, ack: int) -> Command:
    return cmd.with_session(client_id, seq, ack)
