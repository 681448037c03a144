"""The node: a Raft core driven against real storage, a state machine and the transport.

:class:`~raftdb.node.driver.Node` runs the Ready loop and serves the
:class:`~raftdb.node.handle.NodeHandle` that the HTTP layer talks to; the
node's errors (:mod:`~raftdb.node.errors`) are what that layer maps to HTTP.
"""
