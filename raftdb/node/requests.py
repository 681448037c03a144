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
from typing import TYPE_CHECKING, Any

from raftdb.kv.commands import (
    Command,
    CommandStatus,
    ConfChangeResult,
    InvalidCommandError,
    KVResult,
)
from raftdb.node.deadlines import Deadlines
from raftdb.node.errors import (
    BadRequestError,
    ConditionFailedError,
    OutcomeUnknownError,
    ServiceUnavailableError,
)
from raftdb.raft import ConfChange, Entry, NotLeaderError, ProposalDroppedError, RawNode

if TYPE_CHECKING:
    from raftdb.config import NodeConfig
    from raftdb.node.metrics import NodeMetrics
    from raftdb.raft import ReadState

__all__ = ["WaitingRequests", "no_leader"]

log = logging.getLogger("raftdb.node")

# A write or conf change waiting this many ticks is proposed again (safe: see
# the module docstring), in case a forwarded proposal was dropped on the way.
_REPROPOSE_TICKS_FACTOR = 2


@dataclass(slots=True)
class _PendingWrite:
    data: bytes
    future: asyncio.Future[KVResult]
    proposed_at: int  # tick


@dataclass(slots=True)
class _PendingConf:
    change: ConfChange
    future: asyncio.Future[ConfChangeResult]
    proposed_at: int


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
        self.queued: list[_PendingWrite] = []  # not proposed yet: see propose_queued
        self._deadlines = Deadlines()
        self._idem: dict[bytes, _PendingWrite] = {}  # idempotency client id -> pending
        self._confs: list[_PendingConf] = []
        self._read_ctx = itertools.count(1)
        # Reads not asked for yet (see ask_reads), and those asked: context -> waiters.
        self.unasked: list[asyncio.Future[int]] = []
        self.reads: dict[bytes, list[asyncio.Future[int]]] = {}
        self._applied_waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._waiter_seq = itertools.count()

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
        for conf in self._confs:
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
        proposed += [c.future for c in self._confs]
        reads: list[asyncio.Future[Any]] = [f for batch in self.reads.values() for f in batch]
        reads += self.unasked
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
        self.unasked.clear()
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
        """
        if raw.lead == 0:
            raise no_leader(raw, "take the write", self._config)
        if idempotency_key is not None:
            # An earlier attempt with this key may be committed but not yet applied
            # here. Its entry carries the same session, so it would answer this
            # retry with its own first-time result (duplicate=False) instead of
            # the retry's entry answering from the session. Apply everything
            # committed before this request first (ReadIndex, the barrier of a
            # linearizable read): the entries that can answer it are then those
            # proposed after it began, among them its own. A refusal is a 503:
            # nothing was proposed.
            await self.read_index(raw)
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
            pending = _PendingWrite(data, future, self._ticks)
            self._idem[client_id] = pending
        else:
            seq = next(self._seq)
            # ``ack``: the lowest seq this node has no answer for. A write that
            # timed out was dropped from writes unanswered; once the session is
            # known to the state machine, moving past it only lets it forget
            # answers. Before that, nothing of the session was answered, and an
            # ``ack`` above 1 would tell the state machine that its record of
            # the session was lost (SESSION_EXPIRED, every write refused).
            ack = next(iter(self.writes), seq) if self._session_open else 1
            data = _with_session(cmd, self._session, seq, ack).encode()
            pending = _PendingWrite(data, future, self._ticks)
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
        self._metrics.proposal_seconds.observe(time.perf_counter() - started)
        if result.status == CommandStatus.CONDITION_FAILED:
            raise ConditionFailedError(
                f"the key's modify index is {result.mod_index}", result.mod_index
            )
        if result.status == CommandStatus.INVALID:
            raise BadRequestError(result.message or "invalid command")
        if result.status != CommandStatus.OK:
            raise OutcomeUnknownError(f"the write's session answered {result.status.name}")
        return result

    def propose_queued(self, raw: RawNode) -> None:
        """Propose every queued write in one message (see the module docstring).

        A refusal (no leader, too much uncommitted) answers each of them ``503``:
        none of them was proposed.
        """
        batch, self.queued = self.queued, []
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
        for seq in [k for k, v in self.writes.items() if v is pending]:
            del self.writes[seq]
        for client in [k for k, v in self._idem.items() if v is pending]:
            del self._idem[client]
        if pending in self.queued:
            self.queued.remove(pending)

    def resolve_write(self, entry: Entry, result: KVResult) -> None:
        """``entry`` was applied with ``result``: answer its write, if it waits here."""
        try:
            cmd = Command.decode(entry.data)
        except InvalidCommandError:
            return
        if cmd.client_id in self._sessions:
            if cmd.client_id == self._session:
                if result.status == CommandStatus.SESSION_EXPIRED:
                    self._rotate_session()
                else:
                    self._session_open = True
            pending = self.writes.pop(cmd.seq, None)
        elif cmd.client_id is not None:
            pending = self._idem.pop(cmd.client_id, None)
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
        """
        if raw.lead == 0:
            raise no_leader(raw, "confirm the read", self._config)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[int] = loop.create_future()
        self.unasked.append(future)
        self._wake()
        deadline = loop.time() + self._timeout
        token = self._deadlines.add(deadline, future, lambda: self._read_timed_out(future))
        try:
            index = await future
        finally:
            self._deadlines.discard(token)
        await self._wait_applied(index, deadline)
        return index

    def ask_reads(self, raw: RawNode) -> None:
        """Ask the core for one read index for every read waiting to be asked.

        A refusal (no leader known) answers each of them ``503``.
        """
        batch, self.unasked = self.unasked, []
        batch = [f for f in batch if not f.done()]
        if not batch:
            return
        ctx = next(self._read_ctx).to_bytes(8, "big")
        try:
            raw.read_index(ctx)
        except ProposalDroppedError as e:
            for f in batch:
                f.set_exception(no_leader(raw, f"confirm the read ({e.reason})", self._config))
            return
        self.reads[ctx] = batch

    def _read_timed_out(self, future: asyncio.Future[int]) -> BaseException:
        """Forget a read whose leadership round did not come back in time."""
        if future in self.unasked:
            self.unasked.remove(future)
        for ctx, batch in list(self.reads.items()):
            if future in batch:
                batch.remove(future)
                if not batch:
                    del self.reads[ctx]
                break
        return ServiceUnavailableError("could not confirm leadership with a quorum in time", 1)

    async def _wait_applied(self, index: int, deadline: float) -> None:
        if self._applied_index() >= index:
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._applied_waiters, (index, next(self._waiter_seq), fut))
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

    def answer_reads(self, read_states: list[ReadState]) -> None:
        """The leader confirmed these read indexes: hand each to its read."""
        for rs in read_states:
            for fut in self.reads.pop(rs.context, ()):
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
            if any(not fut.done() for fut in batch):
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
        """
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
        self._confs.append(pending)
        self._wake()
        token = self._deadlines.add(
            loop.time() + self._timeout, future, lambda: self._conf_timed_out(pending)
        )
        try:
            return await future
        finally:
            self._deadlines.discard(token)

    def _conf_timed_out(self, pending: _PendingConf) -> BaseException:
        if pending in self._confs:
            self._confs.remove(pending)
        return OutcomeUnknownError("the membership change was not applied in time; it may still be")

    def resolve_conf(self, result: ConfChangeResult) -> None:
        """A membership change was applied: answer the requests that proposed it."""
        keep: list[_PendingConf] = []
        for pending in self._confs:
            if result.change == pending.change:
                if not pending.future.done():
                    pending.future.set_result(result)
            else:
                keep.append(pending)
        self._confs = keep


def _with_session(cmd: Command, client_id: bytes, seq: int, ack: int) -> Command:
    return Command(cmd.op, cmd.key, cmd.value, cmd.expect, client_id, seq, ack)
