"""raftdb's LevelDB plugins (plyvel): the default storage and state machine.

Registered as ``leveldb`` in the entry-point groups ``raftdb.storage`` and
``raftdb.state_machine``.
"""

from __future__ import annotations

from raftdb_leveldb.state_machine import LevelDBStateMachine
from raftdb_leveldb.storage import LevelDBStorage

__all__ = ["LevelDBStateMachine", "LevelDBStorage"]
