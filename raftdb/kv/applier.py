"""The Applier: the deterministic core every raftdb state machine applies with.

A state machine plugin supplies storage (a :class:`KVBackend` for the length
of one batch) and persistence; the :class:`Applier` decides every outcome
from the entries alone and the state before them, so that all nodes, whatever
their plugin and however their batches are cut, compute the same results.
The semantics themselves (commands, conditions, sessions and their expiry)
are described in :mod:`raftdb.kv`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Protocol

from raftdb.kv.changes import Change, Lease
from raftdb.kv.commands import (
    MAX_SESSION_RESPONSES,
    SESSION_TTL_ENTRIES,
    ApplyResult,
    CommandStatus,
    ConfChangeResult,
    InvalidCommandError,
    KeyValue,
    KVResult,
    NoopResult,
    Op,
    SessionState,
    parse_command,
)
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
        changes: the changes this batch added to the watch history, in order.
        trimmed: the changes it dropped from the front of the history (oldest
            first), so that a plugin that stores them can delete them.
        history_floor: the history floor after the batch (see
            :mod:`raftdb.kv.changes`).
    """

    results: list[ApplyResult]
    sessions: dict[bytes, SessionState | None]
    membership_changed: bool
    leases: dict[int, Lease | None] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    trimmed: list[Change] = field(default_factory=list)
    history_floor: int = 0


class Applier:
    """The deterministic core of every raftdb state machine.

    It owns the small replicated state besides the keys: the applied index
    and term, the membership (conf state and ``{node id: peer URL}``) and the
    session table. The keys themselves stay in the state machine's storage,
    reached through a :class:`KVBackend` for the length of one batch.

    Not thread-safe: one batch at a time, from the state machine's apply thread.
    """

    def __init__(
        self,
        *,
        session_ttl: int = SESSION_TTL_ENTRIES,
        max_responses: int = MAX_SESSION_RESPONSES,
    ) -> None:
        if session_ttl < 1 or max_responses < 1:
            raise ValueError("session_ttl and max_responses must be positive")
        self.session_ttl = session_ttl
        self.max_responses = max_responses
        self.applied_index = 0
        self.applied_term = 0
        self.conf_state = ConfState()
        self.members: dict[int, str] = {}
        # Ordered by last use, oldest first: expiry pops from the front.
        self.sessions: OrderedDict[bytes, SessionState] = OrderedDict()
        self._next_expiry = _NEVER

    def reset(
        self,
        applied_index: int,
        applied_term: int,
        conf_state: ConfState,
        members: Mapping[int, str],
        sessions: Iterable[SessionState],
    ) -> None:
        """Replace all state: at open (from disk) or on restore (from a snapshot)."""
        self.applied_index = applied_index
        self.applied_term = applied_term
        self.conf_state = conf_state
        self.members = dict(members)
        ordered = sorted(sessions, key=lambda s: (s.last_index, s.client_id))
        self.sessions = OrderedDict((s.client_id, s) for s in ordered)
        self._next_expiry = ordered[0].last_index + self.session_ttl if ordered else _NEVER

    def apply(self, entries: Sequence[Entry], backend: KVBackend) -> AppliedBatch:
        """Apply consecutive committed entries; one result per entry.

        Entries at or below :attr:`applied_index` are skipped (their result is
        a :class:`NoopResult` with ``already_applied``).

        Raises:
            UsageError: the entries are not consecutive, or leave a gap after
                :attr:`applied_index`. Nothing was applied.
        """
        out = AppliedBatch([], {}, False)
        if not entries:
            return out
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
                    results.append(self._apply_command(index, entry.data, backend, out.sessions))
                else:
                    results.append(NoopResult(index))
            else:
                results.append(self._apply_conf_change(index, entry.data, out))
            self.applied_index = index
            self.applied_term = entry.term
        return out

    # -- commands --------------------------------------------------------------

    def _apply_command(
        self,
        index: int,
        data: bytes,
        backend: KVBackend,
        changed: dict[bytes, SessionState | None],
    ) -> KVResult:
        try:
            _, op, key, value, expect, client_id, seq, ack = parse_command(data)
        except InvalidCommandError as exc:
            return KVResult(index, CommandStatus.INVALID, message=str(exc))
        if client_id is None:
            return self._execute(index, op, key, value, expect, backend)
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
                status, create, mod, prev = cached
                return KVResult(index, CommandStatus(status), create, mod, prev, duplicate=True)
        result = self._execute(index, op, key, value, expect, backend)
        floor = max(session.floor, ack)
        responses = {s: r for s, r in session.responses.items() if s >= floor}
        responses[seq] = (
            int(result.status),
            result.create_index,
            result.mod_index,
            result.prev_mod_index,
        )
        if len(responses) > self.max_responses:
            for dropped in sorted(responses)[: len(responses) - self.max_responses]:
                del responses[dropped]
                floor = dropped + 1
        self._touch(SessionState(client_id, index, floor, responses))
        changed[client_id] = self.sessions[client_id]
        return result

    def _execute(
        self,
        index: int,
        op: int,
        key: bytes,
        value: bytes | None,
        expect: int | None,
        backend: KVBackend,
    ) -> KVResult:
        old = backend.load(key)
        if old is None:
            create = prev = 0
        else:
            create, prev = old
        if expect is not None and expect != prev:
            return KVResult(index, CommandStatus.CONDITION_FAILED, create, prev, prev)
        if op == Op.PUT:
            assert value is not None  # checked by _parse
            if old is None:
                create = index
            backend.store(key, value, create, index)
            return KVResult(index, CommandStatus.OK, create, index, prev)
        if old is not None:
            backend.remove(key)
        return KVResult(index, CommandStatus.OK, 0, 0, prev)

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
