"""raftdb.plugins: finding plugins by entry point, by module:attr, or as objects."""

from __future__ import annotations

from pathlib import Path

import pytest

from raftdb.kv.state_machine import MemoryStateMachine, StateMachine
from raftdb.plugins import (
    STATE_MACHINE_GROUP,
    STORAGE_GROUP,
    PluginError,
    known_plugins,
    load_state_machine,
    load_storage,
    open_state_machine,
    open_storage,
    plugin_reference,
)
from raftdb.storage.memory import MemoryStorage
from raftdb.storage.protocol import Storage
from raftdb_leveldb import LevelDBStateMachine, LevelDBStorage
from raftdb_sqlite import SQLiteStorage


def test_shipped_plugins_are_registered() -> None:
    assert known_plugins(STORAGE_GROUP) == ["leveldb", "memory", "sqlite"]
    assert known_plugins(STATE_MACHINE_GROUP) == ["leveldb", "memory"]
    assert load_storage("memory") is MemoryStorage
    assert load_storage("leveldb") is LevelDBStorage
    assert load_storage("sqlite") is SQLiteStorage
    assert load_state_machine("memory") is MemoryStateMachine
    assert load_state_machine("leveldb") is LevelDBStateMachine


def test_module_attr_and_objects() -> None:
    assert load_storage("raftdb_sqlite.storage:SQLiteStorage") is SQLiteStorage
    assert load_storage(MemoryStorage) is MemoryStorage
    assert load_state_machine("raftdb.state_machine:MemoryStateMachine") is MemoryStateMachine


def test_unknown_name_lists_the_known_ones_in_one_line() -> None:
    with pytest.raises(PluginError) as info:
        load_storage("rocksdb")
    message = str(info.value)
    assert "\n" not in message
    assert message == (
        "unknown storage plugin 'rocksdb'; known: leveldb, memory, sqlite "
        "(or give 'package.module:attr')"
    )
    with pytest.raises(PluginError, match="state machine plugin 'x'; known: leveldb, memory"):
        load_state_machine("x")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("no_such_module_xyz:Thing", "cannot import no_such_module_xyz"),
        ("raftdb.storage:NoSuchThing", "has no attribute NoSuchThing"),
        ("raftdb.storage:", "expected 'package.module:attr'"),
        ("raftdb.storage:__doc__", "not a factory"),
    ],
)
def test_bad_references(name: str, message: str) -> None:
    with pytest.raises(PluginError, match=message):
        load_storage(name)


def test_open_checks_the_protocol(tmp_path: Path) -> None:
    class NotAStorage:
        def __init__(self, path: Path, *, sync: bool = True) -> None:
            pass

        def save(self) -> None:
            pass

    with pytest.raises(PluginError, match="without close, compact, create_snapshot, entries"):
        open_storage(NotAStorage, tmp_path)  # type: ignore[arg-type]
    with pytest.raises(PluginError, match="state machine plugin .* without"):
        open_state_machine(NotAStorage, tmp_path)  # type: ignore[arg-type]


def test_open_by_name(tmp_path: Path) -> None:
    storage = open_storage("sqlite", tmp_path / "log", sync=False)
    machine = open_state_machine("leveldb", tmp_path / "sm")
    try:
        assert isinstance(storage, Storage)
        assert isinstance(machine, StateMachine)
        assert isinstance(MemoryStateMachine(), StateMachine)
        assert isinstance(MemoryStorage(), Storage)
    finally:
        storage.close()
        machine.close()


def test_plugin_reference() -> None:
    assert plugin_reference(LevelDBStorage) == "raftdb_leveldb.storage:LevelDBStorage"
    assert plugin_reference(lambda path: None) is None

    def local(path: Path) -> None:
        pass

    assert plugin_reference(local) is None
