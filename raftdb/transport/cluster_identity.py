"""Which cluster a peer belongs to: the handshake's rules on cluster identities.

A node's data directory may record its cluster's identity (16 hex digits; the
node layer reads, derives and writes it, ``raftdb.node.identity``). Two
clusters can share addresses and even a cluster token, for instance a cluster
restored from a backup at the addresses of the one it replaced: a stale
member of one must not step its term or log into the other. So each HELLO
carries the sender's identity when it has one (:mod:`raftdb.transport.frames`),
and each end applies these rules to the other's:

======================  ==================  ===========================================
this node               the peer            outcome
======================  ==================  ===========================================
identity X              X                   accepted
identity X              Y                   refused, naming both
identity X              none                accepted: the peer may be an empty member
                                            that adopts X; if it holds data it
                                            refuses X itself (or, being older, cannot
                                            even read the HELLO)
none, empty, adopting   X                   X is adopted, recorded before the
                                            handshake ends (so before any Raft message)
none, holding data      X                   refused: this data belongs to no cluster
                                            that X's members know
none                    none                accepted, as before identities existed
======================  ==================  ===========================================

Refusals come before authentication (there is nothing to prove to a member of
another cluster); adoption only after it, so that a stranger that cannot pass
the handshake cannot make an empty node adopt a made-up identity. The
transport does not write anything itself: the node gives it an ``adopt``
callback, which records the identity and says whether this node may still
adopt one (once it has taken data from a peer without an identity, it has
become a member of that cluster and may not).
"""

from __future__ import annotations

from collections.abc import Callable

from raftdb.transport.frames import CLUSTER_ID, WireError

__all__ = ["Adopt", "ClusterIdentity"]

#: Records an identity this node adopts, durably, before returning True;
#: returns False when this node may no longer adopt one (it holds data now).
#: An ``OSError`` fails the handshake in progress.
Adopt = Callable[[str], bool]


class ClusterIdentity:
    """This node's cluster identity as its handshakes present and check it.

    Args:
        value: the identity its data directory records, or None.
        adopt: given only to a node with none whose data directory is empty
            (a member joining a running cluster): how to record the first
            identity a peer presents. See :data:`Adopt`.

    Raises:
        ValueError: ``value`` is not 16 lowercase hex digits, or both are given.
    """

    __slots__ = ("_adopt", "_value")

    def __init__(self, value: str | None = None, *, adopt: Adopt | None = None) -> None:
        if value is not None and not CLUSTER_ID.fullmatch(value):
            raise ValueError(f"a cluster id is 16 lowercase hex digits, not {value!r}")
        if value is not None and adopt is not None:
            raise ValueError("a node that has a cluster id adopts none")
        self._value = value
        self._adopt = adopt

    @property
    def value(self) -> str | None:
        """The identity this node presents (adopted ones included), or None."""
        return self._value

    @property
    def adopting(self) -> bool:
        """Whether this node would adopt the next identity a peer presents."""
        return self._adopt is not None

    def check(self, theirs: str | None, who: str) -> None:
        """Refuse a peer of another cluster (before authentication).

        Args:
            theirs: the identity the peer's HELLO carries, or None.
            who: the peer, for the message (``node 2 at http://...``).

        Raises:
            WireError: the rules (module docstring) refuse the peer, saying why.
        """
        mine = self._value
        if theirs is None or theirs == mine:
            return
        if mine is not None:
            raise WireError(
                f"{who} is in cluster id {theirs}, this node in cluster id {mine} "
                "(members of different clusters refuse each other)"
            )
        if self._adopt is None:
            raise WireError(
                f"{who} is in cluster id {theirs}, and this node's data records no cluster "
                "id (it predates cluster ids, or its cluster was restored or recovered as "
                "a new one since): refusing it"
            )

    def settle(self, theirs: str | None, who: str) -> None:
        """After authentication: check again, and adopt ``theirs`` if this node
        is waiting for an identity. Synchronous, so that two handshakes
        finishing at once cannot both adopt.

        Raises:
            WireError: refused (another handshake adopted another identity
                meanwhile, or this node may no longer adopt one).
            OSError: recording the identity failed.
        """
        self.check(theirs, who)
        adopt = self._adopt
        if theirs is None or adopt is None:
            return
        if not adopt(theirs):
            self._adopt = None
            raise WireError(
                f"{who} is in cluster id {theirs}, and this node already holds data but "
                "records no cluster id: refusing it"
            )
        self._value = theirs
        self._adopt = None
