"""msgpack-python's Packer against msgspec's Encoder on the values a write packs.

``raftdb.codec.pack`` (every record, command and peer message) moved from a
reused ``msgpack.Packer(use_bin_type=True)`` to ``msgspec.msgpack.Encoder``:
the bytes are the same (``tests/test_codec_msgspec.py``), this measures what it
saves. Each round packs, once each, the values one replicated write makes
msgpack encode on the leader: its command's fields, its log entry's record
fields, an APP message's fields (one entry) and the APP_RESP's fields; 1000
rounds. ``items_per_second`` counts values.

Run: ``pytest benchmarks/test_pack_bench.py --benchmark-only``.
Figures go to ``docs/benchmarks.md`` ("The write path, round 2").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgpack
import msgspec
import pytest

from raftdb.kv.commands import Command
from raftdb.raft.messages import Entry, EntryType, Message, MessageType
from raftdb.transport.frames import message_to_list

ROUNDS = 1000

_COMMAND = Command.put(b"key-000001", b"v" * 100, client_id=b"node-1-abcdef", seq=7, ack=6)
_DATA = _COMMAND.encode()
_VALUES: list[Any] = [
    [1, 1, b"key-000001", b"v" * 100, None, b"node-1-abcdef", 7, 6],
    [1000, 3, 0, _DATA],
    message_to_list(
        Message(
            MessageType.APP,
            to=2,
            frm=1,
            term=3,
            log_term=3,
            index=999,
            entries=(Entry(3, 1000, EntryType.NORMAL, _DATA),),
            commit=998,
        )
    ),
    message_to_list(Message(MessageType.APP_RESP, to=1, frm=2, term=3, index=1000)),
]


def _packers() -> dict[str, Callable[[Any], bytes]]:
    return {
        "msgpack": msgpack.Packer(use_bin_type=True, autoreset=True).pack,
        "msgspec": msgspec.msgpack.Encoder().encode,
    }


@pytest.mark.parametrize("packer", ["msgpack", "msgspec"])
def test_pack(benchmark: Any, packer: str) -> None:
    pack = _packers()[packer]
    old = _packers()["msgpack"]
    assert [pack(v) for v in _VALUES] == [old(v) for v in _VALUES]
    values = _VALUES * ROUNDS

    def rounds() -> None:
        for v in values:
            pack(v)

    benchmark(rounds)
    benchmark.extra_info["items_per_second"] = len(values) / benchmark.stats.stats.mean
