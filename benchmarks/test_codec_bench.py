"""Encode and decode costs on the write path, one benchmark per codec.

A write crosses three encodings: the client's :class:`~raftdb.kv.commands.Command`
becomes entry data (``raftdb/kv/commands.py``), the entry becomes a checksummed
storage record (``raftdb/storage/records.py``), and the leader ships entries to its
peers in MESSAGES frames of APP messages, answered with APP_RESP
(``raftdb/transport/frames.py``). Each is measured alone here, so that when the core or
cluster figures drop, these say whether serialization is the cause and which
layer. Every command carries a client session (``client_id``, ``seq``,
``ack``, as the driver writes them) and a 100-byte value; entries carry such
commands.

Each round encodes or decodes a list of items prepared beforehand (1000
commands or entries; 200 messages) and checks nothing: correctness is
checked once, before the benchmark, by a round trip of the same items.

- ``test_command[encode|decode|parse|session]``: ``Command.encode``,
  ``Command.decode``, ``parse_command`` (the applier's and the node's after
  each applied batch: fields only, no object) and ``Command.with_session``
  (the driver's, on each proposed write: a command made without a session,
  put in one); ``items_per_second``.
- ``test_entry[encode|decode]``: ``encode_entry`` and ``decode_entry`` with
  the index check, as ``DiskStorage.save`` and its reads call them;
  ``items_per_second`` (entries).
- ``test_append[encode|decode-1|64]``: one APP message with 1 or 64 entries
  in one MESSAGES frame, packed as the transport's writer does
  (``encode_message`` then ``messages_frame``) and decoded as its reader does
  (``decode_messages`` of the frame's body); ``items_per_second`` counts
  messages, ``entries_per_second`` entries.
- ``test_append_ack[encode|decode]``: the APP_RESP answering it, alone in a
  frame; ``items_per_second`` (messages).

Run: ``pytest benchmarks/test_codec_bench.py --benchmark-only``.
Figures go to ``docs/benchmarks.md`` ("Codec").
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from raftdb.kv.commands import Command, parse_command
from raftdb.raft.messages import Entry, EntryType, Message, MessageType
from raftdb.storage.records import decode_entry, encode_entry
from raftdb.transport.frames import FRAME_HEADER, decode_messages, encode_message, messages_frame

VALUE = os.urandom(100)
#: The shape of the driver's session ids (``node-<id>-<12 hex digits>``).
CLIENT_ID = b"node-1-" + os.urandom(6).hex().encode()
TERM = 2
ITEMS = 1000
MESSAGES = 200
ROUNDS = 100


def _commands(n: int) -> list[Command]:
    # Distinct keys and sequence numbers; ack trails seq as a client with a few
    # writes in flight would have it.
    return [
        Command.put(b"user/%09d" % i, VALUE, client_id=CLIENT_ID, seq=i, ack=max(1, i - 8))
        for i in range(1, n + 1)
    ]


def _entries(lo: int, n: int) -> list[Entry]:
    return [
        Entry(TERM, i, EntryType.NORMAL, c.encode())
        for i, c in zip(range(lo, lo + n), _commands(n), strict=True)
    ]


def _append(index: int, n: int) -> Message:
    """The APP a leader sends after entry ``index``: ``n`` new entries and its commit."""
    return Message(
        MessageType.APP,
        to=2,
        frm=1,
        term=TERM,
        log_term=TERM,
        index=index,
        entries=tuple(_entries(index + 1, n)),
        commit=index,
    )


def _append_resp(index: int) -> Message:
    """The follower's acceptance of everything up to ``index``."""
    return Message(MessageType.APP_RESP, to=1, frm=2, term=TERM, index=index)


def _frame(m: Message) -> bytes:
    # The transport's writer: pack each message, join them into one frame.
    return messages_frame([encode_message(m)])


def _body(frame: bytes) -> bytes:
    # The transport's reader hands decode_messages the body, header stripped.
    return frame[FRAME_HEADER.size :]


def _measure(benchmark: Any, work: Callable[[Any], object], items: Sequence[Any]) -> float:
    """Benchmark ``work`` over every item per round; items per second (by the mean)."""

    def each() -> None:
        for item in items:
            work(item)

    benchmark.pedantic(each, rounds=ROUNDS, iterations=1, warmup_rounds=5)
    per_second = len(items) / float(benchmark.stats.stats.mean)
    benchmark.extra_info["items_per_second"] = round(per_second)
    return per_second


@pytest.mark.parametrize("direction", ["encode", "decode", "parse", "session"])
def test_command(benchmark: Any, direction: str) -> None:
    commands = _commands(ITEMS)
    datas = [c.encode() for c in commands]
    assert [Command.decode(d) for d in datas] == commands
    assert parse_command(datas[0])[5:] == (CLIENT_ID, 1, 1)
    bare = [Command.put(c.key, c.value) for c in commands]
    assert [
        b.with_session(CLIENT_ID, c.seq, c.ack) for b, c in zip(bare, commands, strict=True)
    ] == commands
    if direction == "encode":
        _measure(benchmark, Command.encode, commands)
    elif direction == "decode":
        _measure(benchmark, Command.decode, datas)
    elif direction == "parse":
        _measure(benchmark, parse_command, datas)
    else:
        _measure(benchmark, lambda c: c.with_session(CLIENT_ID, 9, 1), bare)


@pytest.mark.parametrize("direction", ["encode", "decode"])
def test_entry(benchmark: Any, direction: str) -> None:
    entries = _entries(1, ITEMS)
    records = [encode_entry(e) for e in entries]
    assert [decode_entry(r, e.index) for r, e in zip(records, entries, strict=True)] == entries
    if direction == "encode":
        _measure(benchmark, encode_entry, entries)
    else:
        pairs = list(zip(records, (e.index for e in entries), strict=True))
        _measure(benchmark, lambda pair: decode_entry(*pair), pairs)


@pytest.mark.parametrize("entries", [1, 64])
@pytest.mark.parametrize("direction", ["encode", "decode"])
def test_append(benchmark: Any, direction: str, entries: int) -> None:
    messages = [_append(i * entries, entries) for i in range(MESSAGES)]
    bodies = [_body(_frame(m)) for m in messages]
    assert [decode_messages(b) for b in bodies] == [[m] for m in messages]
    if direction == "encode":
        per_second = _measure(benchmark, _frame, messages)
    else:
        per_second = _measure(benchmark, decode_messages, bodies)
    benchmark.extra_info["entries_per_second"] = round(per_second * entries)
    benchmark.extra_info["frame_bytes"] = len(bodies[0]) + FRAME_HEADER.size


@pytest.mark.parametrize("direction", ["encode", "decode"])
def test_append_ack(benchmark: Any, direction: str) -> None:
    messages = [_append_resp(i) for i in range(1, ITEMS + 1)]
    bodies = [_body(_frame(m)) for m in messages]
    assert [decode_messages(b) for b in bodies] == [[m] for m in messages]
    if direction == "encode":
        _measure(benchmark, _frame, messages)
    else:
        _measure(benchmark, decode_messages, bodies)
