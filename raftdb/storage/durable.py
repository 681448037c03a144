"""Directories that survive a power loss.

``mkdir`` puts a name in the parent directory, and POSIX makes that name durable
only once the parent is fsynced: until then a power cut may take the new directory
away with everything later written into it (fsynced files included). A node whose
data directory vanished that way would start again as an empty member under its old
identity: forgetting its votes and the entries it acknowledged, which Raft forbids.
So every directory raftdb keeps data in is made with :func:`durable_mkdir`.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["durable_mkdir", "fsync_dir"]


def fsync_dir(path: Path) -> None:
    """fsync the directory ``path``: the names in it become durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable_mkdir(path: Path) -> None:
    """Make ``path`` and its missing parents, each made durable in its parent.

    The parent of ``path`` is fsynced even when ``path`` exists: an earlier run may
    have crashed between its ``mkdir`` and the sync (a few fsyncs, once per open).
    """
    missing: list[Path] = []
    p = path
    while not p.is_dir():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir()
        except FileExistsError:
            if not d.is_dir():
                raise
        fsync_dir(d.parent)
    if not missing:
        fsync_dir(path.parent)
