"""raftdb.transport.frame_reader: MESSAGES frames parsed from the data callback.

The reader is fed by hand here (no socket), in pieces of every size, to check
that it delivers exactly the frames a stream reader would have read, in order,
and hands the stream back exactly at the first frame of another kind.
"""

from __future__ import annotations

import asyncio

import pytest

from raftdb.transport.frame_reader import FrameReader
from raftdb.transport.frames import FrameKind, WireError, frame
from raftdb.transport.stream import read_frame

BODIES = [b"\x90", b"a" * 300, b"", b"b" * 7]
MESSAGES = b"".join(frame(FrameKind.MESSAGES, body) for body in BODIES)
CHUNK = frame(FrameKind.SNAPSHOT_CHUNK, b"chunk bytes")


def run_reader(
    pieces: list[bytes], *, before: bytes = b"", eof: bool = True
) -> tuple[list[bytes], bool | BaseException, list[tuple[FrameKind, bytes]]]:
    """Feed ``before`` as stream bytes, then deliver while feeding ``pieces``.

    Returns what was delivered, what deliver_messages returned (or raised),
    and the frames the stream read afterwards.
    """

    async def body() -> tuple[list[bytes], bool | BaseException, list[tuple[FrameKind, bytes]]]:
        reader = FrameReader(1 << 20)
        got: list[bytes] = []
        if before:
            reader.feed_data(before)

        async def feed() -> None:
            for piece in pieces:
                await asyncio.sleep(0)
                reader.feed_data(piece)
            await asyncio.sleep(0)
            if eof:
                reader.feed_eof()

        feeder = asyncio.create_task(feed())
        outcome: bool | BaseException
        try:
            outcome = await reader.deliver_messages(got.append, 1 << 20)
        except Exception as exc:
            outcome = exc
        after: list[tuple[FrameKind, bytes]] = []
        if outcome is True:
            while True:
                try:
                    after.append(await read_frame(reader, 1 << 20))
                except EOFError:
                    break
        await feeder
        return got, outcome, after

    return asyncio.run(body())


@pytest.mark.parametrize("size", [1, 2, 5, 6, 64, 1 << 20])
def test_frames_in_pieces_of_any_size_are_delivered_in_order(size: int) -> None:
    pieces = [MESSAGES[i : i + size] for i in range(0, len(MESSAGES), size)]
    got, outcome, after = run_reader(pieces)
    assert got == BODIES
    assert outcome is False  # a clean close between frames
    assert after == []


@pytest.mark.parametrize("cut", [0, 3, 5, 200])
def test_what_the_stream_held_is_parsed_first(cut: int) -> None:
    got, outcome, _ = run_reader([MESSAGES[cut:]], before=MESSAGES[:cut])
    assert got == BODIES
    assert outcome is False


@pytest.mark.parametrize("size", [1, 4, 1 << 20])
def test_another_kind_hands_the_stream_back_at_its_header(size: int) -> None:
    data = MESSAGES + CHUNK + frame(FrameKind.MESSAGES, b"later")
    pieces = [data[i : i + size] for i in range(0, len(data), size)]
    got, outcome, after = run_reader(pieces)
    assert got == BODIES
    assert outcome is True
    assert after == [(FrameKind.SNAPSHOT_CHUNK, b"chunk bytes"), (FrameKind.MESSAGES, b"later")]


@pytest.mark.parametrize(
    ("tail", "error"),
    [
        (b"\x00\x00", "truncated frame header"),
        (frame(FrameKind.MESSAGES, b"xyz")[:-1], "truncated MESSAGES frame"),
        (b"\x00\x20\x00\x00\x02", "over the limit"),
    ],
)
def test_bad_or_cut_frames_raise_wire_error_after_the_good_ones(tail: bytes, error: str) -> None:
    got, outcome, _ = run_reader([MESSAGES, tail])
    assert got == BODIES
    assert isinstance(outcome, WireError)
    assert error in str(outcome)


def test_an_unknown_kind_is_left_to_the_stream_which_refuses_it() -> None:
    async def body() -> tuple[bool, str]:
        reader = FrameReader(1 << 20)
        reader.feed_data(MESSAGES + b"\x00\x00\x00\x01\x63x")
        more = await reader.deliver_messages(lambda b: None, 1 << 20)
        with pytest.raises(WireError) as error:
            await read_frame(reader, 1 << 20)
        return more, str(error.value)

    more, error = asyncio.run(body())
    assert more is True
    assert "unknown frame kind 99" in error


def test_an_exception_from_deliver_stops_the_delivery() -> None:
    async def body() -> tuple[list[bytes], BaseException | None]:
        reader = FrameReader(1 << 20)
        got: list[bytes] = []

        def deliver(frame_body: bytes) -> None:
            got.append(frame_body)
            if len(got) == 2:
                raise WireError("refused")

        reader.feed_data(MESSAGES)
        try:
            await reader.deliver_messages(deliver, 1 << 20)
        except WireError as exc:
            reader.feed_data(MESSAGES)  # more bytes after the error: ignored
            return got, exc
        return got, None

    got, error = asyncio.run(body())
    assert got == BODIES[:2]
    assert isinstance(error, WireError)


def test_a_failed_connection_raises_its_error() -> None:
    async def body() -> BaseException | None:
        reader = FrameReader(1 << 20)
        waiting = asyncio.ensure_future(reader.deliver_messages(lambda b: None, 1 << 20))
        await asyncio.sleep(0)
        reader.set_exception(ConnectionResetError("reset"))
        try:
            await waiting
        except ConnectionResetError as exc:
            return exc
        return None

    assert isinstance(asyncio.run(body()), ConnectionResetError)


def test_readuntil_is_refused() -> None:
    async def body() -> None:
        reader = FrameReader(1 << 20)
        reader.feed_data(b"line\n")
        with pytest.raises(NotImplementedError):
            await reader.readline()

    asyncio.run(body())
