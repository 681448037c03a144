"""What the log did to the keys (the watch history) and the leases that own keys.

Both are replicated state beside the keys, kept by the
:class:`~raftdb.kv.applier.Applier` and persisted by the state machine:

- a :class:`Change` is one key's put or delete at one log index. The Applier
  keeps the last ``watch_history`` of them (whole indexes: a transaction's
  changes are kept or dropped together) and the *history floor*: every change
  with an index above it is retained. Watchers resume from it.
- a :class:`Lease` is a time to live shared by keys. Its id is the index of
  the entry that granted it, so every node names it alike. When it ends
  (revoked, or expired: the leader proposes that, see
  :mod:`raftdb.kv.expiry`) its keys are deleted in the same entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final

__all__ = ["DEFAULT_WATCH_HISTORY", "MAX_LEASE_TTL", "Change", "ChangeKind", "Lease"]

#: Longest lease TTL, in seconds (etcd's bound).
MAX_LEASE_TTL: Final = 9_000_000_000
#: Changes the watch history retains by default (the ``watch_history`` key).
DEFAULT_WATCH_HISTORY: Final = 50_000


class ChangeKind(IntEnum):
    """A change's kind. Part of the on-disk and snapshot formats."""

    PUT = 1
    DELETE = 2


@dataclass(frozen=True, slots=True)
class Change:
    """One key's change at one log index.

    Attributes:
        index: the entry that made it (several changes share one for a
            transaction or a lease's end).
        kind: put or delete.
        key: the key.
        value: the new value (``b""`` for a delete).
        create_index: the key's ``create_index`` after the change (0 for a delete).
        mod_index: the key's ``mod_index`` after the change: ``index``.
        prev_mod_index: the key's ``mod_index`` before (0: it did not exist),
            so a watcher can find the previous value in the history.
    """

    index: int
    kind: ChangeKind
    key: bytes
    value: bytes
    create_index: int
    mod_index: int
    prev_mod_index: int

    def to_list(self) -> list[Any]:
        """The msgpack-ready form (on disk and in snapshot streams)."""
        return [
            self.index,
            int(self.kind),
            self.key,
            self.value,
            self.create_index,
            self.mod_index,
            self.prev_mod_index,
        ]


@dataclass(frozen=True, slots=True)
class Lease:
    """A lease, as of some applied index. Immutable: a change makes a new one.

    Attributes:
        id: the index of the entry that granted it.
        ttl: its time to live, in seconds.
        renewed_index: the index of the grant or of the last keep-alive; an
            expiry proposed by the leader names it, and is ignored if the lease
            was renewed since (so a keep-alive that commits first always wins).
        keys: the keys attached to it.
    """

    id: int
    ttl: int
    renewed_index: int
    keys: frozenset[bytes]

    def to_list(self) -> list[Any]:
        """The msgpack-ready form (on disk and in snapshot streams); keys sorted."""
        return [self.id, self.ttl, self.renewed_index, sorted(self.keys)]
