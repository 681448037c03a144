"""The node's cluster identity over its life: found, bootstrapped or adopted.

:mod:`raftdb.node.identity` reads and writes the ``cluster-id`` file; the
transport's handshake compares identities
(:mod:`raftdb.transport.cluster_identity`). This module decides, at start,
which of three cases a data directory is in, and keeps the answer for
``GET /v1/status``:

- it records an identity: the node presents it (a restarted member, or one
  made by ``snapshot restore`` or ``recover``);
- it holds nothing and the node bootstraps a new cluster (``fresh and not
  join``): the identity is derived from the cluster token and the peer list in
  order, so that every founding member writes the same one without talking,
  and it is written before the node says anything to a peer;
- it holds nothing and the node joins (``join = true``): the node adopts the
  first identity a member presents in a handshake, recorded before any Raft
  message is taken — but only while the node is still empty, since one that
  took a log or snapshot from a member without an identity belongs to that
  member's cluster.

A data directory with Raft state and no identity (made before identities)
presents none; its members keep talking among themselves, and refuse members
that have one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from raftdb.codec import CorruptionError
from raftdb.node.identity import (
    ClusterIdError,
    derive_cluster_id,
    read_cluster_id,
    write_cluster_id,
)

__all__ = ["ClusterIdKeeper", "bootstrap_cluster_id"]

log = logging.getLogger("raftdb.node")


def bootstrap_cluster_id(cluster_token: str, cluster: Sequence[str]) -> str:
    """The identity of a cluster bootstrapped with this token and peer list (in order)."""
    return derive_cluster_id(cluster_token, *cluster)


class ClusterIdKeeper:
    """One node's cluster identity (see the module docstring).

    Args:
        data_dir: the node's data directory.
        node_id: for log lines.
    """

    __slots__ = ("_data_dir", "_empty", "_node_id", "value")

    def __init__(self, data_dir: Path, node_id: int) -> None:
        self._data_dir = data_dir
        self._node_id = node_id
        self._empty: Callable[[], bool] | None = None
        #: The identity this node presents, or None.
        self.value: str | None = None

    def open(self, *, bootstrap: str | None, empty: Callable[[], bool] | None) -> None:
        """Read the recorded identity; write ``bootstrap``'s if the node bootstraps.

        Blocking (it may fsync): run it in a worker thread.

        Args:
            bootstrap: the new cluster's identity (:func:`bootstrap_cluster_id`)
                when this node bootstraps one, else None.
            empty: when the data directory holds no Raft state (a joining
                node): tells, when a peer presents an identity, whether the
                node is still empty and may adopt it. None otherwise.

        Raises:
            CorruptionError: the ``cluster-id`` file is damaged.
            OSError: it cannot be read or written.
        """
        try:
            recorded = read_cluster_id(self._data_dir)
        except ClusterIdError as exc:
            raise CorruptionError(str(exc)) from None
        if bootstrap is not None and recorded != bootstrap:
            # An empty data directory: whatever it recorded (a start that
            # crashed before its first save, a copied file) is not this cluster's.
            write_cluster_id(self._data_dir, bootstrap)
            log.info("node %d: new cluster, cluster id %s", self._node_id, bootstrap)
            recorded = bootstrap
        self.value = recorded
        self._empty = empty if recorded is None else None

    @property
    def adopter(self) -> Callable[[str], bool] | None:
        """The transport's ``adopt_cluster_id``: set only while this node may adopt one."""
        return self._adopt if self._empty is not None else None

    def _adopt(self, cluster_id: str) -> bool:
        """Record ``cluster_id`` if this node is still empty (runs on the loop, in a
        handshake: a small file's write and two fsyncs, once in a node's life)."""
        empty = self._empty
        if empty is None or not empty():
            self._empty = None
            log.warning(
                "node %d: a peer presents cluster id %s, but this node already took data "
                "from a member without one: not adopting it",
                self._node_id,
                cluster_id,
            )
            return False
        write_cluster_id(self._data_dir, cluster_id)
        self.value = cluster_id
        self._empty = None
        log.info("node %d adopted cluster id %s from a peer", self._node_id, cluster_id)
        return True
