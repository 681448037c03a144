"""raftdb.transport: real transports on 127.0.0.1 (ephemeral ports), bounded waits.

Every test runs on a fresh event loop through ``run``, which also fails the test
if an exception reaches the loop's exception handler or if a task or a file
descriptor outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest

from raftdb.raft.messages import (
    ConfState,
    Entry,
    EntryType,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)
from raftdb.transport.address import parse_peer_url
from raftdb.transport.frames import (
    PROTOCOL_VERSION,
    FrameKind,
    Hello,
    SnapshotEnd,
    encode_hello,
    encode_messages,
    encode_snapshot_begin,
    encode_snapshot_chunk,
    encode_snapshot_end,
    frame,
)
from raftdb.transport.transport import Transport
from tests.integration.harness import free_ports

from .support import Node, Recorder, connect_all, eventually, heartbeat, run, stop_all


def app(frm: int, to: int, index: int, payload: bytes = b"v") -> Message:
    return Message(
        MessageType.APP,
        to=to,
        frm=frm,
        term=3,
        log_term=3,
        index=index,
        entries=(Entry(3, index + 1, EntryType.NORMAL, payload),),
        commit=index,
    )


def snap(frm: int, to: int, index: int = 7) -> Message:
    meta = SnapshotMetadata(index, 2, ConfState((1, 2)))
    return Message(MessageType.SNAP, to=to, frm=frm, term=2, snapshot=Snapshot(meta, b"ignored"))


def delivered(recorder: Recorder, n: int) -> bool:
    return len(recorder.messages) == n


def free_port() -> int:
    """A port nothing listens on, below the ephemeral range (``free_ports``): a
    connection to a port in that range may be given that same port as its source,
    a TCP self-connection that "connects" the transport to itself."""
    (port,) = free_ports(1)
    return port


# -- URLs and arguments ------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://127.0.0.1:12379", ("127.0.0.1", 12379)),
        ("http://127.0.0.1:12379/", ("127.0.0.1", 12379)),
        ("http://localhost:22379", ("localhost", 22379)),
        ("http://[::1]:32379", ("::1", 32379)),
    ],
)
def test_parse_peer_url(url: str, expected: tuple[str, int]) -> None:
    parsed = parse_peer_url(url)
    assert (parsed.host, parsed.port) == expected
    assert parsed.url == url.rstrip("/")


@pytest.mark.parametrize(
    "url",
    [
        "127.0.0.1:12379",
        "https://127.0.0.1:12379",
        "tcp://127.0.0.1:12379",
        "http://127.0.0.1",
        "http://127.0.0.1:0",
        "http://127.0.0.1:99999",
        "http://127.0.0.1:port",
        "http://:12379",
        "http://127.0.0.1:12379/raft",
        "http://user@127.0.0.1:12379",
        "http://127.0.0.1:12379?x=1",
        "",
    ],
)
def test_parse_peer_url_rejects(url: str) -> None:
    with pytest.raises(ValueError, match="bad peer URL") as info:
        parse_peer_url(url)
    assert repr(url) in str(info.value)


def test_listen_url_may_use_port_zero() -> None:
    parsed = parse_peer_url("http://127.0.0.1:0", listen=True)
    assert (parsed.host, parsed.port) == ("127.0.0.1", 0)


def test_constructor_rejects_bad_arguments(tmp_path: Path) -> None:
    handler = Recorder()
    url = "http://127.0.0.1:0"
    with pytest.raises(ValueError, match="node id"):
        Transport(0, url, {}, handler, snapshot_dir=tmp_path)
    with pytest.raises(ValueError, match="bad peer URL"):
        Transport(1, url, {2: "udp://x:1"}, handler, snapshot_dir=tmp_path)
    with pytest.raises(ValueError, match="peer id"):
        Transport(1, url, {0: "http://x:1"}, handler, snapshot_dir=tmp_path)
    with pytest.raises(ValueError, match="max_queue"):
        Transport(1, url, {}, handler, snapshot_dir=tmp_path, max_queue=0)
    with pytest.raises(ValueError, match="max_message_frame"):
        Transport(1, url, {}, handler, snapshot_dir=tmp_path, max_message_frame=10)
    with pytest.raises(ValueError, match="token"):
        Transport(1, url, {}, handler, snapshot_dir=tmp_path, cluster_token="t" * 300)


def test_send_before_start_is_a_bug(tmp_path: Path) -> None:
    node = Node(1, tmp_path)
    with pytest.raises(RuntimeError, match="before start"):
        node.transport.send([heartbeat(1, 2)])


def test_port_in_use_is_a_clear_os_error(tmp_path: Path) -> None:
    async def body() -> None:
        a = Node(1, tmp_path)
        await a.transport.start()
        port = a.transport.listen_address[1]
        b = Node(2, tmp_path, port=port)
        try:
            with pytest.raises(
                OSError, match=f"cannot listen for peers on http://127.0.0.1:{port}"
            ):
                await b.transport.start()
        finally:
            await a.transport.stop()

    run(body)


# -- exchanging messages ---------------------------------------------------------------


def test_two_nodes_exchange_messages(tmp_path: Path) -> None:
    async def body() -> None:
        a, b = Node(1, tmp_path), Node(2, tmp_path)
        await connect_all([a, b])
        try:
            sent = [app(1, 2, i, b"x" * i) for i in range(10)]
            a.transport.send(sent)
            await eventually(lambda: len(b.recorder.messages) == 10, "delivery to b")
            assert b.recorder.messages == sent
            back = Message(MessageType.APP_RESP, to=1, frm=2, term=3, index=9, reject=True)
            b.transport.send([back])
            await eventually(lambda: a.recorder.messages == [back], "delivery to a")
            assert a.recorder.unreachable == b.recorder.unreachable == []
            assert a.log.warnings() == b.log.warnings() == []
        finally:
            await stop_all([a, b])

    run(body)


def test_three_nodes_all_pairs(tmp_path: Path) -> None:
    async def body() -> None:
        nodes = [Node(i, tmp_path) for i in (1, 2, 3)]
        await connect_all(nodes)
        try:
            for node in nodes:
                node.transport.send(
                    [heartbeat(node.id, other.id) for other in nodes if other is not node]
                )
            for node in nodes:
                await eventually(partial(delivered, node.recorder, 2), "delivery")
                assert sorted(m.frm for m in node.recorder.messages) == sorted(
                    other.id for other in nodes if other is not node
                )
                assert all(m.to == node.id for m in node.recorder.messages)
        finally:
            await stop_all(nodes)

    run(body)


def test_everything_queued_goes_in_one_frame(tmp_path: Path) -> None:
    async def body() -> None:
        a, b = Node(1, tmp_path), Node(2, tmp_path)
        await connect_all([a, b])
        try:
            await eventually(
                lambda: bool(b.recorder.batches),
                "the first delivery",
                action=lambda: a.transport.send([heartbeat(1, 2)]),
            )
            await eventually(lambda: a.transport.queue_lengths() == {2: 0}, "an empty queue")
            before = len(b.recorder.batches)
            delivered = len(b.recorder.messages)
            burst = [heartbeat(1, 2, context=b"%d" % i) for i in range(500)]
            a.transport.send(burst)
            await eventually(lambda: len(b.recorder.messages) == delivered + 500, "the burst")
            assert b.recorder.batches[before:] == [burst]
        finally:
            await stop_all([a, b])

    run(body)


def test_batches_are_split_at_the_frame_limit_in_order(tmp_path: Path) -> None:
    async def body() -> None:
        a = Node(1, tmp_path, max_message_frame=1024)
        b = Node(2, tmp_path, max_message_frame=1024)
        await connect_all([a, b])
        try:
            sent = [heartbeat(1, 2, context=bytes([i]) * 200) for i in range(100)]
            a.transport.send(sent)
            await eventually(lambda: len(b.recorder.messages) == 100, "delivery")
            assert b.recorder.messages == sent
            assert len(b.recorder.batches) >= 25
            assert max(map(len, b.recorder.batches)) <= 4
        finally:
            await stop_all([a, b])

    run(body)


def test_order_is_kept_when_the_socket_buffer_fills(tmp_path: Path) -> None:
    """Sends that the flush callback writes and sends left to the writer task
    (a full socket buffer: back-pressure) reach the peer in the order sent."""

    async def body() -> None:
        a, b = Node(1, tmp_path), Node(2, tmp_path)
        await connect_all([a, b])
        try:
            await eventually(
                lambda: bool(b.recorder.batches),
                "the first delivery",
                action=lambda: a.transport.send([heartbeat(1, 2)]),
            )
            payload = b"x" * (64 << 10)
            sent = [app(1, 2, i, payload) for i in range(300)]  # ~19 MiB
            for i in range(0, len(sent), 10):
                a.transport.send(sent[i : i + 5])
                a.transport.send(sent[i + 5 : i + 10])  # same iteration: one write
                await asyncio.sleep(0)

            def appends() -> list[Message]:
                return [m for m in b.recorder.messages if m.type == MessageType.APP]

            await eventually(lambda: len(appends()) == 300, "every message")
            assert appends() == sent
            assert a.recorder.unreachable == []
        finally:
            await stop_all([a, b])

    run(body)


def test_a_message_over_the_frame_limit_is_dropped_and_reported(tmp_path: Path) -> None:
    async def body() -> None:
        a = Node(1, tmp_path, max_message_frame=1024)
        b = Node(2, tmp_path, max_message_frame=1024)
        await connect_all([a, b])
        try:
            a.transport.send([app(1, 2, 1, b"x" * 2000), app(1, 2, 2)])
            await eventually(lambda: len(b.recorder.messages) == 1, "the small message")
            assert b.recorder.messages == [app(1, 2, 2)]
            await eventually(lambda: a.recorder.unreachable == [2], "the report")
            assert any("over the frame limit" in w for w in a.log.warnings())
        finally:
            await stop_all([a, b])

    run(body)


def test_handler_exceptions_are_logged_and_contained(tmp_path: Path) -> None:
    async def body() -> None:
        a, b = Node(1, tmp_path), Node(2, tmp_path)
        await connect_all([a, b])
        try:
            b.recorder.fail_on_messages = True
            a.transport.send([heartbeat(1, 2)])
            await eventually(lambda: len(b.recorder.batches) == 1, "first delivery")
            a.transport.send([heartbeat(1, 2, term=2)])
            await eventually(lambda: len(b.recorder.batches) == 2, "delivery after a failure")
            assert any("on_messages failed" in r.getMessage() for r in b.log.records)
        finally:
            await stop_all([a, b])

    run(body)


def test_unknown_recipients_and_local_messages(tmp_path: Path) -> None:
    async def body() -> None:
        a = Node(1, tmp_path)
        await a.transport.start()
        try:
            a.transport.send([heartbeat(1, 9), heartbeat(1, 9), snap(1, 8)])
            assert a.recorder.unreachable == []  # reported later, not from inside send()
            await eventually(lambda: a.recorder.sent == [(8, False)], "the snapshot failure")
            assert sorted(a.recorder.unreachable) == [8, 9]
            a.transport.set_peers({2: f"http://127.0.0.1:{free_port()}"})
            a.transport.send([Message(MessageType.HUP, to=2, frm=1)])
            assert a.transport.queue_lengths() == {2: 0}
            assert any("local message HUP" in r.getMessage() for r in a.log.records)
        finally:
            await a.transport.stop()

    run(body)


def test_down_peer_drops_and_reports(tmp_path: Path) -> None:
    async def body() -> None:
        a = Node(1, tmp_path, peers={2: f"http://127.0.0.1:{free_port()}"})
        await a.transport.start()
        try:
            a.transport.send([heartbeat(1, 2)])
            await eventually(lambda: a.recorder.unreachable == [2], "the first report")
            a.transport.send([heartbeat(1, 2), heartbeat(1, 2)])
            assert a.transport.queue_lengths() == {2: 0}
            await eventually(lambda: a.recorder.unreachable == [2, 2], "a single second report")
            assert sum("cannot reach peer 2" in w for w in a.log.warnings()) == 1
        finally:
            await a.transport.stop()

    run(body)


def test_full_queue_drops_and_reports(tmp_path: Path) -> None:
    async def body() -> None:
        # A listener that accepts and never answers the HELLO: the peer stays
        # "connecting", so messages queue up to max_queue and no further.
        connections: list[asyncio.StreamWriter] = []

        async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connections.append(writer)
            await reader.read()
            writer.close()

        server = await asyncio.start_server(silent, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        a = Node(1, tmp_path, peers={2: f"http://127.0.0.1:{port}"}, max_queue=8)
        await a.transport.start()
        try:
            a.transport.send([heartbeat(1, 2, context=b"%d" % i) for i in range(20)])
            assert a.transport.queue_lengths() == {2: 8}
            await eventually(lambda: a.recorder.unreachable == [2], "one report for the drops")
        finally:
            await a.transport.stop()
            server.close()
            await server.wait_closed()
            await eventually(lambda: all(w.is_closing() for w in connections), "server side")
            for w in connections:
                await w.wait_closed()

    run(body)


def test_reconnects_after_the_peer_restarts(tmp_path: Path) -> None:
    async def body() -> None:
        a, b = Node(1, tmp_path), Node(2, tmp_path)
        await connect_all([a, b])
        port = b.transport.listen_address[1]
        b2 = Node(2, tmp_path, port=port, peers={1: a.url})
        try:
            a.transport.send([heartbeat(1, 2)])
            await eventually(lambda: len(b.recorder.messages) == 1, "first delivery")
            await b.transport.stop()
            await eventually(
                lambda: 2 in a.recorder.unreachable,
                "a notices b is gone",
                action=lambda: a.transport.send([heartbeat(1, 2)]),
            )
            await b2.transport.start()
            await eventually(
                lambda: bool(b2.recorder.messages),
                "delivery to the restarted peer",
                action=lambda: a.transport.send([heartbeat(1, 2, term=5)]),
            )
            assert all(m.term == 5 for m in b2.recorder.messages)
            assert any("connected to peer 2" in r.getMessage() for r in a.log.records)
        finally:
            await stop_all([a, b, b2])

    run(body)


def test_wrong_node_behind_a_peer_url(tmp_path: Path) -> None:
    async def body() -> None:
        b = Node(2, tmp_path)
        await b.transport.start()
        a = Node(1, tmp_path, peers={3: b.url})
        b.transport.set_peers({1: "http://127.0.0.1:1"})
        await a.transport.start()
        try:
            a.transport.send([heartbeat(1, 3)])
            await eventually(lambda: 3 in a.recorder.unreachable, "the report")
            await eventually(lambda: bool(a.log.warnings()), "the warning")
            assert "is node 2, not node 3" in a.log.warnings()[0]
            assert b.recorder.messages == []
        finally:
            await stop_all([a, b])

    run(body)


def test_removed_peer_is_disconnected_and_refused(tmp_path: Path) -> None:
    async def body() -> None:
        a, b = Node(1, tmp_path), Node(2, tmp_path)
        await connect_all([a, b])
        try:
            a.transport.send([heartbeat(1, 2)])
            await eventually(lambda: len(b.recorder.messages) == 1, "first delivery")
            b.transport.set_peers({})
            assert b.transport.queue_lengths() == {}
            await eventually(
                lambda: any("node 1 is not a member" in w for w in b.log.warnings()),
                "b refuses a's reconnection",
            )
            a.transport.send([heartbeat(1, 2, term=9)])
            await eventually(lambda: 2 in a.recorder.unreachable, "a's report")
            assert len(b.recorder.messages) == 1
        finally:
            await stop_all([a, b])

    run(body)


def test_unknown_senders_accepted_only_when_allowed(tmp_path: Path) -> None:
    async def body() -> None:
        b = Node(2, tmp_path, allow_unknown_senders=True)
        await b.transport.start()
        a = Node(1, tmp_path, peers={2: b.url})
        await a.transport.start()
        try:
            a.transport.send([heartbeat(1, 2)])
            await eventually(lambda: len(b.recorder.messages) == 1, "delivery")
        finally:
            await stop_all([a, b])

    run(body)


def test_stop_is_idempotent_and_final(tmp_path: Path) -> None:
    async def body() -> None:
        a, b = Node(1, tmp_path), Node(2, tmp_path)
        await connect_all([a, b])
        a.transport.send([heartbeat(1, 2)])
        await eventually(lambda: len(b.recorder.messages) == 1, "delivery")
        await a.transport.stop()
        await a.transport.stop()
        a.transport.send([heartbeat(1, 2), heartbeat(1, 9)])  # silently dropped
        with pytest.raises(RuntimeError):
            await a.transport.start()
        await b.transport.stop()
        await asyncio.sleep(0)
        assert a.recorder.unreachable == []

    run(body)


# -- snapshots ----------------------------------------------------------------------------

SNAPSHOT = random.Random(5).randbytes(4 << 20)


def chunked(size: int) -> Callable[[Message], Iterator[bytes]]:
    def chunks(_m: Message) -> Iterator[bytes]:
        for start in range(0, len(SNAPSHOT), size):
            yield SNAPSHOT[start : start + size]

    return chunks


def test_snapshot_streams_in_chunks_end_to_end(tmp_path: Path) -> None:
    async def body() -> None:
        a = Node(1, tmp_path, chunks=chunked(256 << 10))
        b = Node(2, tmp_path)
        await connect_all([a, b])
        try:
            a.transport.send([snap(1, 2)])
            await eventually(lambda: a.recorder.sent == [(2, True)], "the acknowledgement")
            [(message, path, data)] = b.recorder.received
            assert message == Message(
                MessageType.SNAP,
                to=2,
                frm=1,
                term=2,
                snapshot=Snapshot(snap(1, 2).snapshot.metadata),  # type: ignore[union-attr]
            )
            assert data == SNAPSHOT
            assert path.parent == b.dir
            assert path.suffix == ".snap"
            assert threading.get_ident() not in a.recorder.chunk_threads
            assert b.recorder.messages == []
            assert list(b.dir.iterdir()) == []
        finally:
            await stop_all([a, b])

    run(body)


def test_large_chunks_are_split_and_reassembled(tmp_path: Path) -> None:
    async def body() -> None:
        a = Node(1, tmp_path, chunks=chunked(3 << 20))
        b = Node(2, tmp_path)
        await connect_all([a, b])
        try:
            a.transport.send([snap(1, 2)])
            await eventually(lambda: a.recorder.sent == [(2, True)], "the acknowledgement")
            assert b.recorder.received[0][2] == SNAPSHOT
        finally:
            await stop_all([a, b])

    run(body)


def test_snapshot_never_blocks_messages_and_one_is_in_flight(tmp_path: Path) -> None:
    gate = threading.Event()

    def slow(_m: Message) -> Iterator[bytes]:
        yield SNAPSHOT[:1000]
        gate.wait(10)
        yield SNAPSHOT[1000:5000]

    async def body() -> None:
        a = Node(1, tmp_path, chunks=slow)
        b = Node(2, tmp_path)
        await connect_all([a, b])
        try:
            a.transport.send([snap(1, 2)])
            await eventually(lambda: bool(a.recorder.chunk_threads), "the stream has started")
            a.transport.send([snap(1, 2, index=8), heartbeat(1, 2)])
            await eventually(lambda: len(b.recorder.messages) == 1, "a heartbeat meanwhile")
            assert len(a.recorder.opened) == 1
            gate.set()
            await eventually(lambda: a.recorder.sent == [(2, True)], "the acknowledgement")
            assert b.recorder.received[0][2] == SNAPSHOT[:5000]
        finally:
            gate.set()
            await stop_all([a, b])

    run(body)


def test_broken_snapshot_stream_fails_and_leaves_no_file(tmp_path: Path) -> None:
    def broken(_m: Message) -> Iterator[bytes]:
        yield SNAPSHOT[:100_000]
        yield SNAPSHOT[100_000:200_000]
        raise RuntimeError("state machine closed")

    async def body() -> None:
        a = Node(1, tmp_path, chunks=broken)
        b = Node(2, tmp_path)
        await connect_all([a, b])
        try:
            a.transport.send([snap(1, 2)])
            await eventually(lambda: a.recorder.sent == [(2, False)], "the failure")
            await eventually(lambda: list(b.dir.iterdir()) == [], "the partial file removed")
            await eventually(lambda: bool(b.log.warnings()), "b's warning")
            assert b.recorder.received == []
            assert "state machine closed" in a.log.warnings()[-1]
            # The next snapshot goes through.
            a.recorder.chunks = chunked(1 << 20)
            a.transport.send([snap(1, 2)])
            await eventually(lambda: a.recorder.sent[-1:] == [(2, True)], "a later success")
        finally:
            await stop_all([a, b])

    run(body)


def test_removing_a_peer_fails_its_snapshot_in_flight(tmp_path: Path) -> None:
    gate = threading.Event()

    def stuck(_m: Message) -> Iterator[bytes]:
        yield b"x" * 1000
        gate.wait(10)
        yield b"y"

    async def body() -> None:
        a = Node(1, tmp_path, chunks=stuck)
        b = Node(2, tmp_path)
        await connect_all([a, b])
        try:
            a.transport.send([snap(1, 2)])
            await eventually(lambda: bool(a.recorder.chunk_threads), "the stream has started")
            a.transport.set_peers({})
            gate.set()
            await eventually(lambda: a.recorder.sent == [(2, False)], "the failure")
            await eventually(lambda: list(b.dir.iterdir()) == [], "b's partial file removed")
        finally:
            gate.set()
            await stop_all([a, b])

    run(body)


def test_stale_partial_files_are_removed_at_start(tmp_path: Path) -> None:
    async def body() -> None:
        a = Node(1, tmp_path)
        a.dir.mkdir()
        (a.dir / "incoming-2-7-abc.part").write_bytes(b"x")
        (a.dir / "keep.snap").write_bytes(b"x")
        await a.transport.start()
        await a.transport.stop()
        assert [p.name for p in a.dir.iterdir()] == ["keep.snap"]

    run(body)


# -- garbage on the peer port ------------------------------------------------------------

TOKEN = "raftdb"


def hello(node_id: int = 1, token: str = TOKEN, version: int = PROTOCOL_VERSION) -> bytes:
    return encode_hello(Hello(version, node_id, token))


SNAP_BEGIN = encode_snapshot_begin(snap(1, 2))
GARBAGE: dict[str, bytes] = {
    "random bytes": random.Random(1).randbytes(4096),
    "random bytes after hello": hello() + random.Random(2).randbytes(4096),
    "truncated frame": hello() + encode_messages([heartbeat(1, 2)])[:-3],
    "truncated header": hello() + b"\x00\x00",
    "huge length": hello() + b"\xff\xff\xff\xff\x02" + b"x" * 100,
    "huge hello": b"\x7f\xff\xff\xff\x01",
    "unknown frame kind": hello() + b"\x00\x00\x00\x01\x63x",
    "no hello": encode_messages([heartbeat(1, 2)]),
    "bad msgpack": hello() + frame(FrameKind.MESSAGES, b"\xc1\xc1"),
    "wrong token": hello(token="other") + encode_messages([heartbeat(1, 2)]),
    "wrong version": hello(version=99) + encode_messages([heartbeat(1, 2)]),
    "unknown member": hello(node_id=9) + encode_messages([heartbeat(9, 2)]),
    "claims to be the listener": hello(node_id=2) + encode_messages([heartbeat(2, 2)]),
    "wrong sender": hello() + encode_messages([heartbeat(1, 2), heartbeat(3, 2)]),
    "wrong recipient": hello() + encode_messages([heartbeat(1, 2), heartbeat(1, 3)]),
    "local message": hello() + frame(FrameKind.MESSAGES, b"\x91\x9c" + b"\x00" * 12),
    "snap among messages": hello() + encode_messages([snap(1, 2)]),
    "unexpected ack": hello() + frame(FrameKind.SNAPSHOT_ACK, b"\x91\xc3"),
    "snapshot with a bad checksum": hello()
    + SNAP_BEGIN
    + encode_snapshot_chunk(b"abc")
    + encode_snapshot_end(SnapshotEnd(3, 1234)),
    "snapshot with a bad size": hello()
    + SNAP_BEGIN
    + encode_snapshot_chunk(b"abc")
    + encode_snapshot_end(SnapshotEnd(4, 0)),
    "truncated snapshot": hello() + SNAP_BEGIN + encode_snapshot_chunk(b"abc"),
    "messages inside a snapshot": hello() + SNAP_BEGIN + encode_messages([heartbeat(1, 2)]),
    "nothing at all": b"",
}


async def send_garbage(port: int, data: bytes) -> None:
    """Connect, send ``data``, half-close, and wait for the listener to close."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        with contextlib.suppress(OSError):
            writer.write(data)
            await writer.drain()
            writer.write_eof()
        with contextlib.suppress(OSError):
            async with asyncio.timeout(5):
                while await reader.read(65536):
                    pass
    finally:
        writer.transport.abort()
        await writer.wait_closed()


@pytest.mark.parametrize("case", list(GARBAGE))
def test_garbage_closes_one_connection_with_one_warning(tmp_path: Path, case: str) -> None:
    async def body() -> None:
        a, b = Node(1, tmp_path), Node(2, tmp_path)
        await connect_all([a, b])
        try:
            a.transport.send([heartbeat(1, 2)])
            await eventually(lambda: len(b.recorder.messages) == 1, "first delivery")
            await send_garbage(b.transport.listen_address[1], GARBAGE[case])
            await eventually(lambda: bool(b.log.warnings()), "the warning")
            for _ in range(5):
                await asyncio.sleep(0)
            assert len(b.log.warnings()) == 1, b.log.warnings()
            assert "closing peer connection" in b.log.warnings()[0]
            assert len(b.recorder.messages) == 1
            assert b.recorder.received == []
            await eventually(lambda: list(b.dir.iterdir()) == [], "no partial snapshot")
            # The node keeps working, on the connection that was there before.
            a.transport.send([heartbeat(1, 2, term=2)])
            await eventually(lambda: len(b.recorder.messages) == 2, "delivery afterwards")
            assert a.log.warnings() == []
        finally:
            await stop_all([a, b])

    run(body)


def test_silent_connection_times_out_with_one_warning(tmp_path: Path) -> None:
    async def body() -> None:
        b = Node(2, tmp_path, handshake_timeout=0.2)
        await b.transport.start()
        try:
            reader, writer = await asyncio.open_connection(*b.transport.listen_address)
            async with asyncio.timeout(5):
                assert await reader.read() == b""
            writer.close()
            await writer.wait_closed()
            assert b.log.warnings() == [
                f"node 2: closing peer connection from 127.0.0.1:"
                f"{writer.get_extra_info('sockname')[1]}: timed out"
            ]
        finally:
            await b.transport.stop()

    run(body)


def test_garbage_to_a_snapshot_sender_fails_the_snapshot(tmp_path: Path) -> None:
    # A "peer" that answers the HELLO properly, then answers the snapshot with garbage.
    async def body() -> None:
        async def liar(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(hello(node_id=2))
            await reader.read(1 << 20)
            writer.write(b"\x00\x00\x00\x10\x06" + b"\xc1" * 16)
            with contextlib.suppress(OSError):
                await writer.drain()
                await reader.read()
            writer.close()

        server = await asyncio.start_server(liar, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        a = Node(1, tmp_path, peers={2: f"http://127.0.0.1:{port}"}, chunks=chunked(1 << 20))
        await a.transport.start()
        try:
            a.transport.send([snap(1, 2)])
            await eventually(lambda: a.recorder.sent == [(2, False)], "the failure")
        finally:
            await a.transport.stop()
            server.close()
            await server.wait_closed()
            for _ in range(10):
                await asyncio.sleep(0.01)

    run(body)


def test_backoff_doubles_to_a_cap_with_seeded_jitter(tmp_path: Path) -> None:
    def delays(seed: int) -> list[float]:
        t = Transport(
            1,
            "http://127.0.0.1:0",
            {},
            Recorder(),
            snapshot_dir=tmp_path,
            rng=random.Random(seed),
            backoff_base=0.05,
            backoff_cap=1.0,
        )
        return [t._backoff(n) for n in range(10)]

    first = delays(7)
    assert first == delays(7)
    assert first != delays(8)
    for n, delay in enumerate(first):
        ceiling = min(1.0, 0.05 * 2**n)
        assert ceiling / 2 <= delay < ceiling
