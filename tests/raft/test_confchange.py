"""Single-server membership arithmetic (``raftdb/raft/confchange.py``)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftdb.raft.confchange import ConfChangeError, apply_conf_change
from raftdb.raft.messages import ConfChange, ConfChangeType, ConfState

ADD_VOTER = ConfChangeType.ADD_VOTER
ADD_LEARNER = ConfChangeType.ADD_LEARNER
REMOVE = ConfChangeType.REMOVE_NODE


@pytest.mark.parametrize(
    ("voters", "learners", "change", "node", "new_voters", "new_learners"),
    [
        ((1,), (), ADD_VOTER, 2, (1, 2), ()),
        ((1, 3), (), ADD_VOTER, 2, (1, 2, 3), ()),  # stays sorted
        ((1,), (), ADD_VOTER, 1, (1,), ()),  # already a voter: no change
        ((1,), (2,), ADD_VOTER, 2, (1, 2), ()),  # promote
        ((1,), (), ADD_LEARNER, 2, (1,), (2,)),
        ((1,), (2,), ADD_LEARNER, 2, (1,), (2,)),  # already a learner
        ((1, 2), (), ADD_LEARNER, 2, (1,), (2,)),  # demote
        ((1, 2), (3,), REMOVE, 2, (1,), (3,)),
        ((1, 2), (3,), REMOVE, 3, (1, 2), ()),
        ((1, 2), (3,), REMOVE, 9, (1, 2), (3,)),  # not a member: no-op
    ],
)
def test_apply_conf_change(
    voters: tuple[int, ...],
    learners: tuple[int, ...],
    change: ConfChangeType,
    node: int,
    new_voters: tuple[int, ...],
    new_learners: tuple[int, ...],
) -> None:
    conf = ConfState(voters=voters, learners=learners)
    after = apply_conf_change(conf, ConfChange(change, node))
    assert after == ConfState(voters=new_voters, learners=new_learners)
    assert conf == ConfState(voters=voters, learners=learners)  # input untouched


@pytest.mark.parametrize(
    ("voters", "learners", "change", "node"),
    [
        ((1,), (), REMOVE, 1),  # the last voter
        ((1,), (2,), REMOVE, 1),  # a learner alone cannot run the cluster
        ((1,), (), ADD_LEARNER, 1),  # demoting the last voter
        ((1,), (), ADD_VOTER, 0),  # id 0 means "none"
        ((1,), (), REMOVE, 0),
        ((1,), (), ADD_LEARNER, -3),
    ],
)
def test_apply_conf_change_refusals(
    voters: tuple[int, ...], learners: tuple[int, ...], change: ConfChangeType, node: int
) -> None:
    with pytest.raises(ConfChangeError):
        apply_conf_change(ConfState(voters=voters, learners=learners), ConfChange(change, node))


def test_conf_change_error_is_a_value_error() -> None:
    # The core catches ValueError for both undecodable and inapplicable changes.
    assert issubclass(ConfChangeError, ValueError)


@st.composite
def confs(draw: st.DrawFn) -> ConfState:
    ids = draw(st.lists(st.integers(1, 8), unique=True, min_size=1, max_size=6))
    n_voters = draw(st.integers(1, len(ids)))
    return ConfState(voters=tuple(sorted(ids[:n_voters])), learners=tuple(sorted(ids[n_voters:])))


@settings(max_examples=300, deadline=None)
@given(
    conf=confs(),
    changes=st.lists(
        st.builds(ConfChange, type=st.sampled_from(ConfChangeType), node_id=st.integers(1, 8)),
        max_size=12,
    ),
)
def test_conf_change_sequences_keep_membership_well_formed(
    conf: ConfState, changes: list[ConfChange]
) -> None:
    for cc in changes:
        try:
            after = apply_conf_change(conf, cc)
        except ConfChangeError:
            # Refused only when the change would leave no voter.
            assert conf.voters == (cc.node_id,)
            assert cc.type != ADD_VOTER
            continue
        assert after.voters == tuple(sorted(set(after.voters)))
        assert after.learners == tuple(sorted(set(after.learners)))
        assert not set(after.voters) & set(after.learners)
        assert after.voters
        node = cc.node_id
        assert (node in after.voters) == (cc.type == ADD_VOTER)
        assert (node in after.learners) == (cc.type == ADD_LEARNER)
        # Nobody else moves.
        others_before = (
            {v for v in conf.voters if v != node},
            {v for v in conf.learners if v != node},
        )
        others_after = (
            {v for v in after.voters if v != node},
            {v for v in after.learners if v != node},
        )
        assert others_before == others_after
        # Applying the same change again changes nothing (a replayed entry is harmless).
        assert apply_conf_change(after, cc) == after
        conf = after
