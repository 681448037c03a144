"""Who may do what: bearer tokens checked in front of the whole API.

:class:`Authorizer` is the outermost ASGI app when a ``tokens_file`` is set
(:func:`raftdb.http.app.create_api`), in front of the fast path
(:class:`~raftdb.http.fast_path.KVFastPath`) and Starlette, so no request
reaches a handler unchecked, whichever of the two would answer it. Without a
tokens file it is not built at all: an open API pays nothing.

Each request is first *classified* from its method and path alone
(:func:`access_of`): which role it needs (``None``: open) and which keys it
touches (:class:`Keys`). Classification mirrors the router: it matches the
decoded path as Starlette does (:func:`~raftdb.http.params.route_path`) and
reads a key from the raw path as the handlers do
(:func:`~raftdb.http.params.raw_path_key`), so the key checked is the key
served. Only then is the ``Authorization: Bearer`` token looked up, and the
key (or a listing's ``prefix``) read, the latter only for a token limited to
prefixes. A path under a reserved root that the table does not know needs
``admin``: a route added later is closed until it is classified here.

Some requests carry their keys where the path and query do not say: a
transaction names them in its body, a lease's keys are the node's to tell.
For those (:attr:`Keys.BODY`, :attr:`Keys.LEASE`) the check here is the role
only, and the token goes on to the handler in the ASGI scope; the handler
calls :func:`check_keys` once it knows the keys, before asking the node
anything. A transaction needs ``read`` to compare and read keys, and ``write``
for the keys it writes (in either branch: which one runs is not known before).

``401 unauthorized`` (with ``WWW-Authenticate: Bearer realm="raftdb"``) means
no valid token; ``403 forbidden``, a valid token without the right. Tokens
are never logged; a refusal logs the token's name.
"""

from __future__ import annotations

import enum
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from starlette.types import ASGIApp, Receive, Scope, Send

from raftdb.http.errors import ForbiddenError, UnauthorizedError, error_response
from raftdb.http.params import parse_query, raw_path_key, route_path, show_key
from raftdb.http.raftexample import RESERVED_ROOTS
from raftdb.http.spec import errors
from raftdb.http.tokens import Role, Token, TokenStore, match_token
from raftdb.node.errors import BadRequestError

__all__ = [
    "Access",
    "Authorizer",
    "HTTPSRequiredError",
    "Keys",
    "RequireHTTPS",
    "access_of",
    "check_keys",
    "describe_security",
    "scope_token",
    "template_of",
]

logger = logging.getLogger("raftdb.auth")


class Keys(enum.Enum):
    """Which keys a request touches, for a token limited to prefixes."""

    NONE = "none"  # no key data (status, members, membership changes)
    PATH = "path"  # one key, /v1/kv/<key>
    ROOT_PATH = "root"  # one key, raftexample's /<key>
    LISTING = "listing"  # the keys under the query's prefix=
    WATCH = "watch"  # the keys under the query's prefix=, or its key=
    LOCK = "lock"  # the keys under /v1/lock/<name>/ (the lock's keys are <name>/<lease>)
    BODY = "body"  # keys named in the body: the handler checks them (check_keys)
    LEASE = "lease"  # a lease's keys: the handler checks them (check_keys)
    ANY = "any"  # keys the path does not say (a whole snapshot): refused


@dataclass(frozen=True, slots=True)
class Access:
    """What a request needs: a ``role`` (``None``: open to all) and the keys it touches."""

    role: Role | None
    keys: Keys = Keys.NONE


OPEN: Final = Access(None)
_READ: Final = Access(Role.READ)
_ADMIN: Final = Access(Role.ADMIN)
_LISTING: Final = Access(Role.READ, Keys.LISTING)

_KV_ROUTE: Final = "/v1/kv/"
_KV_RAW: Final = b"/v1/kv/"
_LOCK_ROUTE: Final = "/v1/lock/"
_LOCK_RAW: Final = b"/v1/lock/"
_ROOT_RAW: Final = b"/"
#: Where :class:`Authorizer` leaves the token for the handlers of :data:`_DEFERRED` requests.
_TOKEN_SCOPE: Final = "raftdb.token"
#: Requests whose keys only their handler knows: it checks them (:func:`check_keys`).
_DEFERRED: Final = frozenset({Keys.BODY, Keys.LEASE})
#: Route template → method → access. ``GET`` covers ``HEAD`` (Starlette's routes do).
#: ``/metrics``, ``/v1/status`` and ``/v1/cluster/status`` are added by :func:`access_of`
#: (they depend on ``public_status``). The status page's files are open always: they
#: are static, and every request the page makes carries the user's token.
_TABLE: Final[Mapping[str, Mapping[str, Access]]] = {
    "/healthz": {"*": OPEN},
    "/readyz": {"*": OPEN},
    "/openapi.json": {"*": OPEN},
    "/docs": {"*": OPEN},
    "/ui": {"*": OPEN},
    "/ui/ui.js": {"*": OPEN},
    "/ui/ui.css": {"*": OPEN},
    "/v1/kv/{key}": {
        "GET": Access(Role.READ, Keys.PATH),
        "PUT": Access(Role.WRITE, Keys.PATH),
        "DELETE": Access(Role.WRITE, Keys.PATH),
    },
    "/v1/kv": {"GET": _LISTING},
    "/v1/watch": {"GET": Access(Role.READ, Keys.WATCH)},
    # read at least; write for the keys it writes (the handler checks: check_keys)
    "/v1/txn": {"POST": Access(Role.READ, Keys.BODY)},
    "/v1/leases": {"POST": Access(Role.WRITE), "GET": _ADMIN},  # a grant touches no key
    "/v1/leases/{id}": {
        "GET": Access(Role.READ, Keys.LEASE),
        "DELETE": Access(Role.WRITE, Keys.LEASE),
    },
    "/v1/leases/{id}/keepalive": {"POST": Access(Role.WRITE, Keys.LEASE)},
    "/v1/lock/{name}": {
        "POST": Access(Role.WRITE, Keys.LOCK),
        "DELETE": Access(Role.WRITE, Keys.LOCK),
    },
    "/v1/snapshot": {"GET": Access(Role.ADMIN, Keys.ANY)},
    "/v1/cluster/members": {"GET": _READ, "POST": _ADMIN},
    "/v1/cluster/members/{id}": {"DELETE": _ADMIN},
    "/v1/cluster/leader": {"POST": _ADMIN},
    "/{key}": {
        "GET": Access(Role.READ, Keys.ROOT_PATH),
        "PUT": Access(Role.WRITE, Keys.ROOT_PATH),
        "POST": _ADMIN,  # raftexample: add member <id>
        "DELETE": _ADMIN,  # raftexample: remove member <id>
    },
    "/": {"GET": OPEN},  # the index: links to the docs
}
_PUBLIC_STATUS: Final = ("/v1/status", "/v1/cluster/status", "/metrics")
#: Templates with a path parameter other than a key: Starlette's ``{id}`` is ``[^/]+``.
_PATTERNS: Final = (
    (re.compile(r"/v1/cluster/members/[^/]+"), "/v1/cluster/members/{id}"),
    (re.compile(r"/v1/leases/[^/]+"), "/v1/leases/{id}"),
    (re.compile(r"/v1/leases/[^/]+/keepalive"), "/v1/leases/{id}/keepalive"),
)
#: Query parameters a listing (or watch) may carry for a token limited to prefixes; any
#: other might widen what it reads, so it is refused rather than guessed about.
_LISTING_PARAMS: Final = frozenset(
    {"prefix", "start", "limit", "values", "consistency", "wait_index", "wait"}
)
#: Likewise for a watch.
_WATCH_PARAMS: Final = frozenset({"prefix", "key", "since", "prev"})


def template_of(path: str) -> str | None:
    """The route template that the router would send ``path`` to; ``None``: none in the table.

    Args:
        path: the decoded path, as the router matches it (no ``root_path``).
    """
    if path.startswith(_KV_ROUTE):
        return "/v1/kv/{key}"
    if path.startswith(_LOCK_ROUTE):
        return "/v1/lock/{name}"
    if path == "/":
        return "/"
    root = path[1:].partition("/")[0]
    if root.encode("utf-8", "surrogateescape") not in RESERVED_ROOTS:
        return "/{key}"  # raftexample's key at the root of the path
    if path in _TABLE or path in _PUBLIC_STATUS:
        return path
    for pattern, template in _PATTERNS:
        if pattern.fullmatch(path):
            return template
    return None


def access_of(method: str, template: str | None, *, public_status: bool) -> Access:
    """What a request with ``method`` to a path of ``template`` needs.

    Args:
        method: the HTTP method.
        template: :func:`template_of` the path.
        public_status: ``/v1/status``, ``/v1/cluster/status`` and ``/metrics`` are open.
    """
    if template is None:
        return _ADMIN  # under a reserved root, not in the table: closed until classified
    if template in _PUBLIC_STATUS:
        return OPEN if public_status else _READ
    methods = _TABLE[template]
    found = methods.get("*") or methods.get("GET" if method == "HEAD" else method)
    if found is not None:
        return found
    if template == "/":  # raftexample's /<key> with the empty key: the handler refuses it
        return access_of(method, "/{key}", public_status=public_status)
    return _READ  # a method the route does not take: any token may learn that (405)


def _path_key(scope: Scope, raw_prefix: bytes, route_prefix_len: int) -> bytes:
    """The key the handler will read: from the raw path, else the route's part of the path.

    The same as :func:`raftdb.http.params.path_key`, without its checks (an
    empty or long key is refused by the handler, after this).
    """
    key = raw_path_key(scope, raw_prefix)
    if key is None:
        key = route_path(scope)[route_prefix_len:].encode("utf-8", "surrogateescape")
    return key


def _listing_prefixes(scope: Scope, params: frozenset[str]) -> list[bytes] | None:
    """The listing's ``prefix`` (``b""`` for none) in a list; ``None``: a query it cannot have.

    Parsed by :func:`raftdb.http.params.parse_query`, as the route parses it,
    so that ``pre%66ix=`` is checked as the ``prefix`` it is; a name outside
    ``params``, or one given twice, is no query to guess about. A watch's
    ``key=`` (exact) is checked as a prefix is: a key under the token's
    prefixes is one of its keys; with no ``key``, the ``prefix`` counts.
    """
    try:
        query = parse_query(scope, params)
    except BadRequestError:
        return None
    found = [query["key"]] if "key" in query else []
    if "prefix" in query or not found:
        found.append(query.get("prefix", b""))
    return found


def _bearer(scope: Scope) -> bytes | None:
    """The token of the request's one ``Authorization: Bearer`` header, or ``None``."""
    found: bytes | None = None
    for name, value in scope["headers"]:
        if name == b"authorization":
            if found is not None:
                return None  # two of them: which one counts is anybody's guess
            found = value
    # The scheme is case-insensitive (RFC 7235); the token is what follows it.
    if found is None or found[:7].lower() != b"bearer ":
        return None
    return found[7:].strip() or None


def _limited(token: Token) -> str:
    """How a refusal names the token and its prefixes (built only for a refusal: it is slow)."""
    shown = ", ".join(show_key(prefix) for prefix in token.prefixes or ())
    return f"token {token.name!r} is limited to keys under {shown}"


class Authorizer:
    """ASGI app: lets a request through to ``app`` only with a token that has the right.

    Args:
        app: the API (the fast path in front of Starlette).
        tokens: the tokens in force (re-read when their file changes).
        public_status: ``/v1/status``, ``/v1/cluster/status`` and ``/metrics`` answer
            without a token.
    """

    def __init__(self, app: ASGIApp, tokens: TokenStore, *, public_status: bool) -> None:
        self.app = app
        self.tokens = tokens
        self.public_status = public_status
        # access_of, worked out once for the usual methods (a dict look-up per request).
        templates = [*_TABLE, *_PUBLIC_STATUS, None]
        self._access = {
            (method, template): access_of(method, template, public_status=public_status)
            for method in ("GET", "HEAD", "PUT", "POST", "DELETE", "PATCH", "OPTIONS")
            for template in templates
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method: str = scope["method"]
        template = template_of(route_path(scope))
        access = self._access.get((method, template))
        if access is None:  # a method of its own: uncommon, worked out each time
            # Upper-cased, so that a handler comparing methods loosely could never
            # serve "put" on a read token (the router itself answers it 405).
            access = access_of(method.upper(), template, public_status=self.public_status)
        if access.role is not None:
            refusal = self._refusal(scope, method, access)
            if isinstance(refusal, Token):
                if access.keys in _DEFERRED:
                    scope[_TOKEN_SCOPE] = refusal  # for check_keys, in the handler
            else:
                await error_response(refusal)(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def _refusal(
        self, scope: Scope, method: str, access: Access
    ) -> UnauthorizedError | ForbiddenError | Token:
        """Why the request may not go on, or the token that lets it."""
        presented = _bearer(scope)
        if presented is None:
            return UnauthorizedError(
                f"{method} {scope['path']} needs a token: send Authorization: Bearer <token>"
            )
        token = match_token(self.tokens.current(), presented)
        if token is None:
            logger.debug("%s %s: an unknown token", method, scope["path"])
            return UnauthorizedError("the bearer token is not valid", invalid=True)
        assert access.role is not None
        if token.role < access.role:
            return _forbid(
                f"{method} {scope['path']} needs the {access.role.label} role; "
                f"token {token.name!r} has {token.role.label}",
            )
        if token.prefixes is None or access.keys is Keys.NONE or access.keys in _DEFERRED:
            return token
        why = self._outside_prefixes(scope, token, access.keys)
        return token if why is None else _forbid(why)

    def _outside_prefixes(self, scope: Scope, token: Token, keys: Keys) -> str | None:
        """Why the request touches keys outside the token's prefixes (``None``: it does not)."""
        if keys is Keys.PATH:
            key = _path_key(scope, _KV_RAW, len(_KV_ROUTE))
        elif keys is Keys.ROOT_PATH:
            key = _path_key(scope, _ROOT_RAW, 1)
        elif keys is Keys.LOCK:
            key = _path_key(scope, _LOCK_RAW, len(_LOCK_ROUTE)) + b"/"
        elif keys in (Keys.LISTING, Keys.WATCH):
            params = _LISTING_PARAMS if keys is Keys.LISTING else _WATCH_PARAMS
            prefixes = _listing_prefixes(scope, params)
            if prefixes is None:
                what = "a listing" if keys is Keys.LISTING else "a watch"
                names = ", ".join(sorted(params))
                return f"{_limited(token)}: {what} may only take the parameters {names}"
            verb = "list under prefix" if keys is Keys.LISTING else "watch"
            for prefix in prefixes:
                if not token.may_touch(prefix):
                    return f"{_limited(token)}: it may not {verb} {show_key(prefix)}"
            return None
        else:
            return f"{_limited(token)}; {scope['method']} {scope['path']} may touch any key"
        if token.may_touch(key):
            return None
        return f"{_limited(token)}: it may not touch {show_key(key)}"


def _forbid(why: str) -> ForbiddenError:
    logger.info("refused: %s", why)
    return ForbiddenError(why)


def scope_token(scope: Scope) -> Token | None:
    """The token that let a :attr:`Keys.BODY` or :attr:`Keys.LEASE` request through.

    ``None``: the node has no tokens file (the API is open).
    """
    token: Token | None = scope.get(_TOKEN_SCOPE)
    return token


def check_keys(
    scope: Scope, what: str, *, writes: Iterable[bytes] = (), reads: Iterable[bytes] = ()
) -> None:
    """Refuse a request whose token may not write ``writes`` or read ``reads``.

    For the handlers of requests whose keys the path does not say
    (:attr:`Keys.BODY`, :attr:`Keys.LEASE`): :class:`Authorizer` checked the
    token's role for the route and left the token in the scope; this checks
    the keys, once the handler knows them and before it asks the node.
    ``reads`` may hold prefixes (a listing): a prefix under the token's
    prefixes covers only keys under them.

    Args:
        scope: the request's scope.
        what: the request, for the message ("the transaction", "lease 7").

    Raises:
        ForbiddenError: a write with a token below ``write``, or a key outside
            the token's prefixes. Nothing when the API is open.
    """
    token = scope_token(scope)
    if token is None:
        return
    writes = list(writes)
    if writes and token.role < Role.WRITE:
        raise _forbid(
            f"{what} writes keys, which needs the write role; "
            f"token {token.name!r} has {token.role.label}"
        )
    if token.prefixes is None:
        return
    for key in (*writes, *reads):
        if not token.may_touch(key):
            raise _forbid(f"{_limited(token)}: {what} touches {show_key(key)}")


class HTTPSRequiredError(BadRequestError):
    """A plain-HTTP request to a node configured for HTTPS (``tls_cert_file``)."""

    code = "https_required"


class RequireHTTPS:
    """ASGI app: refuses every request that did not come over TLS.

    Only ``raftdb serve`` hands ``tls_cert_file`` to uvicorn; under plain
    ``uvicorn raftdb.app:app`` without ``--ssl-certfile``, a node whose
    configuration asks for HTTPS would otherwise serve tokens and data in
    clear text. Behind a server that does TLS, no plain request arrives here.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("scheme") != "https":
            refusal = HTTPSRequiredError(
                "this node is configured for HTTPS (tls_cert_file) and its server speaks plain "
                "HTTP: start it with raftdb serve, or give uvicorn --ssl-certfile/--ssl-keyfile"
            )
            await error_response(refusal)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def describe_security(document: dict[str, Any], *, public_status: bool) -> None:
    """Add the bearer scheme to the OpenAPI ``document``, and ``401``/``403`` where they apply.

    Derived from the same table the requests are checked against
    (:func:`access_of`), so that the document says what the node does.
    """
    components = document.setdefault("components", {})
    components["securitySchemes"] = {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "A token of the node's tokens_file (stored there as its SHA-256).",
        }
    }
    for template, operations in document["paths"].items():
        for method, operation in operations.items():
            access = access_of(method.upper(), template, public_status=public_status)
            if access.role is None:
                operation["security"] = []
                continue
            operation["security"] = [{"bearer": []}]
            operation["responses"].update(errors("401", "403"))
