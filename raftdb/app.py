"""The ASGI application: ``uvicorn raftdb.app:app``.

``app`` is built on first access from the environment (``RAFTDB_CONFIG``, a
TOML file, and ``RAFTDB_*`` variables; see :mod:`raftdb.config`). A bad
configuration ends the process there with one line on stderr and exit status
2: no traceback, no half-started server. ``raftdb serve`` builds the same
:class:`RaftdbApp` from its flags.

:class:`RaftdbApp` speaks the ASGI lifespan protocol itself: on startup it
makes the node (``raftdb.node.Node(config)``) and awaits ``node.start()``;
on shutdown, ``node.stop()``. If the node cannot start, the server is told
``lifespan.startup.failed`` with a one-line reason and exits. Requests are
served by :func:`raftdb.http.app.create_api` over the running node.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, Protocol

from starlette.types import ASGIApp, Receive, Scope, Send

from raftdb.codec import CorruptionError
from raftdb.config import ConfigError, NodeConfig, load_config, unknown_environment
from raftdb.http.app import create_api
from raftdb.http.errors import error_response
from raftdb.http.tokens import TokenStore
from raftdb.node.errors import NodeError, NotReadyError
from raftdb.node.handle import NodeHandle
from raftdb.plugins import PluginError
from raftdb.raft.errors import RaftConfigError

__all__ = [
    "NodeFactory",
    "RaftdbApp",
    "RunningNode",
    "app_from_environment",
    "default_node",
    "tune_gc",
]

logger = logging.getLogger("raftdb.app")

#: Exit status for a bad configuration (as argparse uses for bad usage).
CONFIG_EXIT_STATUS = 2


class RunningNode(NodeHandle, Protocol):
    """A :class:`NodeHandle` the app starts and stops (``raftdb.node.Node``)."""

    async def start(self) -> None:
        """Open storage, recover, start the Raft loop and the peer transport."""
        ...

    async def stop(self) -> None:
        """Stop serving, finish in-flight work, close storage."""
        ...

    def end_streams(self) -> None:
        """The server is shutting down: end watch streams and blocking waits now.

        Called on the loop when the server gets SIGTERM or SIGINT, before its
        graceful shutdown waits for open connections: a watch stream never
        ends by itself, so without this the server would wait for every
        watcher to hang up before it stopped the node.
        """
        ...


NodeFactory = Callable[[NodeConfig], RunningNode]

#: Start failures that are about the setting or the machine, told in one line.
_EXPECTED_START_ERRORS = (
    ConfigError,
    RaftConfigError,
    PluginError,
    CorruptionError,
    NodeError,
    OSError,
)


def default_node(config: NodeConfig) -> RunningNode:
    """``raftdb.node.Node(config)``, imported when the node starts: a process
    that only makes the app (tests with a fake node, ``raftdb config``) does not
    load the node's disk, transport and metrics."""
    from raftdb.node import Node

    node: RunningNode = Node(config, on_fatal=_exit_on_fatal)
    return node


def _exit_on_fatal(why: str) -> None:
    """A node that stopped serving for good takes its server down with it
    (SIGTERM: uvicorn shuts down gracefully), so a process manager notices."""
    print(f"raftdb: the node failed and the server exits: {why}", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)


def _end_streams_on_exit_signals(node: RunningNode) -> None:
    """Make SIGTERM and SIGINT end the node's watch streams before the server's
    graceful shutdown waits for connections (:meth:`RunningNode.end_streams`).

    uvicorn installs its exit handlers with ``signal.signal`` before the
    lifespan starts, in the main thread, and restores the previous ones when it
    exits; each of them is chained here (it still runs, first). Under a server
    that handles neither signal, or off the main thread (tests serving from a
    thread), nothing is changed.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(sig)
        if not callable(previous):  # SIG_DFL, SIG_IGN: nobody shuts down gracefully
            continue

        def handler(
            signum: int,
            frame: FrameType | None,
            previous: Callable[[int, FrameType | None], Any] = previous,
        ) -> None:
            previous(signum, frame)
            with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to end
                loop.call_soon_threadsafe(node.end_streams)

        signal.signal(sig, handler)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    detail = text[0] if text else type(exc).__name__
    return detail if detail.startswith("raftdb:") else f"{type(exc).__name__}: {detail}"


def _setup_logging() -> None:
    """Send raftdb's log lines to stderr, uvicorn-style, unless logging is configured."""
    package = logging.getLogger("raftdb")
    if package.handlers or logging.getLogger().handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:%(padding)s%(name)s: %(message)s"))
    handler.addFilter(_Padding())
    package.addHandler(handler)
    package.setLevel(logging.INFO)


class _Padding(logging.Filter):
    """Align levels as uvicorn does (``INFO:     ``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.padding = " " * max(1, 9 - len(record.levelname))
        return True


#: Allocations between two young-generation collections in a server (CPython's default: 700).
GC_YOUNG_THRESHOLD = 20_000


def tune_gc() -> None:
    """Make the garbage collector cheap for a long-running server, once started.

    Every request allocates a few dozen container objects and frees nearly all
    of them by reference counting; CPython's default threshold still ran a
    young collection every 700 allocations, and its full passes walked every
    object of the loaded modules. ``gc.freeze()`` moves what start-up made
    (modules, the API, the node) out of the collector's sight; the higher
    young threshold makes collections rarer (cycles are still collected, a few
    megabytes later). Measured under the cluster benchmark (64 connections,
    two runs each, noisy): p99 of linearizable reads ≈ 16 ms instead of ≈ 46 ms,
    of writes ≈ 34 ms instead of ≈ 44 ms.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


class RaftdbApp:
    """The ASGI app of one node: the node's lifespan plus the REST API.

    Args:
        config: the node's configuration.
        node_factory: makes the node (default :func:`default_node`); tests pass a fake.
        tune_gc: tune the process's garbage collector once started (:func:`tune_gc`):
            on for a server process (``raftdb serve``, ``uvicorn raftdb.app:app``),
            off where the app shares its process (tests).
        tls_applied: the server was given the config's ``tls_*`` files
            (``raftdb serve`` does it); otherwise a node with ``tls_cert_file``
            says at start that its server must get them another way.

    Raises:
        ConfigError: the ``tokens_file`` is wrong. It is read here, before
            anything starts, so that both entry points (``raftdb serve``,
            :func:`app_from_environment`) stop with one line and exit status 2.
    """

    def __init__(
        self,
        config: NodeConfig,
        node_factory: NodeFactory | None = None,
        *,
        tune_gc: bool = False,
        tls_applied: bool = False,
    ) -> None:
        self.config = config
        self.node_factory = node_factory or default_node
        self.tune_gc = tune_gc
        self.tls_applied = tls_applied
        self.tokens = TokenStore(config.tokens_file) if config.tokens_file else None
        self.node: RunningNode | None = None
        self.api: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        api = self.api
        if api is not None and scope["type"] != "lifespan":
            await api(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            why = "the node is not running (starting, stopped, or the server's lifespan is off)"
            await error_response(NotReadyError(why))(scope, receive, send)

    async def startup(self) -> None:
        """Make and start the node, then serve the API over it."""
        _setup_logging()
        node = self.node_factory(self.config)
        self.node = node
        await node.start()
        self.api = create_api(node, self.config, tokens=self.tokens)
        if self.tune_gc:
            tune_gc()
        _end_streams_on_exit_signals(node)
        logger.info(
            "node %d started (data_dir %s, peers %s)",
            self.config.id,
            self.config.data_dir,
            ",".join(self.config.cluster),
        )
        self._log_security()

    def _log_security(self) -> None:
        """Say once, at start, how the client API is protected, and loudly when it is not."""
        config = self.config
        if self.tokens is None:
            logger.warning(
                "no tokens_file: the client API is open: anyone who reaches it can read and "
                "write every key and change the membership"
            )
        else:
            public = ", /v1/status, /metrics" if config.public_status else ""
            logger.info(
                "client API: %d bearer tokens from %s; open without one: "
                "/healthz, /readyz, /docs, /openapi.json%s",
                len(self.tokens.tokens),
                config.tokens_file,
                public,
            )
        if config.tls_cert_file and not self.tls_applied:
            logger.warning(
                "tls_cert_file is set, but only raftdb serve gives it to the server: under "
                "uvicorn, pass --ssl-certfile/--ssl-keyfile (and --ssl-ca-certs with "
                "--ssl-cert-reqs 2 for client certificates); plain HTTP requests are refused"
            )

    async def shutdown(self) -> None:
        """Stop serving and stop the node."""
        self.api = None
        node, self.node = self.node, None
        if node is not None:
            await node.stop()

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    if not isinstance(exc, _EXPECTED_START_ERRORS):  # a bug: keep the traceback
                        logger.error("node %d failed to start", self.config.id, exc_info=exc)
                    reason = f"raftdb: node {self.config.id} cannot start: {_one_line(exc)}"
                    await self._abandon_start()
                    await send({"type": "lifespan.startup.failed", "message": reason})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self.shutdown()
                except Exception as exc:
                    logger.error("node %d failed to stop cleanly", self.config.id, exc_info=exc)
                    reason = f"raftdb: node {self.config.id} did not stop cleanly: {_one_line(exc)}"
                    await send({"type": "lifespan.shutdown.failed", "message": reason})
                    return
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _abandon_start(self) -> None:
        """After a failed start, stop what did start (best effort)."""
        try:
            await self.shutdown()
        except Exception as exc:
            logger.warning("stopping the node after a failed start: %s", _one_line(exc))


def warn_unknown_environment() -> None:
    """One stderr line per ``RAFTDB_*`` variable that names no key (likely a typo)."""
    for name in unknown_environment():
        print(f"raftdb: warning: ignoring unknown environment variable {name}", file=sys.stderr)


def app_from_environment(node_factory: NodeFactory | None = None) -> RaftdbApp:
    """The app configured by ``RAFTDB_CONFIG`` and ``RAFTDB_*``; exits on a bad setting.

    Raises:
        SystemExit: status 2 after printing the one-line reason on stderr.
    """
    warn_unknown_environment()
    try:
        config = load_config(environ=os.environ)
        return RaftdbApp(config, node_factory, tune_gc=True)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        raise SystemExit(CONFIG_EXIT_STATUS) from None


_app: RaftdbApp | None = None


def __getattr__(name: str) -> Any:
    """``app`` is made on first access, so importing this module reads no configuration."""
    global _app
    if name == "app":
        if _app is None:
            _app = app_from_environment()
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
