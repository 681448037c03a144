"""raftdb.kv.snapshot: the chunked snapshot stream and its validation."""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftdb.codec import CorruptionError
from raftdb.kv.commands import SessionState
from raftdb.kv.snapshot import (
    MAGIC,
    KVRecord,
    SnapshotFormatError,
    SnapshotInfo,
    SnapshotReader,
    SnapshotStream,
    decode_info,
    encode_info,
    encode_stream,
)
from raftdb.raft.messages import ConfState, SnapshotMetadata

INFO = SnapshotInfo(500, 7, ConfState((1, 2), (3,)), {1: "http://a", 2: "http://b", 3: ""})
KV: list[KVRecord] = [(b"key%04d" % i, b"v" * (i % 50), i + 1, i + 1) for i in range(300)]
SESSIONS = [
    SessionState(b"alpha", 400, 2, {2: (0, 1, 2, 0)}),
    SessionState(b"beta", 450, 0, {}),
]


def read_all(chunks: object) -> tuple[SnapshotInfo, list[KVRecord], list[SessionState]]:
    reader = SnapshotReader(chunks)  # type: ignore[arg-type]
    kv = [record for batch in reader.kv_batches() for record in batch]
    sessions = [s for batch in reader.session_batches() for s in batch]
    reader.finish()
    return reader.info, kv, sessions


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
