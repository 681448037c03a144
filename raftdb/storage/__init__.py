"""The storage layer: the Storage protocol plugins implement, and what they share.

This package is the public API of storage plugins: a plugin imports what it
needs from here, never from the modules inside (an import-linter contract in
``make test`` holds the shipped plugins to that).

- :class:`Storage` = the core's read side (:class:`StorageReader`, defined in
  :mod:`raftdb.raft.storage`) + the driver's write side (:class:`StorageWriter`);
- :class:`MemoryStorage`, the in-memory version (the ``memory`` plugin);
- :class:`DiskStorage`, the base of the disk plugins, with its :class:`LogIndex`;
- a full disk as plugins report it (:mod:`raftdb.storage.nospace`: an
  ``OSError`` with ``errno`` ``ENOSPC``/``EDQUOT``, the one error a node survives);
- the on-disk records (:mod:`raftdb.storage.records`) and :class:`CorruptionError`;
- :func:`durable_mkdir`: directories that a power cut cannot take away.
"""

from __future__ import annotations

from raftdb.codec import CorruptionError
from raftdb.raft.storage import StorageReader
from raftdb.storage.disk import GARBAGE_PER_WRITE, DiskStorage, MetaName
from raftdb.storage.durable import durable_mkdir, fsync_dir
from raftdb.storage.logindex import LogIndex, load_log
from raftdb.storage.memory import MemoryStorage
from raftdb.storage.nospace import NO_SPACE_ERRNOS, free_bytes, is_no_space, no_space_error
from raftdb.storage.protocol import Storage, StorageWriter
from raftdb.storage.records import LogBounds, decode_log_bounds, encode_log_bounds

__all__ = [
    "GARBAGE_PER_WRITE",
    "NO_SPACE_ERRNOS",
    "CorruptionError",
    "DiskStorage",
    "LogBounds",
    "LogIndex",
    "MemoryStorage",
    "MetaName",
    "Storage",
    "StorageReader",
    "StorageWriter",
    "decode_log_bounds",
    "durable_mkdir",
    "encode_log_bounds",
    "free_bytes",
    "fsync_dir",
    "is_no_space",
    "load_log",
    "no_space_error",
]
