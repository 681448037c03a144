"""The Python client of raftdb: :class:`Client` (sync) and :class:`AsyncClient` (asyncio).

It depends on httpx only and imports nothing else of raftdb. See docs/client.md.
"""

from __future__ import annotations

from raftdb.client._async import AsyncClient, AsyncKeptLease, AsyncLeadership, AsyncWatch
from raftdb.client._snapshot import SnapshotSaved
from raftdb.client._sync import Client, KeptLease, Leadership, Watch
from raftdb.client._watch import ProgressEvent, WatchEvent
from raftdb.client.errors import *  # noqa: F403
from raftdb.client.errors import __all__ as _errors
from raftdb.client.txn import Txn
from raftdb.client.types import *  # noqa: F403
from raftdb.client.types import __all__ as _types

__all__ = [
    "AsyncClient",
    "AsyncKeptLease",
    "AsyncLeadership",
    "AsyncWatch",
    "Client",
    "KeptLease",
    "Leadership",
    "ProgressEvent",
    "SnapshotSaved",
    "Txn",
    "Watch",
    "WatchEvent",
    *_errors,
    *_types,
]
