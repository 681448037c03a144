"""Commit notices held back briefly, for the next append to carry instead.

When a leader commits, it tells each follower the new commit index at the next
Ready (``raftdb.raft.leader.flush_commit``). Under load a later append carries
it anyway; with one client at a time, it is an extra message to every
follower, and a Ready of its own there, for every write: at one connection,
about a tenth of the cluster's CPU per write. The core marks the ones that no
client waits on (:data:`raftdb.raft.COMMIT_NOTICE`: the follower holds
everything and proposed nothing that waits for this commit), and this holder
keeps each one for at most ``delay`` seconds. If a later APP or HEARTBEAT to
the same member goes first, it carries the commit index, and the notice is
dropped; otherwise it leaves when the time is up.

What a follower pays for it is freshness at rest: a write reaches its stale
reads and its watches up to ``delay`` later (``commit_notice_delay_ms``,
2 ms by default; 0 sends every notice at once). A client waiting on a
follower (a forwarded write, a linearizable read) is not held back: the core
marks no notice to a member whose proposals wait, and a read's heartbeat round
carries the commit index itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from raftdb.raft import COMMIT_NOTICE, Message, MessageType

__all__ = ["CommitNotices"]

_SUPERSEDES = (MessageType.APP, MessageType.HEARTBEAT)


class CommitNotices:
    """Holds a leader's commit notices for up to ``delay`` seconds (see the module
    docstring); everything else passes through :meth:`route` untouched."""

    def __init__(self, send: Callable[[Sequence[Message]], None], delay: float) -> None:
        """Args:
        send: sends messages (the transport's ``send``).
        delay: the longest a notice is held, in seconds (0: never held).
        """
        self._send = send
        self._delay = delay
        self._held: dict[int, Message] = {}  # by recipient: the newest notice
        self._timer: asyncio.TimerHandle | None = None

    def route(self, messages: list[Message]) -> list[Message]:
        """The messages to send now, in order: ``messages`` without the notices,
        which are held (on the running loop). A held notice to a member that one
        of ``messages`` supersedes is dropped."""
        if self._delay <= 0:
            return messages
        held = self._held
        out: list[Message] | None = None
        for i, m in enumerate(messages):
            if m.context == COMMIT_NOTICE and m.type == MessageType.APP:
                if out is None:
                    out = messages[:i]
                held[m.to] = m
                continue
            if held and m.to in held and m.type in _SUPERSEDES:
                del held[m.to]
            if out is not None:
                out.append(m)
        if held and self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._delay, self._flush)
        return messages if out is None else out

    def cancel(self) -> None:
        """Drop what is held (the node stops leading or is stopping): the next
        heartbeat of a leader carries the commit index."""
        self._held.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _flush(self) -> None:
        self._timer = None
        if self._held:
            notices = list(self._held.values())
            self._held.clear()
            self._send(notices)
