"""The node: a Raft core driven against real storage, a state machine and the transport.

:class:`~raftdb.node.node.Node` serves the :class:`~raftdb.node.handle.NodeHandle`
that the HTTP layer talks to, beside the
:class:`~raftdb.node.ready_loop.ReadyLoop` that drives the core; the node's
errors (:mod:`~raftdb.node.errors`) are what that layer maps to HTTP.

``Node`` is imported on first access (``from raftdb.node import Node``), so
that the HTTP layer's imports of ``raftdb.node.errors`` and
``raftdb.node.handle`` do not load the node's disk, transport and metrics.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from raftdb.node.node import Node

__all__ = ["Node"]


def __getattr__(name: str) -> object:
    """``Node``, from :mod:`raftdb.node.node` on first access."""
    if name == "Node":
        from raftdb.node.node import Node

        return Node
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
