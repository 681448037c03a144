"""The REST API: :func:`create_api` builds the Starlette app over a :class:`NodeHandle`.

The routes live in small modules (:mod:`~raftdb.http.kv`, :mod:`~raftdb.http.watch`,
:mod:`~raftdb.http.txn`, :mod:`~raftdb.http.leases`, :mod:`~raftdb.http.lock`,
:mod:`~raftdb.http.cluster`, :mod:`~raftdb.http.cluster_status`,
:mod:`~raftdb.http.snapshot`, :mod:`~raftdb.http.meta`, :mod:`~raftdb.http.ui` (the
status page), :mod:`~raftdb.http.openapi`, :mod:`~raftdb.http.raftexample`),
each describing its operations for the OpenAPI document beside them; errors become
HTTP answers in one place (:func:`raftdb.http.errors.error_response`), reached
through Starlette's exception handlers, with a last guard that turns any
unexpected exception into a logged ``500`` JSON answer rather than a dropped
connection. In front of it, :class:`~raftdb.http.fast_path.KVFastPath` answers
the common key-value requests without Starlette, the same way for less CPU; in
front of everything, when the node has a ``tokens_file``,
:class:`~raftdb.http.auth.Authorizer` checks each request's bearer token, so
neither path serves a request it has not let through.
The API talks to the node only through :class:`NodeHandle`, so tests run it
over an in-memory fake. ``docs/api.md`` is the reference.
"""

from __future__ import annotations

import re
from typing import Final

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from raftdb.config import NodeConfig
from raftdb.http.auth import Authorizer, RequireHTTPS
from raftdb.http.cluster import cluster_routes
from raftdb.http.cluster_status import cluster_status_routes
from raftdb.http.errors import (
    NotFoundError,
    ReservedPathError,
    error_response,
    handle_error,
    log_late_error,
)
from raftdb.http.fast_path import KVFastPath
from raftdb.http.kv import kv_routes
from raftdb.http.leases import lease_routes
from raftdb.http.lock import lock_routes
from raftdb.http.meta import meta_routes
from raftdb.http.openapi import docs_routes
from raftdb.http.raftexample import RESERVED_ROOTS, raftexample_routes
from raftdb.http.snapshot import snapshot_routes
from raftdb.http.tokens import TokenStore
from raftdb.http.txn import txn_routes
from raftdb.http.ui import ui_routes
from raftdb.http.watch import watch_routes
from raftdb.node.errors import NodeError
from raftdb.node.handle import NodeHandle

__all__ = ["create_api"]

_RESERVED_LIST: Final = "v1/, healthz, readyz, metrics, docs, openapi.json and ui"


class _Guard:
    """Last line: an unexpected exception becomes a logged ``500`` JSON answer.

    Sits inside Starlette's ``ServerErrorMiddleware`` so that a bug in one
    handler neither re-raises into the server (which would close the
    connection) nor answers with a traceback.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception as exc:
            if started:  # too late for an error answer: log it, let the server close
                log_late_error(exc)
                raise
            await error_response(exc)(scope, receive, send)


def _check_shadowing(routes: list[Route]) -> None:
    """Refuse a route that raftexample's ``/<key>``, as the fast path answers it, would hide.

    :class:`KVFastPath` answers ``GET``/``PUT /<key>`` whenever the key's
    first segment is not a reserved root, without asking the router; that is
    right only while every other route but ``/`` lies under a reserved root.
    """
    for route in routes:
        root = route.path[1:].partition("/")[0]
        if route.path != "/" and root.encode() not in RESERVED_ROOTS:
            raise RuntimeError(
                f"route {route.path} is outside the reserved roots: add its root to "
                "raftdb.http.raftexample.RESERVED_ROOTS, or raftexample's /<key> takes its requests"
            )


def create_api(
    node: NodeHandle,
    config: NodeConfig,
    *,
    fast_path: bool = True,
    tokens: TokenStore | None = None,
) -> ASGIApp:
    """The REST API over ``node``.

    Args:
        node: the running node (or a fake), reached only through :class:`NodeHandle`.
        config: the node's configuration (the API uses its size limits, and
            ``tokens_file`` and ``public_status``).
        fast_path: answer the common KV requests without Starlette
            (:class:`~raftdb.http.fast_path.KVFastPath`, the same answers for less
            CPU); off, the bare Starlette app, which tests compare it with.
        tokens: the tokens in force; default: read from ``config.tokens_file``
            when it is set (``raftdb.app`` reads them before the node starts,
            so that a bad file stops it first).

    Returns:
        The ASGI app: the Starlette app, behind the fast path unless
        ``fast_path`` is false, behind the token check when there are tokens
        (none: not a single added step per request), behind a refusal of
        plain HTTP when ``config.tls_cert_file`` is set (:class:`RequireHTTPS`).
        It has no lifespan of its own: whoever made ``node`` starts and stops
        it (``raftdb.app``).

    Raises:
        ConfigError: ``config.tokens_file`` is wrong (when ``tokens`` is not given).
    """
    if tokens is None and config.tokens_file:
        tokens = TokenStore(config.tokens_file)
    api = _create_api(node, config, fast_path=fast_path)
    if tokens is not None:
        api = Authorizer(api, tokens, public_status=config.public_status)
    if config.tls_cert_file:
        api = RequireHTTPS(api)
    return api


def _create_api(node: NodeHandle, config: NodeConfig, *, fast_path: bool) -> ASGIApp:
    """The API without the token check: see :func:`create_api`."""
    explicit: list[BaseRoute] = [
        *kv_routes(node, config),
        *watch_routes(node, config),
        *txn_routes(node, config),
        *lease_routes(node, config),
        *lock_routes(node, config),
        *cluster_routes(node, config),
        *cluster_status_routes(node, config),
        *snapshot_routes(node, config),
        *meta_routes(node, config),
        *ui_routes(node, config),
        *docs_routes(node, config),
    ]
    explicit_routes = [route for route in explicit if isinstance(route, Route)]

    def reserved(request: Request, key: bytes) -> Response:
        """The answer for a raftexample-style path under a reserved root."""
        path = "/" + key.decode("utf-8", "replace")
        method = request.method
        allowed = sorted(
            {
                allowed_method
                for route in explicit_routes
                if route.path_regex.match(path)
                for allowed_method in (route.methods or ())
            }
        )
        exc: NodeError
        if allowed:
            exc = ReservedPathError(
                f"{method} {path} is not part of the API ({path} answers "
                f"{', '.join(allowed)}): it is a reserved path, not a key; "
                f"to use it as a key, go through /v1/kv{path}"
            )
        elif key.partition(b"/")[0] == b"v1":
            exc = NotFoundError(f"no endpoint {method} {path}; /docs lists the API")
        else:
            exc = ReservedPathError(
                f"{path} is under a reserved root path ({_RESERVED_LIST}): "
                f"raftexample-style keys cannot start with these; use /v1/kv{path}"
            )
        return error_response(exc)

    routes = [*explicit, *raftexample_routes(node, config, reserved)]
    for route in routes:
        if isinstance(route, Route) and route.path_regex.pattern.endswith("$"):
            # Python's "$" also matches before a final newline: "/\n" was the
            # index route, "/healthz\n" the health check, not the keys they are.
            route.path_regex = re.compile(route.path_regex.pattern[:-1] + r"\Z")
    app = Starlette(
        routes=routes,
        middleware=[Middleware(_Guard)],
        exception_handlers={
            NodeError: handle_error,
            HTTPException: handle_error,
            ClientDisconnect: handle_error,
        },
    )
    if not fast_path:
        return app
    _check_shadowing(explicit_routes)
    return KVFastPath(app, node, config)
