"""The peer transport: Raft messages and snapshots between members over TCP.

- :mod:`~raftdb.transport.frames`: what the bytes on a peer connection mean;
- :mod:`~raftdb.transport.stream`: moving frames and snapshots over asyncio streams;
- :mod:`~raftdb.transport.transport`: :class:`Transport`, the connections themselves.
"""

from __future__ import annotations

from raftdb.transport.transport import Transport, TransportHandler

__all__ = ["Transport", "TransportHandler"]
