"""A full disk, as plugins report it and the node recognises it.

A write refused for lack of space is the one storage failure a node survives:
nothing of the write reached the data (a LevelDB batch and a SQLite
transaction are atomic), the space may come back, and the same write can then
be tried again. So a plugin reports it in one recognisable way, an
``OSError`` whose ``errno`` is ``ENOSPC`` (or ``EDQUOT``, a quota), whatever its
database says (LevelDB gives only a message, SQLite an error code), and the
node (``raftdb.node.disk``) turns exactly those into its read-only ``nospace``
alarm; every other error stays fatal.

Shared by the storage and state machine plugins (both may import
:mod:`raftdb.storage`), so that they agree on the test and the message.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Final

__all__ = ["NO_SPACE_ERRNOS", "free_bytes", "is_no_space", "no_space_error"]

#: The errnos that mean "no space for this write": the disk, or the user's quota.
NO_SPACE_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT})


def is_no_space(exc: BaseException) -> bool:
    """Whether ``exc`` (or an error it was raised from) is a write refused for lack of space."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in NO_SPACE_ERRNOS:
            return True
        seen = seen.__cause__
    return False


def no_space_error(where: str, detail: str) -> OSError | None:
    """``OSError(ENOSPC)`` naming ``where`` if ``detail`` (a database's error text)
    says the disk or the quota is full; ``None`` otherwise.

    The test is the C library's words for those errnos (``strerror``): LevelDB
    reports an I/O error as text only, made of them."""
    for number in sorted(NO_SPACE_ERRNOS):
        if os.strerror(number) in detail:
            return OSError(number, f"{where}: {detail}")
    return None


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the filesystem of ``path``.

    A quota (``EDQUOT``) does not show here: callers use it to skip work that
    is bound to fail, never to decide that a write will succeed.
    """
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize
