"""A data directory's cluster identity: which cluster its member belongs to.

Two clusters can share addresses: a cluster restored from a backup at the
addresses of the one it replaces, or a survivor recovered with
``--force-new-cluster`` while a dead member's old disk comes back. A member
of one must never take Raft messages from a member of the other: a stale
term or log from the old cluster would disturb, or overwrite, the new one.
So every data directory records its cluster's identity in a small file,
``cluster-id``, and the peers' handshake compares them (as etcd's cluster ID).

The identity is derived, never random, so that members made separately agree
without talking: a bootstrapped cluster's from its token and peer list, a
restored one's from the backup's checksum and the new peer list, a recovered
one's from its survivor's state.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Final

from raftdb.storage import durable_mkdir

__all__ = [
    "CLUSTER_ID_FILE",
    "ClusterIdError",
    "derive_cluster_id",
    "read_cluster_id",
    "write_cluster_id",
]

CLUSTER_ID_FILE: Final = "cluster-id"
_ID: Final = re.compile(r"[0-9a-f]{16}")


class ClusterIdError(Exception):
    """The ``cluster-id`` file is damaged (not 16 hex digits)."""


def derive_cluster_id(*parts: bytes | str) -> str:
    """16 hex digits of SHA-256 over the parts, each length-prefixed (so that
    ``("ab", "c")`` and ``("a", "bc")`` differ)."""
    digest = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        digest.update(len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.hexdigest()[:16]


def read_cluster_id(data_dir: Path) -> str | None:
    """The identity recorded in ``data_dir``, or ``None`` if it records none.

    Raises:
        ClusterIdError: the file exists but does not hold an identity.
        OSError: it cannot be read.
    """
    try:
        text = (data_dir / CLUSTER_ID_FILE).read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except UnicodeDecodeError:
        raise ClusterIdError(f"{data_dir / CLUSTER_ID_FILE} is damaged: not text") from None
    if not _ID.fullmatch(text):
        raise ClusterIdError(
            f"{data_dir / CLUSTER_ID_FILE} is damaged: {text[:40]!r} is not 16 hex digits"
        )
    return text


def write_cluster_id(data_dir: Path, cluster_id: str) -> None:
    """Record ``cluster_id`` in ``data_dir``, durably and atomically: a crash leaves
    the old file or the new one, never a torn one.

    Raises:
        ValueError: ``cluster_id`` is not 16 lowercase hex digits.
        OSError: the write failed.
    """
    if not _ID.fullmatch(cluster_id):
        raise ValueError(f"a cluster id is 16 lowercase hex digits, got {cluster_id!r}")
    durable_mkdir(data_dir)
    path = data_dir / CLUSTER_ID_FILE
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(cluster_id.encode("ascii") + b"\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(data_dir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
