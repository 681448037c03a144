"""Who is at the other end of a peer connection: the handshake and the peer credentials.

Theory of operation
-------------------
Every peer connection, for messages or for a snapshot, opens with a handshake
and carries nothing else until it succeeds. The node that dials (the
*dialer*) names itself and the node it means to reach; the node that accepts
(the *listener*) checks that the dialer is a member, and each end checks that
the other is who it says. What "checks" means depends on :class:`PeerAuth`,
built by the node from its configuration:

``none`` (loopback clusters, or ``insecure_peers``)
    Each end sends a HELLO (protocol version, node id, cluster token, and
    the cluster identity if it has one). This
    catches misconfiguration and nothing more: whoever reaches the port can
    claim any member's id.

``secret`` (``peer_secret``): a mutual challenge–response, HMAC-SHA256::

    dialer   -> listener   HELLO [2, d, token, l, nonce_d]
    listener -> dialer     HELLO [2, l, token, d, nonce_l]   AUTH [mac_l]
    dialer   -> listener   AUTH [mac_d]                      (then MESSAGES...)

    mac_<role> = HMAC-SHA256(secret, msgpack [label, role, 2, token, d, l, nonce_d, nonce_l])

    Each side's proof covers both fresh 32-byte nonces, so a recorded
    exchange is worthless later (replay); the role ("listener"/"dialer"), so
    a listener's proof cannot be sent back as a dialer's (reflection); both
    ids, so a proof made for one pair of members is worthless for another
    pair (a relay that rewrites ids); and the cluster token. The listener
    proves itself first and the dialer checks the proof before it sends
    anything more, so a stranger's listener (a peer URL pointing at an
    attacker, say a member added through the API) learns only the dialer's
    HELLO: its id, the id it meant to reach, the cluster token, its cluster
    identity and a random nonce. The secret never crosses the wire. After the handshake the frames
    travel in clear text and are not integrity-protected: this mode
    authenticates the connection against strangers, not against someone who
    can rewrite the traffic on the path (use TLS for that).

``tls`` (``peer_cert_file``, ``peer_key_file``, ``peer_ca_file``): mutual TLS
    Both ends present a certificate signed by the cluster CA, and only that
    CA is trusted; the dialer also checks the listener's certificate against
    the host of the peer URL it dialed. The HELLO exchange then runs inside
    TLS, and the id each end claims must be named by its certificate:
    ``raftdb-member-<id>`` as a DNS name or as the common name.

In every mode each end also checks the other's cluster identity
(:mod:`raftdb.transport.cluster_identity`): a peer of another cluster is
refused before any proof is exchanged (the listener first answers with its
own HELLO, so that the dialer can log both identities), and a node waiting
for an identity adopts its peer's only once the peer is proven, before the
handshake ends and so before any Raft message.

The listener reads the dialer's first frame under the handshake ceiling
(:func:`~raftdb.transport.stream.read_control_frame`), within the listener's
handshake deadline. A failed handshake raises :class:`WireError` with one
line saying why; neither secrets nor proofs ever go into that text or a log.
Once the handshake is done, the listener binds the connection to the proven
id, and every message on it must carry that id as its sender
(:mod:`raftdb.transport.listener`): a member cannot speak for another one.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import ssl
from collections.abc import Callable
from typing import Any, Final, Literal

from raftdb.codec import pack
from raftdb.transport.cluster_identity import ClusterIdentity
from raftdb.transport.frames import (
    NONCE_BYTES,
    PROTOCOL_VERSION,
    FrameKind,
    Hello,
    WireError,
    decode_auth,
    decode_hello,
    encode_auth,
    encode_hello,
)
from raftdb.transport.stream import STREAM_LIMIT, abort, read_control_frame, set_nodelay

__all__ = [
    "MEMBER_NAME_PREFIX",
    "Handshake",
    "PeerAuth",
    "certificate_names",
    "member_name",
    "ssl_reason",
]

#: A member's certificate names it ``raftdb-member-<id>`` (DNS name or common name).
MEMBER_NAME_PREFIX: Final = "raftdb-member-"
#: The shortest peer secret accepted, in bytes (128 bits, as an HMAC key should have).
MIN_SECRET_BYTES: Final = 16
#: Domain separation: these proofs are for this handshake and nothing else.
_LABEL: Final = "raftdb peer handshake"
_LISTENER: Final = "listener"
_DIALER: Final = "dialer"

PeerAuthMode = Literal["none", "secret", "tls"]


def member_name(node_id: int) -> str:
    """The name a member's certificate must carry: ``raftdb-member-<id>``."""
    return f"{MEMBER_NAME_PREFIX}{node_id}"


def certificate_names(cert: Any) -> set[str]:
    """The DNS names and common names in ``cert`` (as ``SSLSocket.getpeercert()`` gives it)."""
    names: set[str] = set()
    if not isinstance(cert, dict):
        return names
    for kind, value in cert.get("subjectAltName", ()):
        if kind == "DNS":
            names.add(value)
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                names.add(value)
    return names


def _tls_contexts(cert_file: str, key_file: str, ca_file: str) -> tuple[ssl.SSLContext, ...]:
    """The listener's and the dialer's contexts: mutual TLS, trusting the cluster CA only."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.verify_mode = ssl.CERT_REQUIRED
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED, check_hostname
    for context in (server, client):
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_verify_locations(cafile=ca_file)
        context.load_cert_chain(cert_file, key_file)
    return server, client


def ssl_reason(exc: ssl.SSLError) -> str:
    """Why a TLS handshake failed, in a few words (OpenSSL's verify message if any)."""
    if isinstance(exc, ssl.SSLCertVerificationError) and exc.verify_message:
        return f"certificate verify failed: {exc.verify_message}"
    return str(exc.reason or exc.strerror or exc).lower().replace("_", " ")


class PeerAuth:
    """How members prove who they are: nothing, a shared secret, or certificates.

    Build one with :meth:`none`, :meth:`with_secret` or :meth:`with_tls`. It
    holds the secret or the loaded TLS contexts, never shows the secret
    (``repr`` names the mode only), and is read by :class:`Handshake`.
    Certificates and keys are read once, here: rotating them takes a restart.
    """

    __slots__ = ("_secret", "client_context", "mode", "server_context")

    def __init__(
        self,
        mode: PeerAuthMode,
        secret: bytes | None = None,
        contexts: tuple[ssl.SSLContext, ...] = (),
    ) -> None:
        self.mode: PeerAuthMode = mode
        self._secret = secret
        #: The listener's and the dialer's TLS contexts (``tls`` only).
        self.server_context: ssl.SSLContext | None = contexts[0] if contexts else None
        self.client_context: ssl.SSLContext | None = contexts[1] if contexts else None

    @classmethod
    def none(cls) -> PeerAuth:
        """No peer authentication: HELLO only (loopback or ``insecure_peers``)."""
        return cls("none")

    @classmethod
    def with_secret(cls, secret: bytes) -> PeerAuth:
        """A shared secret proved by challenge–response.

        Raises:
            ValueError: shorter than :data:`MIN_SECRET_BYTES` (the secret is not shown).
        """
        if len(secret) < MIN_SECRET_BYTES:
            raise ValueError(f"a peer secret must be at least {MIN_SECRET_BYTES} bytes long")
        return cls("secret", secret=bytes(secret))

    @classmethod
    def with_tls(cls, cert_file: str, key_file: str, ca_file: str) -> PeerAuth:
        """Mutual TLS with this member's certificate and key, and the cluster CA.

        Raises:
            ValueError: a file cannot be read or is not a certificate, key or CA.
        """
        try:
            contexts = _tls_contexts(cert_file, key_file, ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(
                f"cannot load the peer certificate {cert_file!r}, key {key_file!r} "
                f"or CA {ca_file!r}: {exc}"
            ) from None
        return cls("tls", contexts=contexts)

    @property
    def secret(self) -> bytes | None:
        """The shared secret (``secret`` mode), else None. Never log it."""
        return self._secret

    def __repr__(self) -> str:
        return f"PeerAuth({self.mode!r})"


class Handshake:
    """This node's side of the handshake, as dialer (:meth:`dial`) and as listener (:meth:`accept`).

    Args:
        node_id: this node's id.
        cluster_token: the cluster's name; a peer with another is refused.
        auth: how peers prove who they are (see the module docstring).
        identity: this node's cluster identity (default: none, and adopting
            none, as a node before identities).
    """

    __slots__ = ("auth", "cluster_token", "identity", "node_id")

    def __init__(
        self,
        node_id: int,
        cluster_token: str,
        auth: PeerAuth,
        identity: ClusterIdentity | None = None,
    ) -> None:
        self.node_id = node_id
        self.cluster_token = cluster_token
        self.auth = auth
        self.identity = identity if identity is not None else ClusterIdentity()
        # Fail now, not at the first connection, if the token cannot be sent.
        encode_hello(Hello(PROTOCOL_VERSION, node_id, cluster_token))

    # -- dialer --------------------------------------------------------------------------

    async def dial(
        self, host: str, port: int, peer_id: int, where: str
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Connect to ``peer_id`` at ``host:port`` and run the handshake (the caller bounds it).

        Args:
            where: the peer's URL, for error messages.

        Raises:
            WireError: the other end is not ``peer_id``, failed to prove it, or
                refused us (TLS failures included), saying why.
            EOFError, OSError: the connection closed or failed.
        """
        context = self.auth.client_context
        try:
            reader, writer = await asyncio.open_connection(
                host,
                port,
                limit=STREAM_LIMIT,
                ssl=context,
                server_hostname=host if context is not None else None,
            )
        except ssl.SSLError as exc:
            raise WireError(f"TLS handshake with {where} failed: {ssl_reason(exc)}") from None
        try:
            set_nodelay(writer)
            await self._dial(reader, writer, peer_id, where)
        except ssl.SSLError as exc:
            await abort(writer)
            raise WireError(f"TLS with {where} failed: {ssl_reason(exc)}") from None
        except BaseException:
            await abort(writer)
            raise
        return reader, writer

    async def _dial(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer_id: int, where: str
    ) -> None:
        me = self.node_id
        secret = self.auth.secret
        nonce_d = secrets.token_bytes(NONCE_BYTES) if secret is not None else b""
        identity = self.identity
        hello = Hello(PROTOCOL_VERSION, me, self.cluster_token, peer_id, nonce_d, identity.value)
        writer.write(encode_hello(hello))
        try:
            hello = await self._read_hello(reader)
        except EOFError:
            raise EOFError(f"{where} closed the connection before its HELLO") from None
        if hello.node_id != peer_id:
            raise WireError(f"{where} is node {hello.node_id}, not node {peer_id}")
        if hello.peer_id not in (0, me):
            raise WireError(f"node {peer_id} at {where} answered node {hello.peer_id}, not {me}")
        who = f"node {peer_id} at {where}"
        identity.check(hello.cluster_id, who)
        if self.auth.mode == "tls":
            self._check_certificate(writer, peer_id, who)
        if secret is None:
            if hello.nonce:
                raise WireError(
                    f"node {peer_id} at {where} uses a peer secret and this node does not"
                )
            identity.settle(hello.cluster_id, who)
            return
        if not hello.nonce:
            raise WireError(f"node {peer_id} at {where} uses no peer secret and this node does")
        proof = decode_auth(await read_control_frame(reader, FrameKind.AUTH))
        expected = self._mac(_LISTENER, me, peer_id, nonce_d, hello.nonce)
        if not hmac.compare_digest(proof, expected):
            raise WireError(
                f"node {peer_id} at {where} failed to prove it holds the peer secret "
                "(another peer_secret, or not a member of this cluster)"
            )
        # Only now, with the listener proven, does this node adopt its
        # identity (if waiting for one) and say anything more.
        identity.settle(hello.cluster_id, who)
        writer.write(encode_auth(self._mac(_DIALER, me, peer_id, nonce_d, hello.nonce)))

    # -- listener --------------------------------------------------------------------------

    async def accept(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        admit: Callable[[int], None],
    ) -> int:
        """Run the listener's side on an accepted connection; the caller bounds the time.

        Args:
            admit: called with the id the dialer claims, before this node
                answers; raises :class:`WireError` to refuse it (a stranger).

        Returns:
            The dialer's id, proven as far as :attr:`auth` proves anything.

        Raises:
            WireError: a bad or refused handshake (TLS failures included), saying why.
            EOFError, OSError: the connection closed or failed.
        """
        if self.auth.server_context is not None and writer.get_extra_info("ssl_object") is None:
            try:
                await writer.start_tls(self.auth.server_context)
            except ssl.SSLError as exc:
                raise WireError(f"TLS handshake failed: {ssl_reason(exc)}") from None
            except ConnectionResetError:
                # asyncio sometimes reports a failed server-side handshake as
                # a lost connection, without OpenSSL's reason.
                raise WireError(
                    "TLS handshake failed: the connection was lost (a caller without "
                    "peer TLS, or one that refused this node's certificate)"
                ) from None
        try:
            return await self._accept(reader, writer, admit)
        except ssl.SSLError as exc:
            raise WireError(f"TLS failed: {ssl_reason(exc)}") from None

    async def _accept(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        admit: Callable[[int], None],
    ) -> int:
        me = self.node_id
        hello = await self._read_hello(reader, writer)
        sender = hello.node_id
        if sender == me:
            raise WireError(f"the caller claims to be this node ({sender})")
        identity = self.identity
        token = self.cluster_token
        if hello.peer_id and hello.peer_id != me:
            # Say who this is (nothing more), so that the dialer can log which
            # node its peer URL actually reaches.
            writer.write(encode_hello(Hello(PROTOCOL_VERSION, me, token, sender)))
            raise WireError(f"node {sender} meant to reach node {hello.peer_id}, not node {me}")
        admit(sender)
        who = f"node {sender}"
        try:
            identity.check(hello.cluster_id, who)
        except WireError:
            if identity.value is not None:
                # Another cluster's member: say which cluster this is, so that
                # its log names both identities too.
                reply = Hello(PROTOCOL_VERSION, me, token, sender, cluster_id=identity.value)
                writer.write(encode_hello(reply))
            raise
        if self.auth.mode == "tls":
            self._check_certificate(writer, sender, f"the caller (node {sender})")
        secret = self.auth.secret
        if secret is None:
            if hello.nonce:
                raise WireError(f"node {sender} uses a peer secret and this node does not")
            identity.settle(hello.cluster_id, who)
            writer.write(
                encode_hello(Hello(PROTOCOL_VERSION, me, token, sender, cluster_id=identity.value))
            )
            return sender
        if not hello.nonce:
            raise WireError(f"node {sender} uses no peer secret and this node does")
        nonce_l = secrets.token_bytes(NONCE_BYTES)
        writer.write(
            encode_hello(Hello(PROTOCOL_VERSION, me, token, sender, nonce_l, identity.value))
            + encode_auth(self._mac(_LISTENER, sender, me, hello.nonce, nonce_l))
        )
        try:
            proof = decode_auth(await read_control_frame(reader, FrameKind.AUTH))
        except EOFError:
            raise WireError(f"node {sender} closed the connection before its proof") from None
        if not hmac.compare_digest(proof, self._mac(_DIALER, sender, me, hello.nonce, nonce_l)):
            raise WireError(f"node {sender} failed to prove it holds the peer secret")
        identity.settle(hello.cluster_id, who)
        return sender

    # -- shared ------------------------------------------------------------------------------

    async def _read_hello(
        self, reader: asyncio.StreamReader, answer: asyncio.StreamWriter | None = None
    ) -> Hello:
        """The other end's HELLO: the next frame, of this protocol version and cluster.

        ``answer`` (the listener's side): a dialer of another protocol version
        is sent this node's HELLO before the refusal, so that its log names
        both versions too.
        """
        hello = decode_hello(await read_control_frame(reader, FrameKind.HELLO))
        if hello.version != PROTOCOL_VERSION:
            if answer is not None:
                answer.write(
                    encode_hello(Hello(PROTOCOL_VERSION, self.node_id, self.cluster_token))
                )
            raise WireError(
                f"node {hello.node_id} speaks peer protocol version {hello.version}, "
                f"this node version {PROTOCOL_VERSION}: members must run raftdb versions "
                "that share a protocol (see docs/formats.md)"
            )
        if hello.cluster_token != self.cluster_token:
            raise WireError(
                f"node {hello.node_id} is in cluster {hello.cluster_token!r}, "
                f"not {self.cluster_token!r}"
            )
        return hello

    def _mac(self, role: str, dialer: int, listener: int, nonce_d: bytes, nonce_l: bytes) -> bytes:
        """One side's proof (see the module docstring); ``secret`` mode only."""
        assert self.auth.secret is not None
        data = pack(
            [_LABEL, role, PROTOCOL_VERSION, self.cluster_token, dialer, listener, nonce_d, nonce_l]
        )
        return hmac.new(self.auth.secret, data, hashlib.sha256).digest()

    @staticmethod
    def _check_certificate(writer: asyncio.StreamWriter, node_id: int, who: str) -> None:
        """The TLS certificate at the other end must name ``raftdb-member-<node_id>``."""
        names = certificate_names(writer.get_extra_info("peercert"))
        if member_name(node_id) not in names:
            members = sorted(n for n in names if n.startswith(MEMBER_NAME_PREFIX))
            raise WireError(
                f"{who}: its certificate names {', '.join(members) or 'no member'}, "
                f"not {member_name(node_id)}"
            )
