"""RawNode: the core's whole public surface, and the Ready it hands the driver.

Driving a node (etcd's ``rawnode.go`` contract, with raftdb's persistence rules)::

    node = RawNode(Config(id=1, storage=storage, rng=Random(seed)))
    while True:
        feed node.tick() every tick, node.step(msg) for each peer message,
        and node.propose(data) / node.read_index(ctx) for client requests;
        if node.has_ready():
            rd = node.ready()
            send(rd.messages)                                   # may go at once
            storage.save(rd.hard_state, rd.entries, rd.snapshot)  # durable
            send(rd.messages_after_save)                        # only after save
            apply(rd.snapshot, rd.committed_entries); serve(rd.read_states)
            node.advance(rd)

Steps, ticks and proposals may be fed while a Ready is being saved; they go into
the next Ready. A second ``ready()`` before ``advance()`` raises.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from raftdb.raft.config import Config
from raftdb.raft.errors import (
    InvalidMessageError,
    ProposalDroppedError,
    UsageError,
)
from raftdb.raft.leader import flush_commit, flush_reads
from raftdb.raft.messages import (
    LOCAL_MESSAGES,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Snapshot,
)
from raftdb.raft.progress import ProgressState
from raftdb.raft.raft import Raft
from raftdb.raft.read_only import ReadState
from raftdb.raft.roles import Role

__all__ = ["PeerProgress", "RawNode", "Ready", "SoftState", "Status"]

MT = MessageType


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state worth reporting when it changes: who leads, and our role."""

    lead: int
    role: Role


@dataclass(slots=True)
class Ready:
    """Everything the driver must do, in this order, before calling ``advance()``.

    Attributes:
        soft_state: the new leader/role, or None if unchanged. Informational.
        hard_state: the new term/vote/commit to save, or None if unchanged.
        entries: entries to save (an entry replaces any stored one at the same
            index and everything after it).
        snapshot: a leader's snapshot to save and restore the state machine
            from, before applying ``committed_entries``; or None.
        messages: messages that may be sent right away, even before the save
            (a leader's appends go out in parallel with its own disk write,
            Raft thesis §10.2.1).
        messages_after_save: messages that may only be sent once
            ``hard_state``, ``entries`` and ``snapshot`` are durable: vote
            requests and grants, and append acknowledgements.
        committed_entries: entries to apply to the state machine, in order.
            They may include entries of this same Ready: save first.
        read_states: linearizable reads confirmed by the leader: serve each once
            the state machine has applied its ``index``.
        must_sync: True if the save must be fsynced (entries, a snapshot, or a
            new term or vote); a commit-index-only change need not be.
    """

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    messages: list[Message] = field(default_factory=list)
    messages_after_save: list[Message] = field(default_factory=list)
    committed_entries: list[Entry] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)
    must_sync: bool = False


@dataclass(frozen=True, slots=True)
class PeerProgress:
    """The leader's view of one member (see ``progress.py``)."""

    match: int
    next: int
    state: ProgressState
    learner: bool
    recent_active: bool


@dataclass(frozen=True, slots=True)
class Status:
    """A snapshot of a node's state for operators and tests."""

    id: int
    role: Role
    lead: int
    term: int
    vote: int
    commit: int
    applied: int
    first_index: int
    last_index: int
    conf_state: ConfState
    lead_transferee: int
    progress: dict[int, PeerProgress]

    @property
    def is_learner(self) -> bool:
        """True if this node is a non-voting member."""
        return self.id in self.conf_state.learners


class RawNode:
    """A Raft node with no I/O, no clock and no threads: see the module docstring."""

    def __init__(self, config: Config) -> None:
        self._raft = Raft(config)
        r = self._raft
        self._prev_soft = SoftState(r.lead, r.role)
        self._prev_hard = r.hard_state()
        self._pending: Ready | None = None

    # -- inputs ------------------------------------------------------------------

    def bootstrap(self, peers: Sequence[tuple[int, bytes]]) -> None:
        """Start a new cluster of ``peers`` (``(id, context)``; raftdb: the peer URL).

        Appends one committed ADD_VOTER entry per peer at term 1, as etcd does,
        so that the log itself records the initial membership. Every founding
        member must bootstrap with the same peers in the same order.

        Raises:
            UsageError: the storage is not empty, or ``peers`` is.
        """
        r = self._raft
        if r.log.last_index() != 0 or r.term != 0:
            raise UsageError("bootstrap needs an empty storage; this node has state already")
        if not peers:
            raise UsageError("bootstrap needs at least one peer")
        entries = [
            Entry(
                1,
                i + 1,
                EntryType.CONF_CHANGE,
                ConfChange(ConfChangeType.ADD_VOTER, p, ctx).encode(),
            )
            for i, (p, ctx) in enumerate(peers)
        ]
        r.become_follower(1, 0)
        r.log.append(entries)
        # Committed by construction: every founding member has them.
        r.log.committed = len(entries)
        for entry in entries:
            r.apply_conf_entry(entry)

    def tick(self) -> None:
        """Advance logical time by one tick (elections and heartbeats are counted in ticks)."""
        self._raft.tick()

    def campaign(self) -> None:
        """Start an election now (pre-vote first, if enabled)."""
        self._raft.step(Message(MT.HUP, frm=self._raft.id))

    def propose(self, data: bytes) -> None:
        """Propose one entry of application data.

        Raises:
            ProposalDroppedError: no leader to take it, leadership is being
                transferred, or too much is uncommitted. (:class:`NotLeaderError`,
                a subclass, carries the leader hint.) Retry later.
        """
        self.propose_many([data])

    def propose_many(self, datas: Sequence[bytes]) -> None:
        """Propose several entries in one message: all or none are accepted."""
        entries = tuple(Entry(0, 0, EntryType.NORMAL, d) for d in datas)
        self._raft.step(Message(MT.PROP, frm=self._raft.id, entries=entries))

    def propose_conf_change(self, cc: ConfChange) -> None:
        """Propose a membership change; it takes effect when applied.

        Raises:
            ProposalDroppedError: another change is still in progress, or as
                :meth:`propose`.
        """
        entry = Entry(0, 0, EntryType.CONF_CHANGE, cc.encode())
        self._raft.step(Message(MT.PROP, frm=self._raft.id, entries=(entry,)))

    def read_index(self, context: bytes) -> None:
        """Ask for a linearizable read point; a ReadState with ``context`` follows.

        ``context`` must be unique among outstanding reads. If this node or the
        leader loses leadership meanwhile, no ReadState comes: the caller times
        out and retries, as with etcd.

        Raises:
            NotLeaderError: no leader is known.
        """
        self._raft.step(Message(MT.READ_INDEX, frm=self._raft.id, context=context))

    def transfer_leader(self, to: int) -> None:
        """Ask the leader to hand leadership to voter ``to``.

        Raises:
            ProposalDroppedError: ``to`` is not a voter, or no leader is known.
        """
        r = self._raft
        if to not in r.tracker.voters:
            raise ProposalDroppedError(f"node {to} is not a voter and cannot lead")
        r.step(Message(MT.TRANSFER_LEADER, frm=r.id, index=to))

    def step(self, m: Message) -> None:
        """Handle a message from a peer.

        A stale or unexpected message is logged and ignored; a forwarded
        proposal that cannot be taken is dropped (its sender times out).

        Raises:
            InvalidMessageError: ``m`` is local-only or addressed to another node.
        """
        r = self._raft
        if m.type in LOCAL_MESSAGES:
            raise InvalidMessageError(f"{m.type.name} from {m.frm} is a local message type")
        if m.to != r.id:
            raise InvalidMessageError(f"{m.type.name} from {m.frm} is addressed to {m.to}")
        if m.frm <= 0 or m.frm == r.id:
            raise InvalidMessageError(f"{m.type.name} claims to come from {m.frm}")
        try:
            r.step(m)
        except ProposalDroppedError as e:
            r.logger.debug("%x dropped %s from %x: %s", r.id, m.type.name, m.frm, e)

    def report_unreachable(self, node_id: int) -> None:
        """The transport failed to send to ``node_id``: stop streaming to it for now."""
        r = self._raft
        if r.role == Role.LEADER:
            r.step(Message(MT.UNREACHABLE, frm=node_id))

    def report_snapshot(self, node_id: int, ok: bool) -> None:
        """The transport finished sending a snapshot to ``node_id`` (or failed)."""
        r = self._raft
        if r.role == Role.LEADER:
            r.step(Message(MT.SNAP_STATUS, frm=node_id, reject=not ok))

    # -- output ------------------------------------------------------------------

    def has_ready(self) -> bool:
        """True if :meth:`ready` has work; False while a Ready awaits ``advance()``."""
        if self._pending is not None:
            return False
        r = self._raft
        log = r.log
        prev = self._prev_hard
        return bool(
            r.msgs
            or r.msgs_after_save
            or r.commit_unsent
            or log.unstable.entries
            or log.unstable.snapshot is not None
            or log.has_next_committed()
            or r.read_states
            or r.read_only.ready_to_start()
            or r.term != prev.term
            or r.vote != prev.vote
            or log.committed != prev.commit
            or r.lead != self._prev_soft.lead
            or r.role != self._prev_soft.role
        )

    def ready(self) -> Ready:
        """Collect what the driver must save, send and apply now.

        Raises:
            UsageError: the previous Ready was not advanced.
        """
        if self._pending is not None:
            raise UsageError("ready() called again before advance() of the previous Ready")
        r = self._raft
        log = r.log
        if r.role == Role.LEADER:
            flush_commit(r)
            flush_reads(r)
        rd = Ready()
        if r.lead != self._prev_soft.lead or r.role != self._prev_soft.role:
            rd.soft_state = SoftState(r.lead, r.role)
        prev = self._prev_hard
        if r.term != prev.term or r.vote != prev.vote or log.committed != prev.commit:
            rd.hard_state = HardState(r.term, r.vote, log.committed)
            rd.must_sync = r.term != prev.term or r.vote != prev.vote
        unstable = log.unstable
        if unstable.entries:
            rd.entries = list(unstable.entries)
            rd.must_sync = True
        if unstable.snapshot is not None:
            rd.snapshot = unstable.snapshot
            rd.must_sync = True
        rd.committed_entries = log.next_committed()
        if r.msgs:
            rd.messages = r.msgs
            r.msgs = []
        if r.msgs_after_save:
            rd.messages_after_save = r.msgs_after_save
            r.msgs_after_save = []
        if r.read_states:
            rd.read_states = r.read_states
            r.read_states = []
        self._pending = rd
        return rd

    def advance(self, rd: Ready) -> None:
        """Report that ``rd`` was saved, its messages sent and its entries taken.

        Raises:
            UsageError: ``rd`` is not the Ready last returned by :meth:`ready`.
        """
        if rd is not self._pending:
            raise UsageError("advance() must be given the Ready that ready() returned")
        self._pending = None
        r = self._raft
        if rd.soft_state is not None:
            self._prev_soft = rd.soft_state
        if rd.hard_state is not None:
            self._prev_hard = rd.hard_state
        if rd.snapshot is not None:
            r.log.stable_snap_to(rd.snapshot.metadata.index)
        if rd.entries:
            last = rd.entries[-1]
            r.log.stable_to(last.index, last.term)
            r.on_persisted()
        if rd.committed_entries:
            r.on_applied(rd.committed_entries)

    # -- inspection --------------------------------------------------------------

    @property
    def id(self) -> int:
        """This node's id."""
        return self._raft.id

    @property
    def role(self) -> Role:
        """This node's role now."""
        return self._raft.role

    @property
    def lead(self) -> int:
        """The leader this node knows of (0: none)."""
        return self._raft.lead

    @property
    def term(self) -> int:
        """The current term."""
        return self._raft.term

    @property
    def commit_index(self) -> int:
        """The highest log index known to be committed."""
        return self._raft.log.committed

    @property
    def applied_index(self) -> int:
        """The highest index handed out for applying and advanced."""
        return self._raft.log.applied

    @property
    def last_index(self) -> int:
        """The index of the last entry in the log (saved or not)."""
        return self._raft.log.last_index()

    def conf_state(self) -> ConfState:
        """The membership in effect (conf changes take effect when applied)."""
        return self._raft.tracker.conf_state()

    def status(self) -> Status:
        """A consistent snapshot of this node's state."""
        r = self._raft
        progress: dict[int, PeerProgress] = {}
        if r.role == Role.LEADER:
            progress = {
                i: PeerProgress(pr.match, pr.next, pr.state, pr.is_learner, pr.recent_active)
                for i, pr in r.tracker.progress.items()
            }
        return Status(
            id=r.id,
            role=r.role,
            lead=r.lead,
            term=r.term,
            vote=r.vote,
            commit=r.log.committed,
            applied=r.log.applied,
            first_index=r.log.first_index(),
            last_index=r.log.last_index(),
            conf_state=r.tracker.conf_state(),
            lead_transferee=r.lead_transferee,
            progress=progress,
        )

    def force_election_timeout(self, ticks: int) -> None:
        """Set this node's randomized election timeout (tests; etcd's test hook)."""
        self._raft.randomized_election_timeout = ticks
