"""Step functions of followers and of (pre-)candidates."""

from __future__ import annotations

from typing import TYPE_CHECKING

from raftdb.raft.errors import NotLeaderError
from raftdb.raft.messages import Message, MessageType
from raftdb.raft.quorum import VoteResult
from raftdb.raft.read_only import ReadState
from raftdb.raft.roles import CampaignType, Role

if TYPE_CHECKING:
    from raftdb.raft.raft import Raft

__all__ = ["step_candidate", "step_follower"]

MT = MessageType


def step_follower(r: Raft, m: Message) -> None:
    """Handle ``m`` as a follower (or learner)."""
    t = m.type
    if t == MT.APP:
        r.election_elapsed = 0
        r.lead = m.frm
        r.handle_append_entries(m)
    elif t == MT.HEARTBEAT:
        r.election_elapsed = 0
        r.lead = m.frm
        r.handle_heartbeat(m)
    elif t == MT.SNAP:
        r.election_elapsed = 0
        r.lead = m.frm
        r.handle_snapshot(m)
    elif t == MT.PROP:
        if r.lead == 0:
            raise NotLeaderError("no leader is known to forward the proposal to", 0)
        if r.disable_proposal_forwarding:
            raise NotLeaderError("proposal forwarding is disabled", r.lead)
        # Forwarded as our own message: a transport that checks senders would
        # refuse one naming another node (a proposal needs no answer).
        r.send(Message(MT.PROP, to=r.lead, frm=r.id, entries=m.entries))
    elif t == MT.TRANSFER_LEADER:
        if r.lead == 0:
            raise NotLeaderError("no leader is known to forward the transfer to", 0)
        r.send(Message(MT.TRANSFER_LEADER, to=r.lead, frm=r.id, index=m.index))
    elif t == MT.TIMEOUT_NOW:
        r.logger.info("%x got TimeoutNow from %x at term %d", r.id, m.frm, r.term)
        # The leader chose us: campaign at once, skipping pre-vote (it would be
        # refused: everyone still hears from the leader).
        r.hup(CampaignType.TRANSFER)
    elif t == MT.READ_INDEX:
        if r.lead == 0:
            raise NotLeaderError("no leader is known to serve the read", 0)
        if m.frm != r.id:
            # Another node forwarded it to us, a former leader: the answer must go
            # to the requester, which a second hop cannot name. It retries.
            raise NotLeaderError("not the leader; a forwarded read is not forwarded again", r.lead)
        r.send(Message(MT.READ_INDEX, to=r.lead, frm=r.id, context=m.context))
    elif t == MT.READ_INDEX_RESP:
        r.read_states.append(ReadState(m.index, m.context))


def step_candidate(r: Raft, m: Message) -> None:
    """Handle ``m`` as a candidate or pre-candidate."""
    t = m.type
    my_vote_resp = MT.PRE_VOTE_RESP if r.role == Role.PRE_CANDIDATE else MT.VOTE_RESP
    if t == MT.PROP:
        raise NotLeaderError("an election is in progress; no leader to take the proposal", 0)
    if t in (MT.READ_INDEX, MT.TRANSFER_LEADER):
        raise NotLeaderError("an election is in progress; no leader", 0)
    if t == MT.APP:
        r.become_follower(m.term, m.frm)
        r.handle_append_entries(m)
    elif t == MT.HEARTBEAT:
        r.become_follower(m.term, m.frm)
        r.handle_heartbeat(m)
    elif t == MT.SNAP:
        r.become_follower(m.term, m.frm)
        r.handle_snapshot(m)
    elif t == my_vote_resp:
        result = r.poll(m.frm, not m.reject)
        if result == VoteResult.WON:
            if r.role == Role.PRE_CANDIDATE:
                r.campaign(CampaignType.ELECTION)
            else:
                r.become_leader()
        elif result == VoteResult.LOST:
            # A pre-candidate's term is unchanged; a candidate's stays raised.
            r.become_follower(r.term, 0)
