"""The peer transport: Raft messages and snapshots between members over TCP.

- :mod:`~raftdb.transport.frames`: what the bytes on a peer connection mean;
- :mod:`~raftdb.transport.stream`: moving frames over asyncio streams;
- :mod:`~raftdb.transport.address`: peer URLs, ``http://host:port``;
- :mod:`~raftdb.transport.sender`: the outbound side, a queue and a writer task per peer;
- :mod:`~raftdb.transport.listener`: the inbound side, accepting and reading peers' connections;
- :mod:`~raftdb.transport.snapshots`: streaming snapshots to and from peers;
- :mod:`~raftdb.transport.transport`: :class:`Transport`, the facade over them, and
  :class:`TransportHandler`, what it calls back.
"""

from __future__ import annotations

from raftdb.transport.transport import Transport, TransportHandler

__all__ = ["Transport", "TransportHandler"]
