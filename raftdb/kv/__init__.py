"""The key-value layer: what the committed log means.

- :mod:`~raftdb.kv.commands`: the commands in log entries, their results,
  client sessions;
- :mod:`~raftdb.kv.txn`: multi-key transactions (compare, then a branch);
- :mod:`~raftdb.kv.changes`: the watch history (:class:`~raftdb.kv.changes.Change`,
  :class:`~raftdb.kv.changes.History`) and leases;
- :mod:`~raftdb.kv.expiry`: the leader's lease-expiry bookkeeping, without a clock;
- :mod:`~raftdb.kv.applier`: the deterministic :class:`~raftdb.kv.applier.Applier`
  every state machine applies entries with;
- :mod:`~raftdb.kv.state_machine`: the :class:`~raftdb.kv.state_machine.StateMachine`
  protocol and the in-memory state machine;
- :mod:`~raftdb.kv.snapshot`: the snapshot stream every state machine writes;
- :mod:`~raftdb.kv.sortedkeys`, :mod:`~raftdb.kv.rwlock`: what state machines
  build on.

Plugin authors import from :mod:`raftdb.state_machine`, the public face of
this package.
"""
