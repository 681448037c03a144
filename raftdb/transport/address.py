"""Peer URLs: one parser of ``http://host:port`` for the config, the API and the transport."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["PeerURL", "parse_peer_url"]


@dataclass(frozen=True, slots=True)
class PeerURL:
    """A checked raftexample-style peer URL.

    Attributes:
        url: the URL as given, without surrounding blanks or a trailing ``/``
            (the form the cluster list and the membership keep).
        host: the host to dial or bind, without the brackets of an IPv6 address.
        port: the TCP port (0 only for a listener, where it means "any").
    """

    url: str
    host: str
    port: int


def parse_peer_url(url: str, *, listen: bool = False) -> PeerURL:
    """Check a peer URL, ``http://host:port`` (an IPv6 host in brackets: ``http://[::1]:12379``).

    Args:
        url: the URL; surrounding blanks and one trailing ``/`` are allowed.
        listen: accept port 0 (an ephemeral port, for a listener).

    Raises:
        ValueError: ``bad peer URL '<url>': <why>``, if it is anything else.
    """
    text = url.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad peer URL {url!r}: {exc}") from None
    if parts.scheme != "http":
        raise ValueError(f"bad peer URL {url!r}: expected http://host:port")
    if not parts.hostname:
        raise ValueError(f"bad peer URL {url!r}: expected http://host:port with a host")
    if port is None or (port == 0 and not listen):
        raise ValueError(f"bad peer URL {url!r}: expected http://host:port with a port")
    if parts.username or parts.password or parts.path not in ("", "/"):
        raise ValueError(f"bad peer URL {url!r}: expected http://host:port, nothing more")
    if parts.query or parts.fragment:
        raise ValueError(f"bad peer URL {url!r}: expected http://host:port, nothing more")
    return PeerURL(text.rstrip("/"), parts.hostname, port)
