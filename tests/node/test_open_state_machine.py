"""The node opens its state machine with its ``watch_history`` (``raftdb.plugins``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from raftdb.kv.changes import DEFAULT_WATCH_HISTORY
from raftdb.kv.commands import Command
from raftdb.kv.state_machine import MemoryStateMachine
from raftdb.plugins import PluginError, open_state_machine
from raftdb.raft import Entry


def floor_after(machine: Any, puts: int) -> int:
    machine.apply(
        [Entry(1, i, data=Command.put(b"k%d" % i, b"v").encode()) for i in range(1, puts + 1)]
    )
    floor, _ = machine.history(0, 1)
    machine.close()
    return int(floor)


@pytest.mark.parametrize("plugin", ["memory", "leveldb"])
def test_the_shipped_plugins_keep_the_history_they_are_given(tmp_path: Path, plugin: str) -> None:
    machine = open_state_machine(plugin, tmp_path / "sm", watch_history=3)
    assert floor_after(machine, 10) == 7


def older_plugin(path: Path, *, sync: bool = True) -> MemoryStateMachine:
    """A factory from before watches: it takes no ``watch_history``."""
    return MemoryStateMachine(path, sync=sync)


def any_keyword_plugin(path: Path, **options: Any) -> MemoryStateMachine:
    return MemoryStateMachine(path, **options)


def test_a_factory_without_the_keyword_is_called_without_it_at_the_default(
    tmp_path: Path,
) -> None:
    machine = open_state_machine(older_plugin, tmp_path, watch_history=DEFAULT_WATCH_HISTORY)
    assert floor_after(machine, 3) == 0
    with pytest.raises(PluginError, match="takes no watch_history, so it cannot keep 3"):
        open_state_machine(older_plugin, tmp_path, watch_history=3)
    machine = open_state_machine(any_keyword_plugin, tmp_path, watch_history=2)  # **options
    assert floor_after(machine, 5) == 3
