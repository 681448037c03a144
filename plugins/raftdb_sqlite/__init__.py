"""raftdb's SQLite storage plugin (stdlib ``sqlite3``, WAL, ``synchronous=FULL``).

Registered as ``sqlite`` in the entry-point group ``raftdb.storage``.
"""

from __future__ import annotations

from raftdb_sqlite.storage import SQLiteStorage

__all__ = ["SQLiteStorage"]
