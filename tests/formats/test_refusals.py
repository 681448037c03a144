"""A format this code cannot read is refused with one clear line, never misread.

- A data directory whose marker names another format version (edited on a copy
  of the committed fixture): the server exits at start with one line naming the
  file, the version found and the versions this code reads.
- A peer speaking another protocol version, whatever shape its HELLO takes:
  refused at the handshake, both ends logging one line with both versions.
- A committed command of a newer format: the node stops rather than skip it
  (which would make its state machine diverge from the members that read it).
- A snapshot stream of a newer format: refused whole.

See docs/formats.md for the inventory these lines belong to.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import sqlite3
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import msgpack
import plyvel
import pytest

from raftdb.kv.commands import NewerCommandFormatError
from raftdb.kv.snapshot import MAGIC, SnapshotFormatError, check_stream
from raftdb.kv.state_machine import MemoryStateMachine
from raftdb.raft.messages import Entry, EntryType, HardState
from raftdb.testing.ports import free_ports
from raftdb.transport.frames import (
    FRAME_HEADER,
    PROTOCOL_VERSION,
    FrameKind,
    decode_frame,
    frame,
    parse_frame_header,
)
from raftdb_leveldb.storage import LevelDBStorage
from tests.transport.support import Node, eventually, heartbeat, run

FIXTURE = Path(__file__).parent / "fixtures" / "981ca8c"
START_TIMEOUT = 30.0
_FRAME = struct.Struct(">BII")  # a snapshot stream frame's head (raftdb.kv.snapshot)


def _leveldb_marker(path: Path, marker: bytes) -> None:
    db = plyvel.DB(str(path))
    try:
        db.put(b"m/format", marker)
    finally:
        db.close()


def _sqlite_version(path: Path, version: int) -> None:
    conn = sqlite3.connect(path / "raft.sqlite3")
    try:
        conn.execute(f"PRAGMA user_version={version}")
        conn.commit()
    finally:
        conn.close()


EDITS: dict[str, tuple[str, Callable[[Path], None], str]] = {
    "leveldb-storage": (
        "leveldb",
        lambda d: _leveldb_marker(d / "log", b"raftdb.leveldb.storage/2"),
        "CorruptionError: LevelDB storage {d}/log: format raftdb.leveldb.storage/2 is not one "
        "this raftdb reads (raftdb.leveldb.storage/1): a newer raftdb wrote it; run that "
        "version on it (see docs/formats.md)",
    ),
    "leveldb-state-machine": (
        "leveldb",
        lambda d: _leveldb_marker(d / "state" / "db-000001", b"raftdb.leveldb.state_machine/3"),
        "CorruptionError: LevelDB state machine {d}/state/db-000001: format "
        "raftdb.leveldb.state_machine/3 is not one this raftdb reads "
        "(raftdb.leveldb.state_machine/1, raftdb.leveldb.state_machine/2): a newer raftdb "
        "wrote it; run that version on it (see docs/formats.md)",
    ),
    "sqlite-storage": (
        "sqlite",
        lambda d: _sqlite_version(d / "log", 2),
        "CorruptionError: SQLite storage {d}/log/raft.sqlite3: format 2 (user_version) is not "
        "one this raftdb reads (1): a newer raftdb wrote it; run that version on it "
        "(see docs/formats.md)",
    ),
}


def _serve(data: Path, storage: str) -> subprocess.CompletedProcess[str]:
    """``raftdb serve`` on ``data`` as member 1 of a one-member cluster, to its exit."""
    api, peer = free_ports(2)
    return subprocess.run(
        [sys.executable, "-m", "raftdb.cli", "serve", "--id", "1", "--host", "127.0.0.1"]
        + ["--cluster", f"http://127.0.0.1:{peer}", "--port", str(api)]
        + ["--data-dir", str(data), "--storage", storage],
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        check=False,
    )


@pytest.mark.parametrize("edit", sorted(EDITS))
def test_a_data_directory_of_a_newer_format_is_refused_at_start(edit: str, tmp_path: Path) -> None:
    fixture, change, line = EDITS[edit]
    data = tmp_path / "data-1"
    shutil.copytree(FIXTURE / fixture / "data-1", data)
    change(data)
    done = _serve(data, fixture)
    assert done.returncode != 0
    errors = [x for x in done.stderr.splitlines() if "cannot start" in x]
    assert len(errors) == 1, done.stderr
    assert errors[0].endswith(f"node 1 cannot start: {line.format(d=data)}"), errors[0]


def test_a_committed_command_of_a_newer_format_stops_the_node(tmp_path: Path) -> None:
    """A newer member's command in the log (appended, committed, on a copy of the
    fixture): the node stops with one line when it reaches it, and again at every
    start, instead of applying it as a no-op its newer peers did not."""
    data = tmp_path / "data-1"
    shutil.copytree(FIXTURE / "leveldb" / "data-1", data)
    storage = LevelDBStorage(data / "log")
    try:
        hard, _ = storage.initial_state()
        last = storage.last_index()
        newer = msgpack.packb([3, 1, b"k", b"v", None, None, 0, 0, 0, 0, "a new field"])
        entry = Entry(hard.term, last + 1, EntryType.NORMAL, newer)
        storage.save(HardState(hard.term, hard.vote, last + 1), [entry])
    finally:
        storage.close()
    for _ in range(2):
        done = _serve(data, "leveldb")
        assert done.returncode != 0
        fatal = [x for x in done.stderr.splitlines() if x.startswith("raftdb: the node failed")]
        assert fatal == [
            "raftdb: the node failed and the server exits: NewerCommandFormatError: "
            f"entry {last + 1}: a command of format 3, newer than this raftdb reads (1, 2): "
            "a member running a newer raftdb wrote it; upgrade this node (see docs/formats.md)"
        ], done.stderr


# -- peers ----------------------------------------------------------------------------------


def _frames(data: bytes) -> list[tuple[FrameKind, object]]:
    out: list[tuple[FrameKind, object]] = []
    while len(data) >= FRAME_HEADER.size:
        kind, length = parse_frame_header(data[: FRAME_HEADER.size], 1 << 30)
        end = FRAME_HEADER.size + length
        if len(data) < end:
            break
        out.append(decode_frame(data[:end]))
        data = data[end:]
    return out


#: What a later protocol's HELLO might look like: the same start, then anything.
FUTURE_HELLO = [PROTOCOL_VERSION + 1, 7, "raftdb", 1, b"", "0123456789abcdef", {"new": 1}]


def test_a_peer_of_another_protocol_version_is_refused_by_the_listener(tmp_path: Path) -> None:
    async def body() -> None:
        node = Node(1, tmp_path)
        await node.transport.start()
        try:
            reader, writer = await asyncio.open_connection(*node.transport.listen_address)
            writer.write(frame(FrameKind.HELLO, msgpack.packb(FUTURE_HELLO, use_bin_type=True)))
            got = b""
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(5.0):
                    while chunk := await reader.read(65536):
                        got += chunk
            writer.transport.abort()
            # Its answer is its own HELLO, so the dialer can say which versions met.
            [(kind, hello)] = _frames(got)
            assert kind == FrameKind.HELLO
            assert (hello.version, hello.node_id) == (PROTOCOL_VERSION, 1)  # type: ignore[attr-defined]
            await eventually(lambda: bool(node.log.warnings()), "the listener's warning")
            [warning] = node.log.warnings()
            assert (
                f"node 7 speaks peer protocol version {PROTOCOL_VERSION + 1}, this node "
                f"version {PROTOCOL_VERSION}: members must run raftdb versions that share a "
                "protocol (see docs/formats.md)"
            ) in warning
            assert node.recorder.messages == []
        finally:
            await node.transport.stop()

    run(body)


def test_a_listener_of_another_protocol_version_is_refused_by_the_dialer(tmp_path: Path) -> None:
    async def body() -> None:
        answer = frame(FrameKind.HELLO, msgpack.packb(FUTURE_HELLO, use_bin_type=True))
        writers: list[asyncio.StreamWriter] = []

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)
            writer.write(answer)
            with contextlib.suppress(OSError):
                await reader.read(65536)
            writer.transport.abort()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        node = Node(1, tmp_path)
        await node.transport.start()
        try:
            node.transport.set_peers({7: f"http://127.0.0.1:{port}"})
            node.transport.send([heartbeat(1, 7)])
            await eventually(
                lambda: any("speaks peer protocol" in w for w in node.log.warnings()),
                "the dialer's warning",
            )
            warning = next(w for w in node.log.warnings() if "speaks peer protocol" in w)
            assert f"node 7 speaks peer protocol version {PROTOCOL_VERSION + 1}" in warning
        finally:
            await node.transport.stop()
            for w in writers:
                w.transport.abort()
            server.close()
            await server.wait_closed()

    run(body)


# -- the log and snapshots --------------------------------------------------------------------


def test_a_committed_command_of_a_newer_format_stops_the_apply() -> None:
    sm = MemoryStateMachine()
    newer = msgpack.packb([3, 1, b"k", b"v", None, None, 0, 0, 0, 0, "a new field"])
    with pytest.raises(NewerCommandFormatError) as info:
        sm.apply([Entry(1, 1, EntryType.NORMAL, newer)])
    assert str(info.value) == (
        "entry 1: a command of format 3, newer than this raftdb reads (1, 2): a member "
        "running a newer raftdb wrote it; upgrade this node (see docs/formats.md)"
    )
    assert sm.applied_index == 0  # not skipped as a no-op


def test_a_snapshot_stream_of_a_newer_format_is_refused() -> None:
    with MemoryStateMachine().snapshot() as stream:
        data = b"".join(stream)
    # MAGIC, then the header frame: type, length, crc32(payload, seed=type), payload.
    start = len(MAGIC)
    kind, length, _ = _FRAME.unpack_from(data, start)
    payload = data[start + _FRAME.size : start + _FRAME.size + length]
    header = msgpack.unpackb(payload)
    assert header[0] == 2
    newer = msgpack.packb([3, *header[1:], "a new field"])
    edited = (
        data[:start]
        + _FRAME.pack(kind, len(newer), zlib.crc32(newer, kind))
        + newer
        + data[start + _FRAME.size + length :]
    )
    with pytest.raises(SnapshotFormatError) as info:
        check_stream([edited])
    assert str(info.value).endswith(
        "snapshot format 3 is not one this raftdb reads (1, 2): a newer raftdb wrote it "
        "(see docs/formats.md)"
    )
