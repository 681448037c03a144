"""The LevelDB state machine's batch backend against a dict model.

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

from raftdb.kv.commands import KeyValue
from raftdb_leveldb._db import open_db
from raftdb_leveldb._layout import BatchBackend

Model = dict[bytes, tuple[bytes, int, int]]

# A small alphabet with b"\xff" so that prefixes share keys and prefix_end
# meets its edge cases (a prefix of b"\xff" bytes has no end).
_ALPHABET = b"a\x00\xff"


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
    from raftdb.codec import CorruptionError

    db.put(b"dbad", b"short")
    backend = BatchBackend(db, db.write_batch(), "LevelDB state machine /x")
    with pytest.raises(CorruptionError, match="/x.*b'bad'.*truncated"):
        backend.read(b"bad")
    with pytest.raises(CorruptionError, match="/x.*truncated"):
        backend.scan(b"", 10)
