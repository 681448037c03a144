"""The leader's step function and its replication machinery.

A leader appends proposals to its log, streams them to each follower as fast as
the follower's :class:`~raftdb.raft.progress.Progress` allows, counts matches
to advance the commit index (only by entries of its own term, Figure 8), and
serves ReadIndex requests in batched heartbeat rounds (``read_only.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from raftdb.raft.errors import (
    CompactedError,
    ProposalDroppedError,
    SnapshotTemporarilyUnavailableError,
    UnavailableError,
)
from raftdb.raft.log import InvariantError
from raftdb.raft.messages import COMMIT_NOTICE, Entry, EntryType, Message, MessageType
from raftdb.raft.progress import Progress, ProgressState
from raftdb.raft.quorum import VoteResult, vote_result
from raftdb.raft.read_only import PendingRead, ReadState, decode_round, encode_round

if TYPE_CHECKING:
    from raftdb.raft.raft import Raft

__all__ = [
    "append_entries",
    "bcast_append",
    "bcast_heartbeat",
    "flush_commit",
    "flush_reads",
    "maybe_commit",
    "on_commit",
    "send_append",
    "step_leader",
]

MT = MessageType


def step_leader(r: Raft, m: Message) -> None:
    """Handle ``m`` as the leader."""
    t = m.type
    if t == MT.BEAT:
        bcast_heartbeat(r)
        return
    if t == MT.CHECK_QUORUM:
        if not r.tracker.quorum_active(r.id):
            r.logger.warning("%x stepped down at term %d: no quorum heard from", r.id, r.term)
            r.become_follower(r.term, 0)
            return
        for _, peer in r.tracker.peers(r.id):
            peer.recent_active = False
        return
    if t == MT.PROP:
        _handle_proposal(r, m)
        return
    if t == MT.READ_INDEX:
        _handle_read_index(r, m)
        return
    if t == MT.TRANSFER_LEADER:
        _handle_transfer(r, m)
        return

    pr = r.tracker.progress.get(m.frm)
    if pr is None:
        r.logger.debug("%x: %s from unknown member %x ignored", r.id, t.name, m.frm)
        return
    if t == MT.APP_RESP:
        _handle_append_response(r, m, pr)
    elif t == MT.HEARTBEAT_RESP:
        pr.recent_active = True
        pr.msg_app_flow_paused = False
        if pr.match < r.log.last_index() or pr.state == ProgressState.PROBE:
            send_append(r, m.frm)
        round_no = decode_round(m.context)
        if round_no:
            r.read_only.ack(round_no, m.frm)
            _release_confirmed_reads(r)
    elif t == MT.SNAP_STATUS:
        if pr.state != ProgressState.SNAPSHOT:
            return
        if m.reject:
            pr.pending_snapshot = 0
        pr.become_probe()
        # Wait for the follower's next answer (heartbeat or append) before sending.
        pr.msg_app_flow_paused = True
    elif t == MT.UNREACHABLE and pr.state == ProgressState.REPLICATE:
        pr.become_probe()


def _handle_proposal(r: Raft, m: Message) -> None:
    if not m.entries:
        raise ProposalDroppedError("empty proposal")
    if r.id not in r.tracker.progress:
        raise ProposalDroppedError("this node was removed from the cluster")
    if r.lead_transferee:
        raise ProposalDroppedError(
            f"leadership is being transferred to {r.lead_transferee}; retry shortly"
        )
    conf_index = 0
    for i, entry in enumerate(m.entries):
        if entry.type == EntryType.CONF_CHANGE:
            if conf_index or r.pending_conf_index > r.log.applied:
                raise ProposalDroppedError(
                    "a membership change is already in progress (pending at index "
                    f"{r.pending_conf_index}, applied {r.log.applied}); one at a time"
                )
            conf_index = r.log.last_index() + 1 + i
    if not append_entries(r, m.entries):
        raise ProposalDroppedError(
            f"too many uncommitted entries ({r.uncommitted_size} bytes); retry shortly"
        )
    if conf_index:
        r.pending_conf_index = conf_index
    proposer = r.tracker.progress.get(m.frm) if m.frm != r.id else None
    if proposer is not None:  # forwarded: its client waits for the commit
        proposer.proposed = r.log.last_index()
    bcast_append(r)


def append_entries(r: Raft, proposals: list[Entry] | tuple[Entry, ...]) -> bool:
    """Append ``proposals`` at the end of the log, in this term. False if over the limit.

    The leader's own progress is not advanced here: it counts its copy only once
    the driver has saved it (``Raft.on_persisted``), so a commit never relies on
    an entry this node could still lose.
    """
    first = r.log.last_index() + 1
    term = r.term
    entries = [Entry(term, first + i, e.type, e.data) for i, e in enumerate(proposals)]
    if r.max_uncommitted_size:
        size = sum(len(e.data) for e in entries)
        # An entry larger than the limit is still accepted when nothing is pending,
        # so that it can ever be proposed.
        if r.uncommitted_size and r.uncommitted_size + size > r.max_uncommitted_size:
            return False
        r.uncommitted_size += size
    r.log.append(entries)
    return True


def maybe_commit(r: Raft) -> bool:
    """Advance the commit index to what a quorum has, if it is of this term."""
    return r.log.maybe_commit(r.tracker.committed(), r.term)


def on_commit(r: Raft) -> None:
    """The commit index moved: release waiting reads, and tell the followers at
    the next Ready (:func:`flush_commit`)."""
    if r.pending_read_index_messages and r.committed_entry_in_current_term():
        waiting, r.pending_read_index_messages = r.pending_read_index_messages, []
        for m in waiting:
            _register_read(r, m)
    r.commit_unsent = True


def flush_commit(r: Raft) -> None:
    """Send the commit index to each follower not yet told of it (``RawNode.ready``).

    Deferred from :func:`on_commit` to the Ready, where messages leave anyway:
    when proposals came in meanwhile, their appends carry the new index, and
    an append of the commit alone (and its answer) would repeat them. Under
    load that was most of them. A follower was told once an append or
    heartbeat took it that index (``Progress.sent_commit``).

    What goes to a follower that holds everything and waits on none of its
    own proposals is a commit notice (:data:`COMMIT_NOTICE`): not answered,
    and the driver may hold it back for the next append to carry.
    """
    if not r.commit_unsent:
        return
    r.commit_unsent = False
    committed = r.log.committed
    for node_id, pr in r.tracker.peers(r.id):
        if pr.sent_commit < committed:
            send_append(r, node_id, notice=not pr.waits_for_commit())


def bcast_append(r: Raft, send_if_empty: bool = True) -> None:
    """Send every other member what it lacks (or just the commit index)."""
    for node_id, _ in r.tracker.peers(r.id):
        send_append(r, node_id, send_if_empty)


def send_append(r: Raft, to: int, send_if_empty: bool = True, notice: bool = False) -> bool:
    """Send ``to`` the entries from its ``next`` (or a snapshot). False if nothing was sent.

    With ``notice``, an append with no entries to a member in REPLICATE that
    matches everything before it is marked a commit notice (``flush_commit``).
    """
    pr = r.tracker.progress[to]
    if pr.is_paused():
        return False
    prev_index = pr.next - 1
    try:
        prev_term = r.log.term(prev_index)
        entries = r.log.entries_from(pr.next, r.max_msg_size)
    except CompactedError:
        return _send_snapshot(r, to, pr)
    except UnavailableError as e:
        raise InvariantError(f"progress of {to} is past the log: {pr!r}") from e
    if not entries and not send_if_empty:
        return False
    context = b""
    if notice and not entries and pr.match == prev_index and pr.state == ProgressState.REPLICATE:
        context = COMMIT_NOTICE
    r.send(
        Message(
            MT.APP,
            to=to,
            frm=r.id,
            term=r.term,
            log_term=prev_term,
            index=prev_index,
            entries=tuple(entries),
            commit=r.log.committed,
            context=context,
        )
    )
    if entries:
        pr.sent_entries(len(entries), sum(len(e.data) for e in entries))
    else:
        pr.sent_entries(0, 0)
    # The follower commits at most up to the last entry this append covers.
    pr.sent_commit = max(pr.sent_commit, min(r.log.committed, prev_index + len(entries)))
    return True


def _send_snapshot(r: Raft, to: int, pr: Progress) -> bool:
    if not pr.recent_active:
        return False  # do not ship a snapshot to a node that may be gone
    try:
        snapshot = r.log.snapshot()
    except SnapshotTemporarilyUnavailableError:
        return False
    if snapshot.is_empty():
        raise InvariantError(f"{to} needs compacted entries but there is no snapshot")
    pr.become_snapshot(snapshot.metadata.index)
    r.logger.info(
        "%x sends snapshot %d to %x (match %d)", r.id, snapshot.metadata.index, to, pr.match
    )
    r.send(Message(MT.SNAP, to=to, frm=r.id, term=r.term, snapshot=snapshot))
    return True


def bcast_heartbeat(r: Raft) -> None:
    """Heartbeat every other member, carrying the newest read round if one waits."""
    _bcast_heartbeat(r, r.read_only.current_context())


def _bcast_heartbeat(r: Raft, context: bytes) -> None:
    committed = r.log.committed
    for node_id, pr in r.tracker.peers(r.id):
        # Never tell a follower of a commit index beyond what it is known to match.
        commit = min(pr.match, committed)
        pr.sent_commit = max(pr.sent_commit, commit)
        r.send(
            Message(
                MT.HEARTBEAT,
                to=node_id,
                frm=r.id,
                term=r.term,
                commit=commit,
                context=context,
            )
        )


def _handle_append_response(r: Raft, m: Message, pr: Progress) -> None:
    pr.recent_active = True
    if m.reject:
        next_probe = m.reject_hint
        if m.log_term > 0:
            # Skip every entry of a term the follower does not have past its hint.
            next_probe = r.log.find_conflict_by_term(m.reject_hint, m.log_term)[0]
        if pr.maybe_decrease_to(m.index, next_probe):
            if pr.state == ProgressState.REPLICATE:
                pr.become_probe()
            send_append(r, m.frm)
        return

    if not (pr.maybe_update(m.index) or (pr.match == m.index and pr.state == ProgressState.PROBE)):
        return
    if pr.state == ProgressState.PROBE:
        pr.become_replicate()
    elif pr.state == ProgressState.SNAPSHOT:
        if pr.match + 1 >= r.log.first_index():
            # The snapshot (or appends) brought it to where our log starts.
            pr.become_probe()
            pr.become_replicate()
    else:
        pr.inflights.free_le(m.index)
        pr.msg_app_flow_paused = pr.inflights.full()

    if maybe_commit(r):
        on_commit(r)
    elif pr.can_bump_commit(r.log.committed):
        # A straggler caught up without moving the commit index: tell it the
        # index at the next Ready, unless an append of that Ready does.
        r.commit_unsent = True
    # The window may have opened: send what fits.
    while send_append(r, m.frm, send_if_empty=False):
        pass
    if m.frm == r.lead_transferee and pr.match == r.log.last_index():
        r.logger.info("%x: transferee %x caught up; sending TimeoutNow", r.id, m.frm)
        r.send(Message(MT.TIMEOUT_NOW, to=m.frm, frm=r.id, term=r.term))


def _handle_transfer(r: Raft, m: Message) -> None:
    # The target is in ``index``; ``frm`` is whoever asked. (etcd names the target
    # in From, which a transport that checks senders must refuse when forwarded.)
    target = m.index
    pr = r.tracker.progress.get(target)
    if pr is None:
        r.logger.info("%x ignores transfer to non-member %x", r.id, target)
        return
    if pr.is_learner:
        r.logger.info("%x ignores transfer to learner %x", r.id, target)
        return
    if r.lead_transferee:
        if r.lead_transferee == target:
            return
        r.abort_leader_transfer()
    if target == r.id:
        return
    # The transfer must finish within an election timeout, or it is aborted.
    r.election_elapsed = 0
    r.lead_transferee = target
    if pr.match == r.log.last_index():
        r.send(Message(MT.TIMEOUT_NOW, to=target, frm=r.id, term=r.term))
    else:
        send_append(r, target)


# -- ReadIndex -------------------------------------------------------------------


def _handle_read_index(r: Raft, m: Message) -> None:
    if not r.committed_entry_in_current_term():
        # Our commit index may lag the cluster's until an entry of this term
        # commits (§6.4 step 1): hold the read until then.
        r.pending_read_index_messages.append(m)
        return
    _register_read(r, m)


def _register_read(r: Raft, m: Message) -> None:
    read = PendingRead(m.context, m.frm, r.log.committed)
    if r.tracker.voters == {r.id}:
        _release_read(r, read)  # a single voter is its own quorum
    else:
        r.read_only.add(read)


def flush_reads(r: Raft) -> None:
    """Start one heartbeat round for every read queued, unless a round is in flight
    (its confirmation starts the next: see ``read_only.py``)."""
    if r.read_only.ready_to_start():
        round_no = r.read_only.start_round(r.id)
        if r.tracker.voters == {r.id}:
            _release_confirmed_reads(r)
        else:
            _bcast_heartbeat(r, encode_round(round_no))


def _release_confirmed_reads(r: Raft) -> None:
    voters = r.tracker.voters

    def is_quorum(acks: set[int]) -> bool:
        return vote_result(voters, dict.fromkeys(acks, True)) == VoteResult.WON

    for read in r.read_only.release(is_quorum):
        _release_read(r, read)


def _release_read(r: Raft, read: PendingRead) -> None:
    if read.requester in (0, r.id):
        r.read_states.append(ReadState(read.index, read.context))
    else:
        r.send(
            Message(
                MT.READ_INDEX_RESP,
                to=read.requester,
                frm=r.id,
                term=r.term,
                index=read.index,
                context=read.context,
            )
        )
