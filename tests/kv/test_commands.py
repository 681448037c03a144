"""raftdb.kv and raftdb.kv.applier: the command format and its deterministic semantics."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftdb.codec import CorruptionError
from raftdb.kv.applier import Applier
from raftdb.kv.changes import Change, ChangeKind
from raftdb.kv.commands import (
    MAX_CLIENT_ID_BYTES,
    Command,
    CommandStatus,
    ConfChangeResult,
    InvalidCommandError,
    KeyValue,
    KVResult,
    NewerCommandFormatError,
    NoopResult,
    Op,
    SessionState,
    decode_session,
    encode_session,
)
from raftdb.raft.confchange import ConfChangeError, apply_conf_change
from raftdb.raft.errors import UsageError
from raftdb.raft.messages import ConfChange, ConfChangeType, ConfState, Entry, EntryType


class DictBackend:
    def __init__(self) -> None:
        self.data: dict[bytes, tuple[bytes, int, int]] = {}

    def load(self, key: bytes) -> tuple[int, int] | None:
        record = self.data.get(key)
        return None if record is None else (record[1], record[2])

    def store(self, key: bytes, value: bytes, create_index: int, mod_index: int) -> None:
        self.data[key] = (value, create_index, mod_index)

    def remove(self, key: bytes) -> None:
        del self.data[key]

    def read(self, key: bytes) -> tuple[bytes, int, int] | None:
        return self.data.get(key)

    def scan(self, prefix: bytes, limit: int) -> tuple[list[KeyValue], bool]:
        keys = sorted(k for k in self.data if k.startswith(prefix))
        return [KeyValue(k, *self.data[k]) for k in keys[:limit]], len(keys) > limit


PUT = ChangeKind.PUT


def put_entry(index: int, key: bytes, value: bytes = b"v", **kw: object) -> Entry:
    return Entry(1, index, EntryType.NORMAL, Command.put(key, value, **kw).encode())  # type: ignore[arg-type]


# -- the command format ----------------------------------------------------------------

commands = st.one_of(
    st.builds(
        Command.put,
        st.binary(min_size=1, max_size=20),
        st.binary(max_size=50),
        if_mod=st.one_of(st.none(), st.integers(1, 2**63)),
    ),
    st.builds(
        Command.delete,
        st.binary(min_size=1, max_size=20),
        if_mod=st.one_of(st.none(), st.integers(1, 2**63)),
    ),
    st.builds(
        Command.put,
        st.binary(min_size=1, max_size=20),
        st.binary(max_size=50),
        create_only=st.just(True),
        client_id=st.binary(min_size=1, max_size=MAX_CLIENT_ID_BYTES),
        seq=st.integers(5, 2**40),
        ack=st.integers(0, 5),
    ),
)


@settings(deadline=None)  # a shared 2-core machine: no per-example timing
@given(commands)
def test_command_round_trip(command: Command) -> None:
    assert Command.decode(command.encode()) == command


@settings(deadline=None)  # a shared 2-core machine: no per-example timing
@given(st.binary(max_size=64))
def test_arbitrary_bytes_decode_or_raise_invalid(data: bytes) -> None:
    with contextlib.suppress(InvalidCommandError, NewerCommandFormatError):
        Command.decode(data)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ([1, 1, b"", b"v", None, None, 0, 0], "non-empty"),
        ([1, 1, "k", b"v", None, None, 0, 0], "non-empty bytes"),
        ([1, 1, b"k", "v", None, None, 0, 0], "bytes value"),
        ([1, 2, b"k", b"v", None, None, 0, 0], "no value"),
        ([1, 3, b"k", None, None, None, 0, 0], "unknown operation"),
        ([2, 1, b"k", b"v", None, None, 0, 0], "format"),
        ([True, 1, b"k", b"v", None, None, 0, 0], "format"),
        ([1, 1, b"k", b"v", -1, None, 0, 0], "expect"),
        ([1, 1, b"k", b"v", True, None, 0, 0], "expect"),
        ([1, 1, b"k", b"v", None, None, 3, 0], "need a client"),
        ([1, 1, b"k", b"v", None, b"", 1, 0], "client id"),
        ([1, 1, b"k", b"v", None, b"c" * 129, 1, 0], "client id"),
        ([1, 1, b"k", b"v", None, b"c", 0, 0], "seq"),
        ([1, 1, b"k", b"v", None, b"c", 2, 3], "ack"),
        ([1, 1, b"k", b"v", None], "8 or 10 fields"),
    ],
)
def test_invalid_commands(fields: list[object], message: str) -> None:
    with pytest.raises(InvalidCommandError, match=message):
        Command.decode(msgpack.packb(fields, use_bin_type=True))


def test_constructors_check_their_arguments() -> None:
    with pytest.raises(InvalidCommandError):
        Command.put(b"k", b"v", if_mod=3, create_only=True)
    with pytest.raises(InvalidCommandError):
        Command.put(b"k", b"v", if_mod=0)
    with pytest.raises(InvalidCommandError):
        Command.delete(b"k", if_mod=0)
    with pytest.raises(InvalidCommandError):
        Command.put(b"", b"v")
    assert Command.put(b"k", b"v", create_only=True).expect == 0
    assert Command.delete(b"k").op == Op.DELETE


# -- the applier -----------------------------------------------------------------------


def test_results_and_indexes() -> None:
    applier, backend = Applier(), DictBackend()
    out = applier.apply(
        [
            Entry(1, 1),
            put_entry(2, b"a"),
            put_entry(3, b"a", if_mod=2),
            put_entry(4, b"a", if_mod=2),
            Entry(1, 5, EntryType.NORMAL, b"junk"),
        ],
        backend,
    )
    assert out.results == [
        NoopResult(1),
        KVResult(2, CommandStatus.OK, 2, 2, 0, changes=(Change(2, PUT, b"a", b"v", 2, 2, 0),)),
        KVResult(3, CommandStatus.OK, 2, 3, 2, changes=(Change(3, PUT, b"a", b"v", 2, 3, 2),)),
        KVResult(4, CommandStatus.CONDITION_FAILED, 2, 3, 3),
        KVResult(5, CommandStatus.INVALID, message=out.results[4].message),  # type: ignore[union-attr]
    ]
    assert "msgpack" in out.results[4].message  # type: ignore[union-attr]
    assert (applier.applied_index, applier.applied_term) == (5, 1)
    assert backend.data == {b"a": (b"v", 2, 3)}


def test_refused_batches_change_nothing() -> None:
    applier, backend = Applier(), DictBackend()
    applier.apply([put_entry(1, b"a")], backend)
    with pytest.raises(UsageError, match="applied index is 1"):
        applier.apply([put_entry(3, b"b")], backend)
    with pytest.raises(UsageError, match="follows"):
        applier.apply([put_entry(2, b"b"), put_entry(4, b"c")], backend)
    assert applier.applied_index == 1
    assert backend.data == {b"a": (b"v", 1, 1)}


def test_session_expires_exactly_ttl_entries_after_its_last_use() -> None:
    applier, backend = Applier(session_ttl=5), DictBackend()
    first = put_entry(1, b"k", client_id=b"c", seq=1)
    out = applier.apply([first], backend)
    assert set(out.sessions) == {b"c"}
    # Entry 5 is 4 entries after the last use: still there.
    out = applier.apply([Entry(1, i) for i in range(2, 6)], backend)
    assert out.sessions == {}
    assert b"c" in applier.sessions
    # Entry 6 makes it 5 entries old: gone before entry 6 applies.
    out = applier.apply([Entry(1, 6, EntryType.NORMAL, first.data)], backend)
    assert out.sessions[b"c"] is not None  # re-created by the command at 6
    result = out.results[0]
    assert isinstance(result, KVResult)
    assert not result.duplicate
    assert result.mod_index == 6


def delete_entry(index: int, key: bytes, **kw: object) -> Entry:
    return Entry(1, index, EntryType.NORMAL, Command.delete(key, **kw).encode())  # type: ignore[arg-type]


def test_a_retried_delete_is_answered_with_the_first_attempts_index() -> None:
    """A delete's result carries its own index as ``mod_index`` (of a key or of
    nothing), so the session's answer to a retry names the first attempt; a
    session record from before that (``mod`` 0 for a delete) still reads, and
    its answer keeps the 0 (the node then reports the retry's index)."""
    applier, backend = Applier(), DictBackend()
    session = {"client_id": b"c", "seq": 1, "ack": 1}
    other = {"client_id": b"d", "seq": 1, "ack": 1}
    out = applier.apply(
        [
            put_entry(1, b"k"),
            delete_entry(2, b"k", **session),
            delete_entry(3, b"none", **other),
            put_entry(4, b"k"),
            delete_entry(5, b"k", **session),
            delete_entry(6, b"none", **other),
        ],
        backend,
    )
    deleted, nothing, _, retry, again = out.results[1:]
    assert deleted == KVResult(
        2, CommandStatus.OK, 0, 2, 1, changes=(Change(2, ChangeKind.DELETE, b"k", b"", 0, 2, 1),)
    )
    assert nothing == KVResult(3, CommandStatus.OK, 0, 3, 0)
    assert retry == KVResult(5, CommandStatus.OK, 0, 2, 1, duplicate=True)
    assert again == KVResult(6, CommandStatus.OK, 0, 3, 0, duplicate=True)
    assert backend.data == {b"k": (b"v", 4, 4)}  # the retry deleted nothing
    stored = applier.sessions[b"c"]
    assert decode_session(encode_session(stored)).responses == {1: (0, 0, 2, 1)}

    # A session stored before deletes remembered their index: (OK, 0, 0, prev).
    old = SessionState(b"old", 6, 1, {1: (int(CommandStatus.OK), 0, 0, 4)})
    assert decode_session(encode_session(old)) == old
    applier.reset(6, 1, ConfState(), {}, [old])
    out = applier.apply([delete_entry(7, b"k", client_id=b"old", seq=1, ack=1)], backend)
    assert out.results == [KVResult(7, CommandStatus.OK, 0, 0, 4, duplicate=True)]


def test_expiry_does_not_depend_on_batching() -> None:
    entries = []
    for i in range(1, 200):
        if i % 7 == 0:
            entries.append(put_entry(i, b"k%d" % (i % 5), client_id=b"c%d" % (i % 3), seq=i))
        elif i % 11 == 0:
            retry = next(e for e in reversed(entries) if e.data and b"c" in e.data)
            entries.append(Entry(1, i, EntryType.NORMAL, retry.data))
        else:
            entries.append(Entry(1, i))
    one = Applier(session_ttl=9)
    one_backend = DictBackend()
    whole = one.apply(entries, one_backend).results
    split = Applier(session_ttl=9)
    split_backend = DictBackend()
    pieces = []
    for start in range(0, len(entries), 4):
        pieces += split.apply(entries[start : start + 4], split_backend).results
    assert whole == pieces
    assert one.sessions == split.sessions
    assert list(one.sessions) == list(split.sessions)
    assert one_backend.data == split_backend.data


def test_expired_sessions_are_reported_for_deletion() -> None:
    applier, backend = Applier(session_ttl=3), DictBackend()
    applier.apply([put_entry(1, b"k", client_id=b"c", seq=1)], backend)
    out = applier.apply([Entry(1, 2), Entry(1, 3), Entry(1, 4)], backend)
    assert out.sessions == {b"c": None}
    assert not applier.sessions


@st.composite
def conf_change_entries(draw: st.DrawFn) -> list[Entry]:
    changes = draw(
        st.lists(
            st.builds(
                ConfChange,
                st.sampled_from(list(ConfChangeType)),
                st.integers(0, 5),
                st.sampled_from([b"", b"http://a", b"http://b"]),
            ),
            max_size=30,
        )
    )
    return [Entry(1, i + 1, EntryType.CONF_CHANGE, c.encode()) for i, c in enumerate(changes)]


@settings(deadline=None)  # a shared 2-core machine: no per-example timing
@given(conf_change_entries())
def test_membership_agrees_with_apply_conf_change(entries: list[Entry]) -> None:
    applier = Applier()
    results = applier.apply(entries, DictBackend()).results
    conf = ConfState()
    for entry, result in zip(entries, results, strict=True):
        assert isinstance(result, ConfChangeResult)
        try:
            conf = apply_conf_change(conf, ConfChange.decode(entry.data))
        except ConfChangeError:
            assert result.error
        else:
            assert result.ok
        assert result.conf_state == conf
    assert applier.conf_state == conf
    assert set(applier.members) == set(conf.ids())


def test_session_state_round_trip_and_damage() -> None:
    session = SessionState(b"client", 42, 3, {3: (0, 1, 2, 0), 5: (1, 1, 2, 2)})
    assert decode_session(encode_session(session)) == session
    assert SessionState.from_list(session.to_list()) == session
    for bad in (
        [b"c", 1, 0],
        [b"c", 1, 0, [[1, 9, 0, 0, 0]]],
        [b"c", 1, 0, [[1, 0, 0, 0]]],
        ["c", 1, 0, []],
        [b"c", -1, 0, []],
    ):
        with pytest.raises(CorruptionError):
            SessionState.from_list(bad)
