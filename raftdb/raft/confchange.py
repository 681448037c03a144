"""Membership arithmetic shared by the core and by state machines.

raftdb changes membership one server at a time (Raft thesis §4.1; see
``docs/raft.md`` for why not joint consensus). A conf change takes effect when
its entry is *applied*, on every node in the same order, so the core and the
state machine must agree on exactly what each change does, including which
changes are refused. Both call :func:`apply_conf_change` for that reason.
"""

from __future__ import annotations

from raftdb.raft.messages import ConfChange, ConfChangeType, ConfState

__all__ = ["ConfChangeError", "apply_conf_change"]


class ConfChangeError(ValueError):
    """The change cannot apply to this membership; every node ignores it alike."""


def apply_conf_change(conf: ConfState, cc: ConfChange) -> ConfState:
    """The membership after ``cc``.

    ADD_VOTER adds a voter or promotes a learner; ADD_LEARNER adds a learner or
    demotes a voter; REMOVE_NODE removes a member (removing a non-member is a
    no-op, so a retried removal is harmless).

    Raises:
        ConfChangeError: the node id is 0, or the change would leave no voter.
    """
    if cc.node_id <= 0:
        raise ConfChangeError(f"node id must be positive, got {cc.node_id}")
    voters = set(conf.voters)
    learners = set(conf.learners)
    if cc.type == ConfChangeType.ADD_VOTER:
        learners.discard(cc.node_id)
        voters.add(cc.node_id)
    elif cc.type == ConfChangeType.ADD_LEARNER:
        voters.discard(cc.node_id)
        learners.add(cc.node_id)
    else:
        voters.discard(cc.node_id)
        learners.discard(cc.node_id)
    if not voters:
        raise ConfChangeError(f"{cc.type.name} of node {cc.node_id} would leave no voter")
    return ConfState(voters=tuple(sorted(voters)), learners=tuple(sorted(learners)))
