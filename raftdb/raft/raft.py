"""The Raft state machine of one node: terms, votes, roles and the log.

Theory of operation
-------------------
A :class:`Raft` is driven only by :meth:`Raft.step` (a message, local or from a
peer) and :meth:`Raft.tick` (one unit of logical time). It answers by appending
messages to ``msgs`` / ``msgs_after_save``, changing its log, and recording
read states; :class:`~raftdb.raft.rawnode.RawNode` packs those into a ``Ready``.

Each role has a step function and a tick function, swapped in by the
``become_*`` methods (as etcd's ``becomeFollower`` … ``becomeLeader`` set
``r.step`` / ``r.tick``): followers and candidates tick towards an election,
leaders towards heartbeats and the quorum check. The role step functions live
in ``leader.py`` and ``follower.py``; what every role shares — the term rules
of Figure 2, voting, and the follower-side handling of appends, heartbeats and
snapshots — is here.

Membership changes take effect when their entry is applied (``advance``), one
server at a time; see ``docs/raft.md``.
"""

from __future__ import annotations

from collections.abc import Callable

from raftdb.raft.confchange import ConfChangeError, apply_conf_change
from raftdb.raft.config import Config
from raftdb.raft.follower import step_candidate, step_follower
from raftdb.raft.leader import append_entries, bcast_append, maybe_commit, on_commit, step_leader
from raftdb.raft.log import InvariantError, RaftLog
from raftdb.raft.messages import (
    COMMIT_NOTICE,
    ConfChange,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Snapshot,
)
from raftdb.raft.progress import ProgressTracker
from raftdb.raft.quorum import VoteResult
from raftdb.raft.read_only import ReadOnly, ReadState
from raftdb.raft.roles import CampaignType, Role

__all__ = ["TRANSFER_CONTEXT", "Raft"]

MT = MessageType

#: The vote request context of a leadership transfer: it bypasses the lease check.
TRANSFER_CONTEXT = b"transfer"

# Messages that promise something about this node's durable state (a vote, the
# entries it holds): they may only leave once the Ready that produced them is saved.
_AFTER_SAVE = frozenset({MT.VOTE, MT.VOTE_RESP, MT.APP_RESP})


StepFn = Callable[["Raft", Message], None]


class Raft:
    """One node's Raft state. Use it through :class:`~raftdb.raft.rawnode.RawNode`."""

    def __init__(self, config: Config) -> None:
        config.validate()
        self.id = config.id
        self.config = config
        self.logger = config.logger
        self.rng = config.rng
        self.election_timeout = config.election_tick
        self.heartbeat_timeout = config.heartbeat_tick
        self.check_quorum = config.check_quorum
        self.pre_vote = config.pre_vote
        self.max_msg_size = config.max_size_per_msg
        self.max_uncommitted_size = config.max_uncommitted_entries_size
        self.disable_proposal_forwarding = config.disable_proposal_forwarding

        storage = config.storage
        self.log = RaftLog(storage, config.max_committed_size_per_ready)
        self.tracker = ProgressTracker(config.max_inflight_msgs, config.max_inflight_bytes)

        self.term = 0
        self.vote = 0
        self.lead = 0
        self.role = Role.FOLLOWER
        self.msgs: list[Message] = []
        self.msgs_after_save: list[Message] = []
        self.read_states: list[ReadState] = []
        self.read_only = ReadOnly()
        # Reads that reached a new leader before it committed an entry of its term.
        self.pending_read_index_messages: list[Message] = []
        self.lead_transferee = 0
        # Index of the latest conf change proposed by this leader; another may be
        # proposed only once it is applied (one change at a time).
        self.pending_conf_index = 0
        self.uncommitted_size = 0
        # A leader's commit index moved and the followers are still to hear of
        # it: told at the next Ready (``leader.flush_commit``), by the appends of
        # that Ready where they carry it, else by an append of the commit alone.
        self.commit_unsent = False
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_election_timeout = self.election_timeout
        self.step_fn: StepFn = _not_started
        self.tick_fn: Callable[[], None] = self._tick_election

        hard_state, conf_state = storage.initial_state()
        # Conf changes up to conf_index are reflected in the tracker: the stored
        # conf state is the snapshot's, which may be newer than the compaction point.
        self.conf_index = max(storage.first_index() - 1, storage.snapshot().metadata.index)
        self.tracker.set_conf(conf_state, self.log.last_index() + 1)
        if not hard_state.is_empty():
            self._load_hard_state(hard_state)
        self._replay_conf_changes()
        if config.applied:
            if config.applied > self.log.committed:
                raise InvariantError(
                    f"applied index {config.applied} is beyond the commit index "
                    f"{self.log.committed}: storage and state machine do not belong together"
                )
            if config.applied > self.log.applied:
                self.log.applied_to(config.applied)
        self.become_follower(self.term, 0)

    def _load_hard_state(self, hs: HardState) -> None:
        if hs.commit > self.log.last_index():
            raise InvariantError(
                f"saved commit index {hs.commit} is beyond the last index "
                f"{self.log.last_index()}: the log is corrupt or truncated"
            )
        # A saved commit index below the snapshot's is stale, not wrong: the commit
        # index is volatile state (Figure 2), which a driver may save lazily, and
        # the snapshot is committed by definition.
        self.log.committed = max(hs.commit, self.log.committed)
        self.term = hs.term
        self.vote = hs.vote

    def _replay_conf_changes(self) -> None:
        """Adopt the committed conf changes after the snapshot (a restart)."""
        lo, hi = self.conf_index + 1, self.log.committed + 1
        if lo < hi:
            for entry in self.log.slice(lo, hi, None):
                if entry.type == EntryType.CONF_CHANGE:
                    self.apply_conf_entry(entry)
        self.conf_index = max(self.conf_index, self.log.committed)

    # -- state ---------------------------------------------------------------

    def hard_state(self) -> HardState:
        """The current term, vote and commit index."""
        return HardState(self.term, self.vote, self.log.committed)

    def promotable(self) -> bool:
        """True if this node may campaign: a voter with no snapshot left to apply."""
        return self.id in self.tracker.voters and self.log.unstable.snapshot is None

    def committed_entry_in_current_term(self) -> bool:
        """True once an entry of this term is committed (ReadIndex needs it, §6.4)."""
        return self.log.term_or_zero(self.log.committed) == self.term

    # -- output --------------------------------------------------------------

    def send(self, m: Message) -> None:
        """Queue ``m`` for the next Ready."""
        if m.type in _AFTER_SAVE:
            self.msgs_after_save.append(m)
        else:
            self.msgs.append(m)

    # -- role transitions ------------------------------------------------------

    def _reset(self, term: int) -> None:
        if self.term != term:
            self.term = term
            self.vote = 0
        self.lead = 0
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.reset_randomized_election_timeout()
        self.abort_leader_transfer()
        self.tracker.reset_votes()
        last = self.log.last_index()
        for node_id, pr in self.tracker.progress.items():
            pr.become_probe()
            pr.match = 0
            pr.sent_commit = 0
            pr.next = last + 1
            pr.recent_active = False
            if node_id == self.id:
                # A leader counts only what it has saved as its own copy.
                pr.match = self.log.stable_last_index()
                pr.recent_active = True
        self.pending_conf_index = 0
        self.uncommitted_size = 0
        self.commit_unsent = False
        self.read_only = ReadOnly()
        self.pending_read_index_messages = []

    def reset_randomized_election_timeout(self) -> None:
        """Draw the next election timeout from ``[election, 2 * election)`` ticks."""
        self.randomized_election_timeout = self.election_timeout + self.rng.randrange(
            self.election_timeout
        )

    def become_follower(self, term: int, lead: int) -> None:
        """Follow ``lead`` (0: unknown) in ``term``."""

        self.step_fn = step_follower
        self._reset(term)
        self.tick_fn = self._tick_election
        self.lead = lead
        self.role = Role.FOLLOWER

    def become_pre_candidate(self) -> None:
        """Start a pre-election: ask for votes without changing term or vote."""

        if self.role == Role.LEADER:
            raise InvariantError("a leader cannot become a pre-candidate")
        self.step_fn = step_candidate
        self.tracker.reset_votes()
        self.tick_fn = self._tick_election
        self.lead = 0
        self.role = Role.PRE_CANDIDATE

    def become_candidate(self) -> None:
        """Start an election in a new term, voting for ourselves."""

        if self.role == Role.LEADER:
            raise InvariantError("a leader cannot become a candidate")
        self.step_fn = step_candidate
        self._reset(self.term + 1)
        self.tick_fn = self._tick_election
        self.vote = self.id
        self.role = Role.CANDIDATE

    def become_leader(self) -> None:
        """Lead this term: replicate from a no-op entry of the term (§8)."""

        if self.role == Role.FOLLOWER:
            raise InvariantError("a follower cannot become leader without an election")
        self.step_fn = step_leader
        self._reset(self.term)
        self.tick_fn = self._tick_heartbeat
        self.lead = self.id
        self.role = Role.LEADER
        own = self.tracker.progress.get(self.id)
        if own is not None:
            own.become_replicate()
        # No conf change until the entries of earlier terms are applied (this also
        # closes the single-server change bug of Ongaro's 2015 raft-dev note).
        self.pending_conf_index = self.log.last_index()
        if not append_entries(self, [Entry(0, 0)]):
            raise InvariantError("the empty entry of a new leader must always be accepted")
        self.logger.info("%x became leader at term %d", self.id, self.term)
        bcast_append(self)

    # -- timers ----------------------------------------------------------------

    def tick(self) -> None:
        """Advance logical time by one tick."""
        self.tick_fn()

    def _tick_election(self) -> None:
        self.election_elapsed += 1
        if self.election_elapsed >= self.randomized_election_timeout and self.promotable():
            self.election_elapsed = 0
            self.step(Message(MT.HUP, frm=self.id))

    def _tick_heartbeat(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.election_timeout:
            self.election_elapsed = 0
            if self.check_quorum:
                self.step(Message(MT.CHECK_QUORUM, frm=self.id))
            if self.role == Role.LEADER and self.lead_transferee:
                self.logger.info(
                    "%x: leadership transfer to %x timed out", self.id, self.lead_transferee
                )
                self.abort_leader_transfer()
        if self.role != Role.LEADER:
            return
        if self.heartbeat_elapsed >= self.heartbeat_timeout:
            self.heartbeat_elapsed = 0
            self.step(Message(MT.BEAT, frm=self.id))

    def abort_leader_transfer(self) -> None:
        """Give up a leadership transfer in progress."""
        self.lead_transferee = 0

    # -- step ----------------------------------------------------------------

    def step(self, m: Message) -> None:
        """Handle one message: the term rules common to all roles, then the role's."""
        if m.term == 0:
            pass  # a local message, or a proposal/read forwarded without a term
        elif m.term > self.term:
            if m.type in (MT.VOTE, MT.PRE_VOTE):
                force = m.context == TRANSFER_CONTEXT
                in_lease = (
                    self.check_quorum
                    and self.lead != 0
                    and self.election_elapsed < self.election_timeout
                )
                if not force and in_lease:
                    # We heard from a leader within the minimum election timeout:
                    # ignore a possibly disruptive candidate (thesis §4.2.3).
                    self.logger.debug(
                        "%x ignored %s from %x at term %d: lease with %x",
                        self.id,
                        m.type.name,
                        m.frm,
                        m.term,
                        self.lead,
                    )
                    return
            if m.type == MT.PRE_VOTE or (m.type == MT.PRE_VOTE_RESP and not m.reject):
                # A pre-vote does not change terms; a granted pre-vote answer carries
                # the term we would campaign in, not a newer term we must adopt.
                pass
            elif m.type in (MT.APP, MT.HEARTBEAT, MT.SNAP):
                self.become_follower(m.term, m.frm)
            else:
                self.become_follower(m.term, 0)
        elif m.term < self.term:
            if (self.check_quorum or self.pre_vote) and m.type in (MT.HEARTBEAT, MT.APP):
                # A leader stranded by a partition at a lower term: tell it our term
                # so it steps down (with CheckQuorum or PreVote our term never
                # forces it to by itself).
                self.send(Message(MT.APP_RESP, to=m.frm, frm=self.id, term=self.term))
            elif m.type == MT.PRE_VOTE:
                self.send(
                    Message(MT.PRE_VOTE_RESP, to=m.frm, frm=self.id, term=self.term, reject=True)
                )
            return

        if m.type == MT.HUP:
            self.hup(CampaignType.PRE_ELECTION if self.pre_vote else CampaignType.ELECTION)
        elif m.type in (MT.VOTE, MT.PRE_VOTE):
            self._handle_vote_request(m)
        else:
            self.step_fn(self, m)

    def _handle_vote_request(self, m: Message) -> None:
        can_vote = (
            self.vote == m.frm
            or (self.vote == 0 and self.lead == 0)
            or (m.type == MT.PRE_VOTE and m.term > self.term)
        )
        resp = MT.VOTE_RESP if m.type == MT.VOTE else MT.PRE_VOTE_RESP
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            # A pre-vote answer carries the candidate's term so it can count it.
            self.send(Message(resp, to=m.frm, frm=self.id, term=m.term))
            if m.type == MT.VOTE:
                self.election_elapsed = 0
                self.vote = m.frm
        else:
            self.send(Message(resp, to=m.frm, frm=self.id, term=self.term, reject=True))

    # -- elections -------------------------------------------------------------

    def hup(self, campaign_type: CampaignType) -> None:
        """Start an election of ``campaign_type`` if this node may."""
        if self.role == Role.LEADER:
            return
        if not self.promotable():
            self.logger.warning("%x is not a voter here and cannot campaign", self.id)
            return
        if self._has_unapplied_conf_changes():
            self.logger.warning(
                "%x cannot campaign at term %d: committed conf changes are not applied yet",
                self.id,
                self.term,
            )
            return
        self.logger.info("%x campaigns (%s) at term %d", self.id, campaign_type.value, self.term)
        self.campaign(campaign_type)

    def _has_unapplied_conf_changes(self) -> bool:
        lo = max(self.log.applied, self.conf_index) + 1
        if lo > self.log.committed:
            return False
        return any(
            e.type == EntryType.CONF_CHANGE
            for e in self.log.slice(lo, self.log.committed + 1, None)
        )

    def campaign(self, campaign_type: CampaignType) -> None:
        """Ask every voter for its vote (or pre-vote)."""
        if campaign_type == CampaignType.PRE_ELECTION:
            self.become_pre_candidate()
            vote_type = MT.PRE_VOTE
            term = self.term + 1  # the term we would campaign in
        else:
            self.become_candidate()
            vote_type = MT.VOTE
            term = self.term
        if self.poll(self.id, True) == VoteResult.WON:
            # A single-voter cluster wins at once.
            if campaign_type == CampaignType.PRE_ELECTION:
                self.campaign(CampaignType.ELECTION)
            else:
                self.become_leader()
            return
        context = TRANSFER_CONTEXT if campaign_type == CampaignType.TRANSFER else b""
        last_index, last_term = self.log.last_index(), self.log.last_term()
        for voter in sorted(self.tracker.voters):
            if voter != self.id:
                self.send(
                    Message(
                        vote_type,
                        to=voter,
                        frm=self.id,
                        term=term,
                        log_term=last_term,
                        index=last_index,
                        context=context,
                    )
                )

    def poll(self, node_id: int, granted: bool) -> VoteResult:
        """Count ``node_id``'s answer and return the election's state."""
        self.tracker.record_vote(node_id, granted)
        return self.tracker.tally_votes()[2]

    # -- follower-side handling --------------------------------------------------

    def handle_append_entries(self, m: Message) -> None:
        """The consistency check and append of §5.3, answered with a hint on reject."""
        if m.index < self.log.committed:
            self.send(
                Message(
                    MT.APP_RESP, to=m.frm, frm=self.id, term=self.term, index=self.log.committed
                )
            )
            return
        last_new = self.log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if last_new is not None:
            if m.context == COMMIT_NOTICE and not m.entries:
                return  # accepted: the answer would tell the leader what it knows
            self.send(Message(MT.APP_RESP, to=m.frm, frm=self.id, term=self.term, index=last_new))
            return
        # Reject, pointing the leader at the last entry that could match: the
        # largest index <= m.index whose term is <= m.log_term.
        hint_index = min(m.index, self.log.last_index())
        hint_index, hint_term = self.log.find_conflict_by_term(hint_index, m.log_term)
        self.send(
            Message(
                MT.APP_RESP,
                to=m.frm,
                frm=self.id,
                term=self.term,
                index=m.index,
                reject=True,
                reject_hint=hint_index,
                log_term=hint_term,
            )
        )

    def handle_heartbeat(self, m: Message) -> None:
        """Learn the commit index (the leader sends at most what we match) and answer."""
        self.log.commit_to(m.commit)
        self.send(
            Message(MT.HEARTBEAT_RESP, to=m.frm, frm=self.id, term=self.term, context=m.context)
        )

    def handle_snapshot(self, m: Message) -> None:
        """Install a leader's snapshot if it is news to us, and say where we stand."""
        if m.snapshot is None:
            self.logger.warning("%x: snapshot message from %x without a snapshot", self.id, m.frm)
            return
        meta = m.snapshot.metadata
        if self.restore(m.snapshot):
            self.logger.info(
                "%x restored snapshot %d (term %d) from %x", self.id, meta.index, meta.term, m.frm
            )
            self.send(
                Message(
                    MT.APP_RESP, to=m.frm, frm=self.id, term=self.term, index=self.log.last_index()
                )
            )
        else:
            self.send(
                Message(
                    MT.APP_RESP, to=m.frm, frm=self.id, term=self.term, index=self.log.committed
                )
            )

    def restore(self, snapshot: Snapshot) -> bool:
        """Replace our log and membership by ``snapshot``; False if it tells us nothing new."""
        meta = snapshot.metadata
        if meta.index <= self.log.committed:
            return False
        if self.role != Role.FOLLOWER:
            raise InvariantError(
                f"{self.id:x} in role {self.role.value} asked to restore a snapshot"
            )
        if self.log.match_term(meta.index, meta.term):
            # We have the snapshot's last entry: just learn that it is committed.
            self.log.commit_to(meta.index)
            return False
        self.log.restore(snapshot)
        self.tracker.progress = {}
        self.tracker.set_conf(meta.conf_state, self.log.last_index() + 1)
        self.conf_index = meta.index
        return True

    # -- membership --------------------------------------------------------------

    def apply_conf_entry(self, entry: Entry) -> None:
        """Adopt the conf change in committed ``entry`` (once; invalid ones are ignored)."""
        if entry.index <= self.conf_index:
            return
        self.conf_index = entry.index
        try:
            cc = ConfChange.decode(entry.data)
            conf = apply_conf_change(self.tracker.conf_state(), cc)
        except (ValueError, ConfChangeError) as e:
            self.logger.warning("%x ignores conf change at %d: %s", self.id, entry.index, e)
            return
        self.set_conf(conf)

    def set_conf(self, conf: ConfState) -> None:
        """Switch to membership ``conf``; a leader that lost its vote steps down."""
        self.tracker.set_conf(conf, self.log.last_index() + 1)
        if self.role != Role.LEADER:
            return
        if self.id not in self.tracker.voters:
            self.logger.info("%x was removed or demoted; stepping down", self.id)
            self.become_follower(self.term, 0)
            return
        if self.lead_transferee and self.lead_transferee not in self.tracker.voters:
            self.abort_leader_transfer()

        if maybe_commit(self):
            on_commit(self)
        else:
            # Probe new members at once rather than at the next heartbeat.
            bcast_append(self)

    def on_applied(self, entries: list[Entry]) -> None:
        """The driver has taken ``entries`` (committed, in order) for applying."""
        self.log.applied_to(entries[-1].index)
        if self.role == Role.LEADER and self.uncommitted_size:
            # Counted as append_entries counts it: payload bytes.
            applied_bytes = sum(len(e.data) for e in entries)
            self.uncommitted_size = max(0, self.uncommitted_size - applied_bytes)
        for entry in entries:
            if entry.type == EntryType.CONF_CHANGE:
                self.apply_conf_entry(entry)

    def on_persisted(self) -> None:
        """Entries were saved: a leader now counts its own copy towards commitment."""
        if self.role != Role.LEADER:
            return
        own = self.tracker.progress.get(self.id)
        # maybe_update before maybe_commit: the leader's own saved entries count first.
        if (
            own is not None
            and own.maybe_update(self.log.stable_last_index())
            and maybe_commit(self)
        ):
            on_commit(self)


def _not_started(r: Raft, m: Message) -> None:
    raise InvariantError("step called before the node took a role")
