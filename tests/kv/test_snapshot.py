"""raftdb.kv.snapshot: the chunked snapshot stream and its validation."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftdb.codec import CorruptionError
from raftdb.kv.changes import (
    Change,
    ChangeKind,
    Lease,
    decode_change,
    decode_lease,
    encode_change,
    encode_lease,
)
from raftdb.kv.commands import Command, KeyValue, SessionState
from raftdb.kv.snapshot import (
    MAGIC,
    KVRecord,
    SnapshotFormatError,
    SnapshotInfo,
    SnapshotReader,
    SnapshotStream,
    check_stream,
    decode_info,
    encode_info,
    encode_stream,
)
from raftdb.kv.state_machine import MemoryStateMachine
from raftdb.raft.messages import ConfState, Entry, EntryType, SnapshotMetadata

INFO = SnapshotInfo(500, 7, ConfState((1, 2), (3,)), {1: "http://a", 2: "http://b", 3: ""})
KV: list[KVRecord] = [(b"key%04d" % i, b"v" * (i % 50), i + 1, i + 1) for i in range(300)]
SESSIONS = [
    SessionState(b"alpha", 400, 2, {2: (0, 1, 2, 0)}),
    SessionState(b"beta", 450, 0, {}),
]


def read_everything(chunks: object) -> dict[str, Any]:
    reader = SnapshotReader(chunks)  # type: ignore[arg-type]
    kv = [record for batch in reader.kv_batches() for record in batch]
    sessions = [s for batch in reader.session_batches() for s in batch]
    leases = [lease for batch in reader.lease_batches() for lease in batch]
    history = [change for batch in reader.history_batches() for change in batch]
    reader.finish()
    return {
        "info": reader.info,
        "format": reader.format,
        "kv": kv,
        "sessions": sessions,
        "leases": leases,
        "history": history,
        "floor": reader.history_floor,
    }


def read_all(chunks: object) -> tuple[SnapshotInfo, list[KVRecord], list[SessionState]]:
    """The keys and sessions of a stream that has no leases and no history."""
    found = read_everything(chunks)
    assert (found["leases"], found["history"]) == ([], [])
    return found["info"], found["kv"], found["sessions"]


def test_round_trip() -> None:
    info, kv, sessions = read_all(encode_stream(INFO, KV, SESSIONS, chunk_size=256))
    assert (info, kv, sessions) == (INFO, KV, SESSIONS)
    assert info.metadata() == SnapshotMetadata(500, 7, ConfState((1, 2), (3,)))


def test_empty_state_round_trip() -> None:
    empty = SnapshotInfo(0, 0, ConfState(), {})
    assert read_all(encode_stream(empty, [], [])) == (empty, [], [])


@settings(max_examples=40, deadline=None)
@given(st.integers(64, 5000), st.lists(st.integers(1, 400), max_size=20))
def test_any_chunking_and_any_resplitting(chunk_size: int, cuts: list[int]) -> None:
    chunks = list(encode_stream(INFO, KV, SESSIONS, chunk_size))
    assert all(0 < len(c) <= chunk_size for c in chunks)
    whole = b"".join(chunks)
    pieces, pos = [], 0
    for cut in cuts:
        pieces.append(whole[pos : pos + cut])
        pos += cut
    pieces.append(whole[pos:])
    assert read_all(pieces) == (INFO, KV, SESSIONS)


def test_a_record_larger_than_a_chunk_is_split() -> None:
    big = [(b"big", b"x" * 10_000, 1, 1)]
    chunks = list(encode_stream(INFO, big, [], chunk_size=1000))
    assert max(map(len, chunks)) <= 1000
    assert read_all(chunks)[1] == big


def test_the_stream_is_lazy() -> None:
    pulled = []

    def records() -> Iterator[KVRecord]:
        for record in KV:
            pulled.append(record)
            yield record

    stream = encode_stream(INFO, records(), [], chunk_size=128)
    next(stream)
    assert len(pulled) < 10


def frame(kind: int, payload: bytes) -> bytes:
    return struct.pack(">BII", kind, len(payload), zlib.crc32(payload, kind)) + payload


def header(**changes: object) -> bytes:
    fields = {"fmt": 1, "index": 10, "term": 1, "conf": [[1], []], "members": [[1, "u"]]}
    fields.update(changes)
    return frame(1, msgpack.packb(list(fields.values())))


def kv_frame(*records: list[object]) -> bytes:
    return frame(2, b"".join(msgpack.packb(r) for r in records))


def end(kv: int, sessions: int = 0) -> bytes:
    return frame(4, msgpack.packb([kv, sessions]))


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        (b"NOTASNAP" + header() + end(0), "magic"),
        (MAGIC + kv_frame() + end(0), "does not start with a header"),
        (MAGIC + header(fmt=2) + end(0), "format"),
        (MAGIC + header(index=-1) + end(0), "integers"),
        (MAGIC + header(conf=[[2, 1], []]) + end(0), "sorted"),
        (MAGIC + header(members=[[1, "u"], [1, "v"]]) + end(0), "member"),
        (MAGIC + header() + kv_frame([b"b", b"", 1, 1], [b"a", b"", 1, 1]) + end(2), "order"),
        (MAGIC + header() + kv_frame([b"a", b"", 1, 1], [b"a", b"", 1, 1]) + end(2), "order"),
        (MAGIC + header() + kv_frame([b"a", b"", 2, 1]) + end(1), "indexes"),
        (MAGIC + header() + kv_frame([b"a", b"", 1, 11]) + end(1), "after the snapshot"),
        (MAGIC + header() + kv_frame([b"", b"", 1, 1]) + end(1), "not bytes"),
        (MAGIC + header() + kv_frame([b"a", "text", 1, 1]) + end(1), "not bytes"),
        (MAGIC + header() + kv_frame([b"a", b"", 1]) + end(1), "shape"),
        (MAGIC + header() + kv_frame([b"a", b"", 1, 1]) + end(2), "counts"),
        (MAGIC + header() + kv_frame([b"a", b"", 1, 1]), "truncated"),
        (MAGIC + header() + end(0) + b"x", "follows the end"),
        (MAGIC + header() + frame(9, b"") + end(0), "unknown frame"),
        (MAGIC + header() + frame(3, msgpack.packb([b"s", 11, 0, []])) + end(0, 1), "used after"),
        (MAGIC + header() + frame(3, msgpack.packb([b"s", 1, 0])) + end(0, 1), "shape"),
        (MAGIC + header() + frame(3, b"") + kv_frame() + end(0), "keys after sessions"),
    ],
)
def test_invalid_streams(stream: bytes, message: str) -> None:
    with pytest.raises(SnapshotFormatError, match=message):
        read_all([stream])


def test_a_damaged_frame_fails_its_checksum() -> None:
    whole = bytearray(b"".join(encode_stream(INFO, KV, SESSIONS)))
    whole[len(whole) // 2] ^= 1
    with pytest.raises(SnapshotFormatError, match="checksum"):
        read_all([bytes(whole)])


def test_stream_closes_its_source_once() -> None:
    released = []

    def chunks() -> Iterator[bytes]:
        yield b"a"
        yield b"b"

    stream = SnapshotStream(INFO, chunks(), lambda: released.append(True))
    with stream:
        assert next(iter(stream)) == b"a"
    stream.close()
    assert released == [True]
    assert stream.info is INFO
    exhausted = SnapshotStream(INFO, iter([b"x"]), lambda: released.append(True))
    assert list(exhausted) == [b"x"]
    assert released == [True, True]


def test_info_record_round_trip_and_damage() -> None:
    assert decode_info(encode_info(INFO)) == INFO
    damaged = bytearray(encode_info(INFO))
    damaged[-1] ^= 0xFF
    with pytest.raises(CorruptionError):
        decode_info(bytes(damaged))


# -- format 2: leases and the watch history -------------------------------------------

LEASES = [
    Lease(3, 10, 3, frozenset({b"key0002"})),
    Lease(7, 60, 450, frozenset({b"key0005", b"key0004"})),
    Lease(8, 5, 8, frozenset()),
]
HISTORY = [
    Change(401, ChangeKind.PUT, b"key0400", b"v", 401, 401, 0),
    Change(420, ChangeKind.DELETE, b"gone", b"", 0, 420, 12),
    Change(420, ChangeKind.PUT, b"key0001", b"x", 2, 420, 2),
    Change(500, ChangeKind.PUT, b"key0299", b"", 300, 500, 300),
]


def test_round_trip_with_leases_and_history() -> None:
    chunks = encode_stream(
        INFO, KV, SESSIONS, 128, leases=LEASES, history=HISTORY, history_floor=400
    )
    found = read_everything(list(chunks))
    assert found == {
        "info": INFO,
        "format": 2,
        "kv": KV,
        "sessions": SESSIONS,
        "leases": LEASES,
        "history": HISTORY,
        "floor": 400,
    }
    assert check_stream(encode_stream(INFO, KV, SESSIONS, leases=LEASES, history=HISTORY)) == INFO


def test_a_stream_without_leases_or_history_is_format_2_with_floor_0() -> None:
    found = read_everything(encode_stream(INFO, KV, SESSIONS))
    assert (found["format"], found["floor"]) == (2, 0)


def test_the_floor_must_be_within_the_snapshot() -> None:
    with pytest.raises(ValueError, match="history_floor"):
        list(encode_stream(INFO, [], [], history_floor=INFO.index + 1))


def test_a_reader_that_skips_the_leases_is_stopped() -> None:
    reader = SnapshotReader(encode_stream(INFO, KV, SESSIONS, leases=LEASES))
    for _ in reader.kv_batches():
        pass
    for _ in reader.session_batches():
        pass
    with pytest.raises(SnapshotFormatError, match="leases frame before the end"):
        reader.finish()


def test_format_1_streams_still_restore() -> None:
    """A stream written before leases and the history: no leases, an empty
    history, and the snapshot's index as the floor (what came before is unknown)."""
    stream = (
        MAGIC
        + header()
        + kv_frame([b"a", b"1", 2, 3], [b"b", b"2", 4, 4])
        + frame(3, msgpack.packb([b"s", 9, 0, [[1, 0, 2, 3, 0]]]))
        + end(2, 1)
    )
    found = read_everything([stream])
    assert (found["format"], found["floor"], found["leases"], found["history"]) == (1, 10, [], [])
    assert found["sessions"] == [SessionState(b"s", 9, 0, {1: (0, 2, 3, 0)})]
    machine = MemoryStateMachine()
    info = machine.restore([stream])
    assert info.index == 10
    assert (machine.leases(), machine.history(0, 10)) == ([], (10, []))
    assert machine.get(b"a") == KeyValue(b"a", b"1", 2, 3)
    machine.apply([Entry(1, 11, EntryType.NORMAL, Command.put(b"a", b"new").encode())])
    floor, changes = machine.history(10, 10)
    assert (floor, [c.index for c in changes]) == (10, [11])
    # Its own snapshot is format 2, with the floor carried over.
    assert read_everything(machine.snapshot())["floor"] == 10


def header2(**changes: object) -> bytes:
    fields = {"fmt": 2, "index": 10, "term": 1, "conf": [[1], []], "members": [[1, "u"]]}
    fields["floor"] = 0
    fields.update(changes)
    return frame(1, msgpack.packb(list(fields.values())))


def end2(kv: int = 0, sessions: int = 0, leases: int = 0, history: int = 0) -> bytes:
    return frame(4, msgpack.packb([kv, sessions, leases, history]))


def leases_frame(*records: list[object]) -> bytes:
    return frame(5, b"".join(msgpack.packb(r) for r in records))


def history_frame(*records: list[object]) -> bytes:
    return frame(6, b"".join(msgpack.packb(r) for r in records))


def put_record(index: int, key: bytes = b"k", prev: int = 0) -> list[object]:
    return [index, 1, key, b"v", index, index, prev]


@pytest.mark.parametrize(
    ("stream", "message"),
    [
        (MAGIC + header2(floor=11) + end2(), "history floor"),
        (MAGIC + header2(floor=-1) + end2(), "history floor"),
        (MAGIC + header2(floor=None) + end2(), "history floor"),
        (MAGIC + header(fmt=2) + end2(), "format 2 snapshot has the wrong shape"),
        (MAGIC + header(fmt=True) + end(0), "format"),
        (MAGIC + header2() + end(0), "counts"),
        (MAGIC + header() + end2(), "counts"),
        (MAGIC + header() + leases_frame([1, 5, 1, []]) + end(0), "format 1"),
        (MAGIC + header() + history_frame(put_record(5)) + end(0), "format 1"),
        (MAGIC + header2() + leases_frame([2, 5, 2, []], [1, 5, 1, []]) + end2(leases=2), "order"),
        (MAGIC + header2() + leases_frame([1, 5, 1, []], [1, 5, 1, []]) + end2(leases=2), "order"),
        (MAGIC + header2() + leases_frame([1, 5, 11, []]) + end2(leases=1), "renewed after"),
        (MAGIC + header2() + leases_frame([3, 5, 2, []]) + end2(leases=1), "renewal"),
        (MAGIC + header2() + leases_frame([1, 0, 1, []]) + end2(leases=1), "ttl"),
        (MAGIC + header2() + leases_frame([1, 5, 1, [b"b", b"a"]]) + end2(leases=1), "sorted"),
        (MAGIC + header2() + leases_frame([1, 5, 1, [b"a", b"a"]]) + end2(leases=1), "sorted"),
        (MAGIC + header2() + leases_frame([1, 5, 1, [b""]]) + end2(leases=1), "non-empty"),
        (MAGIC + header2() + leases_frame([1, 5, 1, ["a"]]) + end2(leases=1), "not bytes"),
        (MAGIC + header2() + leases_frame([1, 5, 1]) + end2(leases=1), "shape"),
        (
            MAGIC
            + header2()
            + leases_frame([1, 5, 1, [b"a"]], [2, 5, 2, [b"b"]])
            + leases_frame([3, 5, 3, [b"a"]])
            + end2(leases=3),
            "shares a key",
        ),
        (MAGIC + header2(floor=5) + history_frame(put_record(5)) + end2(history=1), "floor"),
        (
            MAGIC + header2() + history_frame(put_record(6), put_record(5)) + end2(history=2),
            "out of order",
        ),
        (MAGIC + header2() + history_frame(put_record(11)) + end2(history=1), "after the snapshot"),
        (MAGIC + header2() + history_frame([5, 3, b"k", b"", 0, 5, 0]) + end2(history=1), "kind"),
        (MAGIC + header2() + history_frame([5, 1, b"k", b"", 6, 5, 0]) + end2(history=1), "put"),
        (MAGIC + header2() + history_frame([5, 2, b"k", b"v", 0, 5, 1]) + end2(history=1), "value"),
        (MAGIC + header2() + history_frame([5, 1, b"k", b"", 5, 4, 0]) + end2(history=1), "index"),
        (MAGIC + header2() + history_frame([5, 1, b"k", b"", 5, 5, 6]) + end2(history=1), "index"),
        (MAGIC + header2() + history_frame([5, 1, b"", b"", 5, 5, 0]) + end2(history=1), "index"),
        (MAGIC + header2() + history_frame([5, 1, b"k", b""]) + end2(history=1), "shape"),
        (MAGIC + header2() + history_frame(put_record(5)) + end2(), "counts"),
        (
            MAGIC + header2() + leases_frame([1, 5, 1, []]) + frame(3, b"") + end2(leases=1),
            "sessions after leases",
        ),
        (
            MAGIC + header2() + history_frame(put_record(5)) + leases_frame() + end2(history=1),
            "leases after history",
        ),
        (
            MAGIC + header2() + history_frame(put_record(5)) + kv_frame() + end2(history=1),
            "keys after history",
        ),
    ],
)
def test_invalid_format_2_streams(stream: bytes, message: str) -> None:
    with pytest.raises(SnapshotFormatError, match=message):
        read_everything([stream])


def test_restore_refuses_a_bad_stream_and_keeps_the_state() -> None:
    machine = MemoryStateMachine()
    machine.apply([Entry(1, 1, EntryType.NORMAL, Command.lease_grant(5).encode())])
    before = b"".join(machine.snapshot())
    stream = MAGIC + header2() + leases_frame([1, 5, 1, [b"missing"]], [2, 5, 2, [b"missing"]])
    with pytest.raises(SnapshotFormatError, match="shares a key"):
        machine.restore([stream + end2(leases=2)])
    assert b"".join(machine.snapshot()) == before


# -- sealed records ---------------------------------------------------------------------


def test_lease_and_change_records_round_trip() -> None:
    for lease in LEASES:
        assert decode_lease(encode_lease(lease)) == lease
    for change in HISTORY:
        assert decode_change(encode_change(change)) == change
    assert encode_lease(LEASES[1]) == encode_lease(
        Lease(7, 60, 450, frozenset([b"key0004", b"key0005"]))
    )


def test_damaged_records_are_refused() -> None:
    record = bytearray(encode_change(HISTORY[0]))
    record[-1] ^= 1
    with pytest.raises(CorruptionError, match="checksum"):
        decode_change(bytes(record))
    with pytest.raises(CorruptionError, match="expected a lease record"):
        decode_lease(encode_change(HISTORY[0]))
    with pytest.raises(CorruptionError, match="expected a change record"):
        decode_change(encode_lease(LEASES[0]))
    bad_leases: list[object] = [[1, 2, 3], [7, 60, 450, [b"b", b"a"]], "lease", [0, 5, 0, []]]
    for value in bad_leases:
        with pytest.raises(CorruptionError):
            Lease.from_list(value)
    bad_changes: list[object] = [[1, 1, b"k", b"v", 1, 1], [1, 1, b"k", b"v", 1, 1, True], None]
    for value in bad_changes:
        with pytest.raises(CorruptionError):
            Change.from_list(value)
