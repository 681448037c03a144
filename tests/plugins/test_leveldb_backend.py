"""The LevelDB state machine's batch backend against a dict model, and its history records.

LevelDB cannot read its own unwritten batch, so ``BatchBackend`` keeps the
batch's writes beside it and merges them into every read: these tests drive
it with random batches (keys written, rewritten and deleted in the same batch,
over keys already in the database) and compare each read and scan with a
plain dict holding what the state should be.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from raftdb.codec import CorruptionError
from raftdb.kv.changes import Change, ChangeKind
from raftdb.kv.commands import KeyValue
from raftdb_leveldb._db import open_db
from raftdb_leveldb._layout import (
    BatchBackend,
    change_key,
    decode_change_record,
    encode_change_record,
)

Model = dict[bytes, tuple[bytes, int, int]]

# A small alphabet with b"\xff" so that prefixes share keys and prefix_end
# meets its edge cases (a prefix of b"\xff" bytes has no end).
_ALPHABET = b"a\x00\xff"
_PUT = Change(5, ChangeKind.PUT, b"key", b"value", 3, 5, 4)


def _key(rng: random.Random) -> bytes:
    return bytes(rng.choice(_ALPHABET) for _ in range(rng.randint(0, 3)))


def _model_scan(model: Model, prefix: bytes, limit: int) -> tuple[list[KeyValue], bool]:
    keys = sorted(k for k in model if k.startswith(prefix))
    found = [KeyValue(k, *model[k]) for k in keys[:limit]]
    return found, len(keys) > limit


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Any]:
    handle = open_db(tmp_path / "db", create=True)
    yield handle
    handle.close()


def _check_reads(backend: BatchBackend, model: Model, rng: random.Random) -> None:
    key = _key(rng)
    record = model.get(key)
    assert backend.read(key) == record
    assert backend.load(key) == (None if record is None else record[1:])
    prefix = _key(rng)[: rng.randint(0, 2)]
    limit = rng.choice((1, 2, 3, 5, 100))
    assert backend.scan(prefix, limit) == _model_scan(model, prefix, limit), (prefix, limit)


@pytest.mark.parametrize("seed", range(6))
def test_random_batches_read_as_the_model(db: Any, seed: int) -> None:
    rng = random.Random(seed)
    model: Model = {}
    index = 0
    for _ in range(40):
        batch = db.write_batch()
        backend = BatchBackend(db, batch, "test db")
        # Half the batches scan before writing, so the sorted pending keys are
        # built early and then kept up to date by later writes.
        if rng.random() < 0.5:
            _check_reads(backend, model, rng)
        for _ in range(rng.randint(0, 30)):
            roll = rng.random()
            key = _key(rng)
            if roll < 0.5:
                index += 1
                old = model.get(key)
                create = index if old is None else old[1]
                value = rng.randbytes(rng.randint(0, 8))
                backend.store(key, value, create, index)
                model[key] = (value, create, index)
            elif roll < 0.75 and model:
                victim = rng.choice(sorted(model))
                backend.remove(victim)
                del model[victim]
            else:
                _check_reads(backend, model, rng)
        for _ in range(3):
            _check_reads(backend, model, rng)
        batch.write()
    # What reached the database is the model too, read by a fresh backend.
    backend = BatchBackend(db, db.write_batch(), "test db")
    assert backend.scan(b"", 10_000) == _model_scan(model, b"", 10_000)


def test_a_key_deleted_and_rewritten_in_the_batch(db: Any) -> None:
    db.put(b"dk1", b"\x00" * 7 + b"\x01" + b"\x00" * 7 + b"\x01" + b"old")
    db.put(b"dk2", b"\x00" * 7 + b"\x02" + b"\x00" * 7 + b"\x02" + b"two")
    backend = BatchBackend(db, db.write_batch(), "test db")
    assert backend.scan(b"k", 10) == (
        [KeyValue(b"k1", b"old", 1, 1), KeyValue(b"k2", b"two", 2, 2)],
        False,
    )
    backend.remove(b"k1")
    assert backend.read(b"k1") is None
    assert backend.scan(b"k", 10) == ([KeyValue(b"k2", b"two", 2, 2)], False)
    backend.store(b"k1", b"new", 3, 3)
    backend.store(b"k0", b"zero", 4, 4)
    assert backend.read(b"k1") == (b"new", 3, 3)
    assert backend.scan(b"k", 2) == (
        [KeyValue(b"k0", b"zero", 4, 4), KeyValue(b"k1", b"new", 3, 3)],
        True,
    )
    backend.remove(b"k2")
    assert backend.scan(b"k", 10) == (
        [KeyValue(b"k0", b"zero", 4, 4), KeyValue(b"k1", b"new", 3, 3)],
        False,
    )
    # Nothing of the unwritten batch is in the database.
    assert db.get(b"dk0") is None


def test_a_truncated_record_is_corruption_naming_the_database(db: Any) -> None:
    db.put(b"dbad", b"short")
    backend = BatchBackend(db, db.write_batch(), "LevelDB state machine /x")
    with pytest.raises(CorruptionError, match="/x.*b'bad'.*truncated"):
        backend.read(b"bad")
    with pytest.raises(CorruptionError, match="/x.*truncated"):
        backend.scan(b"", 10)


# -- the history's records ------------------------------------------------------------


def test_change_records_round_trip() -> None:
    changes = [
        Change(5, ChangeKind.PUT, b"\x00\xff", b"", 3, 5, 4),
        Change(7, ChangeKind.DELETE, b"k", b"", 0, 7, 5),
        Change(2**40, ChangeKind.PUT, b"k" * 300, bytes(range(256)) * 4, 1, 2**40, 2**40),
    ]
    for position, change in enumerate(changes):
        key = change_key(change.index, position)
        assert decode_change_record(key, encode_change_record(change)) == change


@pytest.mark.parametrize(
    ("key", "raw", "message"),
    [
        (change_key(5, 0), b"\x01" * 10, "truncated"),
        (change_key(5, 0)[:-1], encode_change_record(_PUT), "truncated"),
        (change_key(5, 0), encode_change_record(_PUT)[:23], "truncated"),  # in the key
        # A put created after its own index: the checks of Change.from_list.
        (change_key(2, 0), encode_change_record(_PUT), "bad indexes"),
        (change_key(5, 0), b"\x07" + encode_change_record(_PUT)[1:], "unknown kind"),
    ],
)
def test_damaged_change_records_are_refused(key: bytes, raw: bytes, message: str) -> None:
    with pytest.raises(CorruptionError, match=message):
        decode_change_record(key, raw)
