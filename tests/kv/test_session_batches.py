"""A session's answers within a batch: changed in place, copied between batches.

One session carries every write a node proposes, so a batch holds many
commands of one session. The Applier copies a session's answers once per batch
and changes that copy for the session's later commands (``Applier._remember``).
These tests pin what that must not change: the answers, the session table and
its order, against applying the same entries one per batch (where every
command makes its own copy); and a session taken between batches (as a
snapshot takes the table) stays as it was.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from raftdb.kv.applier import Applier
from raftdb.kv.commands import OneAnswer, SessionState
from raftdb.raft.messages import Entry
from tests.kv.test_commands import DictBackend, put_entry

CLIENTS = (b"node-1", b"node-2", b"idem:k")


@st.composite
def session_entries(draw: st.DrawFn) -> tuple[list[Entry], list[int]]:
    """Puts of up to three sessions: seqs mostly rising, some retried or out of
    order, acks that creep, jump, or fall behind; and where batches end."""
    count = draw(st.integers(1, 60))
    next_seq = dict.fromkeys(CLIENTS, 1)
    acks = dict.fromkeys(CLIENTS, 1)
    entries = []
    for index in range(1, count + 1):
        client = draw(st.sampled_from(CLIENTS))
        kind = draw(st.sampled_from(["next", "next", "next", "retry", "skip"]))
        if kind == "retry" and next_seq[client] > 1:
            seq = draw(st.integers(1, next_seq[client] - 1))
        else:
            seq = next_seq[client] + (draw(st.integers(1, 3)) if kind == "skip" else 0)
            next_seq[client] = seq + 1
        move = draw(st.sampled_from(["stay", "creep", "creep", "jump", "back"]))
        if move == "creep":
            acks[client] = min(acks[client] + 1, seq)
        elif move == "jump":
            acks[client] = seq
        ack = min(seq, max(1, acks[client] - 2) if move == "back" else acks[client])
        key = b"k%d" % draw(st.integers(0, 3))
        entries.append(put_entry(index, key, b"v%d" % index, client_id=client, seq=seq, ack=ack))
    ends = sorted(set(draw(st.lists(st.integers(1, count), max_size=8)) + [count]))
    return entries, ends


def _batches(entries: list[Entry], ends: list[int]) -> list[list[Entry]]:
    starts = [0, *ends[:-1]]
    return [entries[a:b] for a, b in zip(starts, ends, strict=True)]


def _table(applier: Applier) -> list[tuple[bytes, SessionState]]:
    return list(applier.sessions.items())


@settings(max_examples=300, deadline=None)
@given(session_entries(), st.integers(1, 6))
def test_batched_answers_are_those_of_one_entry_a_batch(
    case: tuple[list[Entry], list[int]], max_responses: int
) -> None:
    entries, ends = case
    one, one_backend = Applier(max_responses=max_responses), DictBackend()
    many, many_backend = Applier(max_responses=max_responses), DictBackend()
    done = 0
    for batch in _batches(entries, ends):
        want = [r for entry in batch for r in one.apply([entry], one_backend).results]
        out = many.apply(batch, many_backend)
        done += len(batch)
        assert out.results == want, f"after entry {done}"
        assert _table(many) == _table(one), f"after entry {done}"
        # What the batch hands its plugin to store is the table's own sessions.
        for client_id, session in out.sessions.items():
            assert session is many.sessions.get(client_id)
        for session in many.sessions.values():
            assert isinstance(session.responses, OneAnswer) == (len(session.responses) == 1)
    assert many_backend.data == one_backend.data


def test_a_session_taken_between_batches_does_not_change() -> None:
    """A snapshot holds the sessions of one batch's end while later ones apply."""
    applier, backend = Applier(), DictBackend()
    applier.apply([put_entry(i, b"k", client_id=b"c", seq=i, ack=1) for i in range(1, 6)], backend)
    held = applier.sessions[b"c"]
    answers = dict(held.responses)
    assert sorted(answers) == [1, 2, 3, 4, 5]
    # Later batches of the same session: new answers, and acks that drop old ones.
    applier.apply(
        [put_entry(i, b"k", client_id=b"c", seq=i, ack=i - 2) for i in range(6, 11)], backend
    )
    applier.apply([put_entry(11, b"k", client_id=b"c", seq=11, ack=11)], backend)
    assert dict(held.responses) == answers
    assert held.floor == 1
    now = applier.sessions[b"c"]
    assert now.floor == 11
    assert now.responses == {11: (0, 1, 11, 10)}
    assert isinstance(now.responses, OneAnswer)
