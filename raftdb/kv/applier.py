"""The Applier: the deterministic core every raftdb state machine applies with.

A state machine plugin supplies storage (a :class:`KVBackend` for the length
of one batch) and persistence; the :class:`Applier` decides every outcome
from the entries alone and the state before them, so that all nodes, whatever
their plugin and however their batches are cut, compute the same results.
The semantics themselves are described where their types are: commands,
conditions, sessions and their expiry in :mod:`raftdb.kv.commands`,
transactions in :mod:`raftdb.kv.txn`, leases and the watch history in
:mod:`raftdb.kv.changes`.

Besides the keys (in the plugin's storage) the Applier keeps, in memory, the
small replicated state: applied index and term, membership, sessions, the
leases (with the keys attached to each) and the watch history window. A
durable plugin persists what each :class:`AppliedBatch` reports changed and
hands it all back to :meth:`Applier.reset` when it opens.
"""

from __future__ import annotations

import operator
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from raftdb.kv.changes import DEFAULT_WATCH_HISTORY, Change, ChangeKind, History, Lease
from raftdb.kv.commands import (
    MAX_SESSION_RESPONSES,
    SESSION_TTL_ENTRIES,
    ApplyResult,
    CommandStatus,
    ConfChangeResult,
    InvalidCommandError,
    KeyValue,
    KVResult,
    NewerCommandFormatError,
    NoopResult,
    Op,
    Response,
    SessionState,
    compact_answers,
    parse_command,
)
from raftdb.kv.txn import CmpOp, Compare, Target, Txn, TxnOpKind, TxnOpResult, TxnResult
from raftdb.raft.confchange import ConfChangeError, apply_conf_change
from raftdb.raft.errors import UsageError
from raftdb.raft.messages import ConfChange, ConfChangeType, ConfState, Entry, EntryType

__all__ = ["AppliedBatch", "Applier", "KVBackend"]

_NEVER: Final = 1 << 64  # an index no log reaches


class KVBackend(Protocol):
    """The storage an :class:`Applier` writes a batch into.

    Writes made by ``store``/``remove`` must be visible to later ``load`` calls
    of the same batch. Whether they are visible to readers before the batch
    ends is the state machine's business (it must not be: see
    ``raftdb.state_machine``).
    """

    def load(self, key: bytes) -> tuple[int, int] | None:
        """``(create_index, mod_index)`` of ``key``, or ``None`` if absent."""
        ...

    def store(self, key: bytes, value: bytes, create_index: int, mod_index: int) -> None:
        """Set ``key``."""
        ...

    def remove(self, key: bytes) -> None:
        """Delete ``key``, which exists."""
        ...

    def read(self, key: bytes) -> tuple[bytes, int, int] | None:
        """``(value, create_index, mod_index)`` of ``key``, or ``None`` if absent.

        Transactions read values (compares on a value, ``get``) through it.
        """
        ...

    def scan(self, prefix: bytes, limit: int) -> tuple[list[KeyValue], bool]:
        """Up to ``limit`` keys (with values) under ``prefix`` in ascending order,
        and whether more exist; the batch's own writes included (a
        transaction's ``list``)."""
        ...


@dataclass(slots=True)
class AppliedBatch:
    """What one :meth:`Applier.apply` did, for the state machine to persist.

    Attributes:
        results: one per entry, in order.
        sessions: the sessions created, changed (new state) or expired (``None``).
        membership_changed: the conf state or the members table changed.
        leases: the leases granted or changed (new state: renewed, keys
            attached or detached) or ended (``None``), by id.
        changes: every change the batch made, in order (what its results'
            ``changes`` hold), all appended to the watch history.
        trimmed: the changes the batch dropped from the front of the history,
            oldest first; with a small history these can include some of
            ``changes``. A plugin that stores the history writes ``changes``,
            then deletes ``trimmed`` (in one atomic batch).
        history_floor: the history floor after the batch (see
            :class:`~raftdb.kv.changes.History`).
    """

    results: list[ApplyResult]
    sessions: dict[bytes, SessionState | None]
    membership_changed: bool
    leases: dict[int, Lease | None] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    trimmed: list[Change] = field(default_factory=list)
    history_floor: int = 0


_PUT: Final = int(Op.PUT)
_DELETE: Final = int(Op.DELETE)
_TXN: Final = int(Op.TXN)
_GRANT: Final = int(Op.LEASE_GRANT)
_KEEPALIVE: Final = int(Op.LEASE_KEEPALIVE)
_EXPIRE: Final = int(Op.LEASE_EXPIRE)
_OK: Final = CommandStatus.OK
_CHANGE_PUT: Final = ChangeKind.PUT
_CHANGE_DELETE: Final = ChangeKind.DELETE
_COMPARE: Final[dict[CmpOp, Callable[[Any, Any], bool]]] = {
    CmpOp.EQ: operator.eq,
    CmpOp.NE: operator.ne,
    CmpOp.LT: operator.lt,
    CmpOp.GT: operator.gt,
}


class _LeaseState:
    """A lease as the Applier changes it during a batch; the immutable
    :class:`Lease` is built once per batch for each lease a batch touched, so
    attaching many keys to one lease is not quadratic."""

    __slots__ = ("keys", "renewed_index", "ttl")

    def __init__(self, ttl: int, renewed_index: int, keys: set[bytes]) -> None:
        self.ttl = ttl
        self.renewed_index = renewed_index
        self.keys = keys


class Applier:
    """The deterministic core of every raftdb state machine.

    It owns the small replicated state besides the keys: the applied index
    and term, the membership (conf state and ``{node id: peer URL}``), the
    session table, the leases and the watch history. The keys themselves
    stay in the state machine's storage, reached through a :class:`KVBackend`
    for the length of one batch.

    Not thread-safe: one batch at a time, from the state machine's apply
    thread. The read accessors (:meth:`lease`, :meth:`leases`,
    :meth:`history_page`) show the state as of the last batch's end; a
    plugin calls them where no batch runs at the same time (under the lock
    its applies take), or keeps its own copy (see
    :class:`~raftdb.kv.changes.History`). If the backend raises during
    :meth:`apply` the Applier's memory is ahead of the storage: the plugin
    must :meth:`reset` it before the next batch.

    Args:
        session_ttl, max_responses: the session bounds (replicated semantics:
            every node of a cluster must use the same values).
        history_limit: changes the watch history retains (the
            ``watch_history`` setting; a local choice, it decides only how far
            back a watcher can resume).
    """

    def __init__(
        self,
        *,
        session_ttl: int = SESSION_TTL_ENTRIES,
        max_responses: int = MAX_SESSION_RESPONSES,
        history_limit: int = DEFAULT_WATCH_HISTORY,
    ) -> None:
        if session_ttl < 1 or max_responses < 1:
            raise ValueError("session_ttl and max_responses must be positive")
        if history_limit < 0:
            raise ValueError(f"history_limit must be >= 0, got {history_limit}")
        self.session_ttl = session_ttl
        self.max_responses = max_responses
        self.applied_index = 0
        self.applied_term = 0
        self.conf_state = ConfState()
        self.members: dict[int, str] = {}
        # Ordered by last use, oldest first: expiry pops from the front.
        self.sessions: OrderedDict[bytes, SessionState] = OrderedDict()
        self._next_expiry = _NEVER
        #: The watch history window; read it between batches only.
        self.history = History(history_limit)
        self._leases: dict[int, _LeaseState] = {}
        self._key_lease: dict[bytes, int] = {}  # key -> the lease it is attached to
        # The leases as of the last batch's end, in id order (ids are indexes,
        # granted in order, so insertion order is id order).
        self._lease_view: dict[int, Lease] = {}
        self._touched: set[int] = set()  # leases the running batch changed
        # The answers dicts this batch made, by session: only these may change in
        # place (see _remember); every other one may be held by a snapshot.
        self._fresh: dict[bytes, dict[int, Response]] = {}

    def reset(
        self,
        applied_index: int,
        applied_term: int,
        conf_state: ConfState,
        members: Mapping[int, str],
        sessions: Iterable[SessionState],
        *,
        leases: Iterable[Lease] = (),
        history: Iterable[Change] = (),
        history_floor: int = 0,
    ) -> None:
        """Replace all state: at open (from disk) or on restore (from a snapshot).

        ``history`` is the retained window, oldest first, every change above
        ``history_floor``. A window longer than this Applier's limit (taken
        from a node that keeps more) is trimmed by the next batch, which
        reports what it dropped in ``trimmed``.

        Raises:
            ValueError: the leases or the history are inconsistent (a key on
                two leases, a lease or change after ``applied_index``, changes
                out of order or at or below the floor). Nothing was changed.
        """
        lease_states: dict[int, _LeaseState] = {}
        key_lease: dict[bytes, int] = {}
        view: dict[int, Lease] = {}
        for lease in sorted(leases, key=lambda x: x.id):
            if lease.id in lease_states or not lease.id <= lease.renewed_index <= applied_index:
                raise ValueError(f"lease {lease.id} is repeated or later than {applied_index}")
            for key in lease.keys:
                if key in key_lease:
                    raise ValueError(f"key {key!r} is on leases {key_lease[key]} and {lease.id}")
                key_lease[key] = lease.id
            lease_states[lease.id] = _LeaseState(lease.ttl, lease.renewed_index, set(lease.keys))
            view[lease.id] = lease
        window = History(self.history.limit, history, history_floor)
        if window.last_index > applied_index:
            raise ValueError(f"the history reaches {window.last_index}, after {applied_index}")
        self.applied_index = applied_index
        self.applied_term = applied_term
        self.conf_state = conf_state
        self.members = dict(members)
        ordered = sorted(sessions, key=lambda s: (s.last_index, s.client_id))
        self.sessions = OrderedDict((s.client_id, s) for s in ordered)
        self._next_expiry = ordered[0].last_index + self.session_ttl if ordered else _NEVER
        self.history = window
        self._leases, self._key_lease, self._lease_view = lease_states, key_lease, view
        self._touched = set()
        self._fresh = {}

    # -- reads (between batches) ---------------------------------------------------

    @property
    def history_floor(self) -> int:
        """Every change with an index above it is in :attr:`history`."""
        return self.history.floor

    def history_page(self, after: int, limit: int) -> tuple[int, list[Change]]:
        """:meth:`raftdb.kv.state_machine.StateMachine.history`, from memory."""
        return self.history.page(after, limit)

    def lease(self, lease_id: int) -> Lease | None:
        """The lease, or ``None``."""
        return self._lease_view.get(lease_id)

    def leases(self) -> list[Lease]:
        """Every lease, by id."""
        return list(self._lease_view.values())

    # -- apply -------------------------------------------------------------------------

    def apply(self, entries: Sequence[Entry], backend: KVBackend) -> AppliedBatch:
        """Apply consecutive committed entries; one result per entry.

        Entries at or below :attr:`applied_index` are skipped (their result is
        a :class:`NoopResult` with ``already_applied``).

        Raises:
            UsageError: the entries are not consecutive, or leave a gap after
                :attr:`applied_index`. Nothing was applied.
        """
        out = AppliedBatch([], {}, False, history_floor=self.history.floor)
        if not entries:
            return out
        self._fresh.clear()  # (a batch that raised left its own: reset() is next, or this)
        first = entries[0].index
        for offset, entry in enumerate(entries):
            if entry.index != first + offset:
                raise UsageError(f"entry {entry.index} follows entry {first + offset - 1}")
        if first > self.applied_index + 1:
            raise UsageError(f"entries start at {first}, applied index is {self.applied_index}")
        results = out.results
        for entry in entries:
            index = entry.index
            if index <= self.applied_index:
                results.append(NoopResult(index, already_applied=True))
                continue
            if index >= self._next_expiry:
                self._expire(index, out.sessions)
            if entry.type == EntryType.NORMAL:
                if entry.data:
                    results.append(self._apply_command(index, entry.data, backend, out))
                else:
                    results.append(NoopResult(index))
            else:
                results.append(self._apply_conf_change(index, entry.data, out))
            self.applied_index = index
            self.applied_term = entry.term
        self._finish(out)
        return out

    def _finish(self, out: AppliedBatch) -> None:
        """The batch's end: the history takes its changes, the lease view its leases,
        and the sessions it answered their smallest memory form."""
        if self._fresh:
            sessions = self.sessions
            for client_id, responses in self._fresh.items():
                session = sessions.get(client_id)
                if len(responses) == 1 and session is not None and session.responses is responses:
                    one = SessionState(
                        client_id, session.last_index, session.floor, compact_answers(responses)
                    )
                    sessions[client_id] = one  # (an existing key: its place is kept)
                    if out.sessions.get(client_id) is session:
                        out.sessions[client_id] = one
            self._fresh.clear()
        history = self.history
        if out.changes:
            history.extend(out.changes)
        if len(history) > history.limit:
            out.trimmed = history.trim()
        out.history_floor = history.floor
        if self._touched:
            view = self._lease_view
            for lease_id in sorted(self._touched):
                state = self._leases.get(lease_id)
                if state is not None:
                    lease = Lease(lease_id, state.ttl, state.renewed_index, frozenset(state.keys))
                    view[lease_id] = out.leases[lease_id] = lease
                elif lease_id in view:  # (not one granted and ended in this batch)
                    del view[lease_id]
                    out.leases[lease_id] = None
            self._touched.clear()

    # -- commands --------------------------------------------------------------

    def _apply_command(
        self, index: int, data: bytes, backend: KVBackend, out: AppliedBatch
    ) -> KVResult:
        try:
            fields = parse_command(data)
        except InvalidCommandError as exc:
            return KVResult(index, CommandStatus.INVALID, message=str(exc))
        except NewerCommandFormatError as exc:
            raise NewerCommandFormatError(f"entry {index}: {exc}") from None
        if len(fields) == 8:
            _, op, key, value, expect, client_id, seq, ack = fields
            if client_id is None and expect is None and op == _PUT:
                # The hot path, inline: an unconditional put without a lease or a session.
                old = backend.load(key)
                if old is None:
                    create, prev = index, 0
                else:
                    create, prev = old
                backend.store(key, value, create, index)
                if self._key_lease:
                    self._detach(key)
                change = Change(index, _CHANGE_PUT, key, value, create, index, prev)
                out.changes.append(change)
                return KVResult(index, _OK, create, index, prev, False, "", (change,))
            lease = ttl = 0
        else:
            _, op, key, value, expect, client_id, seq, ack, lease, ttl = fields
        if client_id is None:
            return self._execute(index, op, key, value, expect, lease, ttl, backend, out)
        changed = out.sessions
        session = self.sessions.get(client_id)
        if session is None:
            if ack > 1:
                # The client had answers for seq < ack, so it had a session here.
                return KVResult(index, CommandStatus.SESSION_EXPIRED)
            session = SessionState(client_id, index, 0, {})
        elif seq < session.floor:
            return KVResult(index, CommandStatus.STALE)
        else:
            cached = session.responses.get(seq)
            if cached is not None:
                self._touch(SessionState(client_id, index, session.floor, session.responses))
                changed[client_id] = self.sessions[client_id]
                return _duplicate(index, op, cached)
        result = self._execute(index, op, key, value, expect, lease, ttl, backend, out)
        responses, floor = self._remember(session, ack)
        responses[seq] = _response(op, result)
        if len(responses) > self.max_responses:
            for dropped in sorted(responses)[: len(responses) - self.max_responses]:
                del responses[dropped]
                floor = dropped + 1
        self._touch(SessionState(client_id, index, floor, responses))
        changed[client_id] = self.sessions[client_id]
        return result

    def _remember(self, session: SessionState, ack: int) -> tuple[dict[int, Response], int]:
        """The answers ``session`` keeps once ``ack`` moved its floor, as a dict
        this batch may change, and the new floor.

        A session's answers are copy-on-write: a snapshot may hold the mapping of
        any earlier batch. So the first command of a session in a batch copies its
        answers (dropping those below the floor); the session's later commands
        in the same batch change that copy in place, dropping only the seqs
        their ``ack`` passed. One session carries every write a node proposes,
        with as many answers as writes in flight: copying them for each
        command made a write's apply cost grow with the load (about 6 µs a put
        at 64 writes in flight, ``benchmarks/test_apply_bench.py::test_apply_session``).
        """
        old_floor = session.floor
        floor = max(old_floor, ack)
        responses = self._fresh.get(session.client_id)
        if responses is None or responses is not session.responses:
            responses = {s: r for s, r in session.responses.items() if s >= floor}
            self._fresh[session.client_id] = responses
        elif floor - old_floor <= len(responses):
            # Every kept seq is at or above the old floor (the copy dropped the rest).
            for s in range(old_floor, floor):
                responses.pop(s, None)
        else:
            for s in [s for s in responses if s < floor]:
                del responses[s]
        return responses, floor

    def _execute(
        self,
        index: int,
        op: int,
        key: bytes,
        value: bytes | None,
        expect: int | None,
        lease: int,
        ttl: int,
        backend: KVBackend,
        out: AppliedBatch,
    ) -> KVResult:
        if op in (_PUT, _DELETE):
            old = backend.load(key)
            if old is None:
                create = prev = 0
            else:
                create, prev = old
            if expect is not None and expect != prev:
                return KVResult(index, CommandStatus.CONDITION_FAILED, create, prev, prev)
            if op == _PUT:
                assert value is not None  # checked by parse_command
                state = None
                if lease:
                    state = self._leases.get(lease)
                    if state is None:
                        return _lease_not_found(index, lease, create, prev)
                if old is None:
                    create = index
                backend.store(key, value, create, index)
                if state is not None:
                    self._attach(key, lease, state)
                elif self._key_lease:
                    self._detach(key)
                change = Change(index, _CHANGE_PUT, key, value, create, index, prev)
                out.changes.append(change)
                return KVResult(index, _OK, create, index, prev, False, "", (change,), None, lease)
            # A delete's mod_index is its own index (as its change's is), so that
            # the session remembers it and a retry reports the first attempt's.
            if old is None:
                return KVResult(index, _OK, 0, index, 0)
            backend.remove(key)
            if self._key_lease:
                self._detach(key)
            change = Change(index, _CHANGE_DELETE, key, b"", 0, index, prev)
            out.changes.append(change)
            return KVResult(index, _OK, 0, index, prev, False, "", (change,))
        if op == _TXN:
            assert value is not None
            return self._txn(index, value, backend, out)
        if op == _GRANT:
            self._leases[index] = _LeaseState(ttl, index, set())
            self._touched.add(index)
            return KVResult(index, _OK, lease=index, ttl=ttl)
        state = self._leases.get(lease)
        if state is None:
            return _lease_not_found(index, lease)
        if op == _KEEPALIVE:
            state.renewed_index = index
            self._touched.add(lease)
            return KVResult(index, _OK, lease=lease, ttl=state.ttl)
        if op == _EXPIRE and state.renewed_index != expect:
            message = f"lease {lease} was renewed at {state.renewed_index}, after {expect}"
            return KVResult(
                index, CommandStatus.CONDITION_FAILED, message=message, lease=lease, ttl=state.ttl
            )
        changes = self._end_lease(index, lease, state, backend)  # revoke, or expire
        out.changes.extend(changes)
        return KVResult(index, _OK, changes=tuple(changes), lease=lease, ttl=state.ttl)

    # -- leases ------------------------------------------------------------------------

    def _attach(self, key: bytes, lease_id: int, state: _LeaseState) -> None:
        """``key`` (just written) joins ``lease_id``, leaving its previous lease."""
        previous = self._key_lease.get(key)
        if previous == lease_id:
            return
        if previous is not None:
            self._leases[previous].keys.discard(key)
            self._touched.add(previous)
        self._key_lease[key] = lease_id
        state.keys.add(key)
        self._touched.add(lease_id)

    def _detach(self, key: bytes) -> None:
        """``key`` (just written without a lease, or deleted) leaves its lease, if any."""
        lease_id = self._key_lease.pop(key, None)
        if lease_id is not None:
            self._leases[lease_id].keys.discard(key)
            self._touched.add(lease_id)

    def _end_lease(
        self, index: int, lease_id: int, state: _LeaseState, backend: KVBackend
    ) -> list[Change]:
        """Delete the lease and its keys (in key order, all at ``index``)."""
        del self._leases[lease_id]
        self._touched.add(lease_id)
        key_lease = self._key_lease
        changes: list[Change] = []
        for key in sorted(state.keys):
            del key_lease[key]
            old = backend.load(key)
            if old is None:  # cannot happen: a put attaches, a delete detaches
                continue
            backend.remove(key)
            changes.append(Change(index, _CHANGE_DELETE, key, b"", 0, index, old[1]))
        return changes

    # -- transactions ------------------------------------------------------------------

    def _txn(self, index: int, data: bytes, backend: KVBackend, out: AppliedBatch) -> KVResult:
        try:
            txn = Txn.decode(data)
        except InvalidCommandError as exc:
            return KVResult(index, CommandStatus.INVALID, message=str(exc))
        succeeded = all(_holds(compare, backend) for compare in txn.compare)
        ops = txn.success if succeeded else txn.failure
        leases = self._leases
        for op in ops:
            if op.lease and op.lease not in leases:
                return _lease_not_found(index, op.lease)
        results: list[TxnOpResult] = []
        changes: list[Change] = []
        for op in ops:
            kind, key = op.kind, op.key
            if kind == TxnOpKind.PUT:
                old = backend.load(key)
                create, prev = (index, 0) if old is None else old
                backend.store(key, op.value, create, index)
                if op.lease:
                    self._attach(key, op.lease, leases[op.lease])
                elif self._key_lease:
                    self._detach(key)
                changes.append(Change(index, _CHANGE_PUT, key, op.value, create, index, prev))
                results.append(
                    TxnOpResult(kind, create_index=create, mod_index=index, prev_mod_index=prev)
                )
            elif kind == TxnOpKind.DELETE:
                old = backend.load(key)
                if old is None:
                    results.append(TxnOpResult(kind))
                    continue
                backend.remove(key)
                if self._key_lease:
                    self._detach(key)
                changes.append(Change(index, _CHANGE_DELETE, key, b"", 0, index, old[1]))
                results.append(TxnOpResult(kind, found=True, prev_mod_index=old[1]))
            elif kind == TxnOpKind.GET:
                record = backend.read(key)
                kv = None if record is None else KeyValue(key, *record)
                results.append(TxnOpResult(kind, found=kv is not None, kv=kv))
            else:
                kvs, more = backend.scan(op.prefix, op.limit)
                results.append(TxnOpResult(kind, kvs=tuple(kvs), more=more))
        out.changes.extend(changes)
        return KVResult(
            index, _OK, 0, index, 0, False, "", tuple(changes), TxnResult(succeeded, tuple(results))
        )

    # -- sessions ----------------------------------------------------------------

    def _touch(self, session: SessionState) -> None:
        self.sessions[session.client_id] = session
        self.sessions.move_to_end(session.client_id)
        # Only ever lowers: a new session can be the next to expire only if
        # the table was empty; otherwise the front is older. _expire corrects
        # an early value by recomputing it.
        self._next_expiry = min(self._next_expiry, session.last_index + self.session_ttl)

    def _expire(self, index: int, changed: dict[bytes, SessionState | None]) -> None:
        """Drop every session last used ``session_ttl`` or more entries before ``index``."""
        sessions = self.sessions
        while sessions:
            client_id, oldest = next(iter(sessions.items()))
            if oldest.last_index + self.session_ttl > index:
                self._next_expiry = oldest.last_index + self.session_ttl
                return
            del sessions[client_id]
            changed[client_id] = None
        self._next_expiry = _NEVER

    # -- membership --------------------------------------------------------------------

    def _apply_conf_change(self, index: int, data: bytes, out: AppliedBatch) -> ConfChangeResult:
        try:
            change = ConfChange.decode(data)
        except ValueError as exc:
            return ConfChangeResult(index, self.conf_state, None, f"not a conf change: {exc}")
        try:
            conf_state = apply_conf_change(self.conf_state, change)
        except ConfChangeError as exc:
            return ConfChangeResult(index, self.conf_state, change, str(exc))
        self.conf_state = conf_state
        if change.type == ConfChangeType.REMOVE_NODE:
            self.members.pop(change.node_id, None)
        elif change.context:
            # Replacement, not an error, for bad UTF-8: the core applies the change
            # whatever its context says, and the membership must agree with it.
            self.members[change.node_id] = change.context.decode("utf-8", "replace")
        else:
            self.members.setdefault(change.node_id, "")
        out.membership_changed = True
        return ConfChangeResult(index, conf_state, change)


def _holds(compare: Compare, backend: KVBackend) -> bool:
    """A compare on the state before the transaction (no op of it has run yet)."""
    target, op, want = compare.target, compare.op, compare.value
    found: bytes | int
    if target == Target.VALUE:
        record = backend.read(compare.key)
        if record is None:
            return op == CmpOp.NE  # an absent key's value equals nothing
        found = record[0]
    else:
        meta = backend.load(compare.key)
        if target == Target.EXISTS:
            return (meta is not None) == want if op == CmpOp.EQ else (meta is not None) != want
        found = 0 if meta is None else meta[0 if target == Target.CREATE_INDEX else 1]
    return _COMPARE[op](found, want)


def _lease_not_found(index: int, lease: int, create: int = 0, mod: int = 0) -> KVResult:
    return KVResult(
        index,
        CommandStatus.LEASE_NOT_FOUND,
        create,
        mod,
        mod,
        message=f"lease {lease} not found",
        lease=lease,
    )


def _response(op: int, result: KVResult) -> Response:
    """What a session remembers of ``result`` (see :func:`_duplicate`)."""
    if op in (_PUT, _DELETE):
        return (int(result.status), result.create_index, result.mod_index, result.prev_mod_index)
    if op == _TXN:
        succeeded = 1 if result.txn is not None and result.txn.succeeded else 0
        return (int(result.status), succeeded, result.index, 0)
    return (int(result.status), result.lease, result.ttl, 0)


def _duplicate(index: int, op: int, cached: Response) -> KVResult:
    """The answer to a retry, from what :func:`_response` remembered.

    A put or delete remembers ``(status, create, mod, prev)``; a transaction
    ``(status, succeeded, index, 0)`` (its reads are not kept); a lease
    command ``(status, lease, ttl, 0)``.

    A successful delete's ``mod`` is the delete's index. Sessions written
    before that was so hold ``mod`` 0 for a delete (its after-state); their
    duplicate answer keeps the 0, and the node reports the retry entry's index
    for it, as it used to (the first attempt's is not recorded anywhere).
    """
    status, a, b, c = cached
    code = CommandStatus(status)
    if op in (_PUT, _DELETE):
        return KVResult(index, code, a, b, c, duplicate=True)
    if op == _TXN:
        txn = TxnResult(bool(a)) if code == _OK else None
        return KVResult(index, code, 0, b, 0, duplicate=True, txn=txn)
    return KVResult(index, code, duplicate=True, lease=a, ttl=b)
