"""The session table's memory: bounded by the TTL, and compact per session.

A node keeps a session for every ``Idempotency-Key`` write until
``session_ttl`` entries after its last use (docs/reliability.md, "Where a
node's memory goes"). These tests pin the bound on the table and the compact
in-memory form of the one-answer session, which must change nothing on disk.
"""

from __future__ import annotations

import pytest

from raftdb.kv.applier import Applier
from raftdb.kv.commands import OneAnswer as One
from raftdb.kv.commands import (
    SessionState,
    compact_answers,
    decode_session,
    encode_session,
)
from tests.kv.test_commands import DictBackend, put_entry

ANSWER = (0, 7, 9, 7)


def test_one_answer_reads_as_the_dict_it_replaces() -> None:
    one, plain = One(3, ANSWER), {3: ANSWER}
    assert one == plain
    assert plain == one
    assert one != {4: ANSWER}
    assert one != {3: ANSWER, 4: ANSWER}
    assert one[3] == ANSWER
    assert one.get(3) == ANSWER
    assert one.get(4) is None
    assert one.get(4, "x") == "x"
    with pytest.raises(KeyError):
        one[4]
    assert list(one) == [3]
    assert len(one) == 1
    assert 3 in one
    assert 4 not in one
    assert dict(one.items()) == plain
    assert list(one.values()) == [ANSWER]


def test_compact_answers_only_changes_the_one_answer_case() -> None:
    assert isinstance(compact_answers({3: ANSWER}), One)
    empty: dict[int, tuple[int, int, int, int]] = {}
    two = {3: ANSWER, 4: ANSWER}
    assert compact_answers(empty) is empty
    assert compact_answers(two) is two


def test_the_compact_form_encodes_to_the_same_bytes() -> None:
    compact = SessionState(b"client", 42, 3, One(3, ANSWER))
    plain = SessionState(b"client", 42, 3, {3: ANSWER})
    assert encode_session(compact) == encode_session(plain)
    assert compact == plain
    decoded = decode_session(encode_session(plain))
    assert decoded == plain
    assert isinstance(decoded.responses, One)


def test_idempotent_writes_hold_compact_sessions() -> None:
    applier, backend = Applier(), DictBackend()
    applier.apply(
        [put_entry(i, b"k", client_id=b"c%d" % i, seq=1, ack=1) for i in range(1, 51)], backend
    )
    assert len(applier.sessions) == 50
    assert all(isinstance(s.responses, One) for s in applier.sessions.values())
    # A second request on a session makes it two answers: a plain dict again.
    applier.apply([put_entry(51, b"k", client_id=b"c1", seq=2, ack=1)], backend)
    assert applier.sessions[b"c1"].responses == {1: (0, 1, 1, 0), 2: (0, 1, 51, 50)}


def test_the_session_table_stays_within_its_ttl() -> None:
    """Every write a new client: the table never holds more than ``ttl`` sessions."""
    ttl = 100
    applier, backend = Applier(session_ttl=ttl), DictBackend()
    largest = 0
    for start in range(1, 20 * ttl, 37):
        batch = [
            put_entry(i, b"k%d" % (i % 5), client_id=b"client-%d" % i, seq=1, ack=1)
            for i in range(start, start + 37)
        ]
        applier.apply(batch, backend)
        largest = max(largest, len(applier.sessions))
    assert largest == ttl
    assert len(applier.sessions) == ttl
    assert min(s.last_index for s in applier.sessions.values()) > applier.applied_index - ttl
