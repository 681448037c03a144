"""``raftdb serve`` and ``raftdb config``: run a node, or show its settings.

``raftdb serve`` runs one node: its settings from flags (every config key has
one, ``--election-ticks``), over ``RAFTDB_*`` environment variables, over a
TOML file (``--config`` or ``RAFTDB_CONFIG``), and serves the REST API with
uvicorn on ``--host``/``--port``. ``raftdb config`` prints the settings those
sources add up to, as TOML, without starting anything.
"""

from __future__ import annotations

import argparse
import asyncio
import ssl
import sys
from collections.abc import Callable
from typing import Final

import uvicorn

from raftdb.app import CONFIG_EXIT_STATUS, RaftdbApp, warn_unknown_environment
from raftdb.config import (
    CONFIG_ENV,
    ENV_PREFIX,
    KEYS,
    ConfigError,
    ConfigKey,
    NodeConfig,
    config_keys,
    load_config,
)
from raftdb.http.protocols import header_deadline_protocol

__all__ = ["STARTUP_FAILURE", "add_config_flags", "loop_factory", "make_server", "register"]

#: uvicorn's exit status when the application fails to start.
STARTUP_FAILURE: Final = 3


def _help(key: ConfigKey) -> str:
    """A key's ``--help`` line: its help, its default and its environment variable."""
    default = "required" if key.required else f"default: {key.default_text}"
    # argparse %-formats help strings: a literal % must be doubled.
    return f"{key.help} ({default}) [{key.env}]".replace("%", "%%")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` and one flag per node setting (``serve``, ``config``, and the
    offline commands that open a node's data: ``snapshot restore``, ``recover``)."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=f"TOML file with the node's settings (default: ${CONFIG_ENV})",
    )
    group = parser.add_argument_group(
        "node settings", f"each overrides its {ENV_PREFIX}<KEY> variable and the TOML file"
    )
    # No type=: values reach load_config as text, which parses them by the field's
    # type and names the flag in a ConfigError, as it does for RAFTDB_* variables.
    for key in config_keys():
        if key.is_bool:
            group.add_argument(
                key.flag,
                dest=key.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=_help(key),
            )
        else:
            group.add_argument(key.flag, dest=key.name, metavar=key.metavar, help=_help(key))


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``serve`` and ``config`` to the ``raftdb`` command."""
    serve = commands.add_parser(
        "serve",
        help="run a node and its REST API",
        description="Run one raftdb node and serve its REST API with uvicorn.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="API address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=12380, help="API port (default 12380)")
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
        help="log level (default info)",
    )
    serve.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="log every request (default off: it costs throughput)",
    )
    serve.add_argument(
        "--loop",
        default="auto",
        choices=["auto", "asyncio", "uvloop"],
        help="event loop (default auto: uvloop when installed, as uvicorn's own CLI picks it)",
    )
    add_config_flags(serve)
    serve.set_defaults(run=_run_serve)
    show = commands.add_parser(
        "config",
        help="print the effective settings as TOML",
        description="Print the settings that the flags, RAFTDB_* and the TOML file add up to.",
    )
    add_config_flags(show)
    show.set_defaults(run=_run_serve)


def _config(args: argparse.Namespace) -> NodeConfig:
    flags = {key: getattr(args, key) for key in KEYS}
    return load_config(flags, config_file=args.config)


def make_server(app: RaftdbApp, args: argparse.Namespace) -> uvicorn.Server:
    """The uvicorn server for ``app`` on ``--host``/``--port``, the lifespan on.

    The node's settings that belong to the server go to uvicorn here:
    ``tls_cert_file``/``tls_key_file`` (HTTPS), ``tls_client_ca_file`` (a
    client certificate signed by that CA is required: ``CERT_REQUIRED``),
    ``max_connections`` (``limit_concurrency``: a request beyond it is answered
    ``503``) and ``header_timeout_s`` (the protocol class of
    :mod:`raftdb.http.protocols`: a connection that does not complete its
    request headers in time is closed).
    """
    config = app.config
    tls: dict[str, object] = {}
    if config.tls_cert_file:
        tls = {"ssl_certfile": config.tls_cert_file, "ssl_keyfile": config.tls_key_file}
        if config.tls_client_ca_file:
            tls["ssl_ca_certs"] = config.tls_client_ca_file
            tls["ssl_cert_reqs"] = ssl.CERT_REQUIRED
        app.tls_applied = True
    return uvicorn.Server(
        uvicorn.Config(
            app,
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            access_log=args.access_log,
            lifespan="on",
            loop=args.loop,
            http=header_deadline_protocol(config.header_timeout_s),
            limit_concurrency=config.max_connections,
            **tls,  # type: ignore[arg-type]
        )
    )


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop for ``--loop``: ``None`` is asyncio's own.

    Raises:
        SystemExit: ``uvloop`` was asked for and is not installed.
    """
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if name == "uvloop":
            raise SystemExit("raftdb: --loop uvloop: uvloop is not installed") from None
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _serve(app: RaftdbApp, args: argparse.Namespace) -> bool:
    """Serve until stopped, on the event loop ``--loop`` names; whether it started.

    uvloop (the default where installed) roughly halves the loop's own cost
    per request under load: its transports write and poll in C.
    """
    server = make_server(app, args)
    with asyncio.Runner(loop_factory=loop_factory(args.loop)) as runner:
        runner.run(server.serve())
    return server.started


def _run_serve(args: argparse.Namespace) -> int:
    """``raftdb serve`` or ``raftdb config``; returns the exit status."""
    warn_unknown_environment()
    try:
        config = _config(args)
        if args.command == "config":
            sys.stdout.write(config.to_toml())
            return 0
        app = RaftdbApp(config, tune_gc=True)  # reads the tokens_file
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return CONFIG_EXIT_STATUS
    try:
        started = _serve(app, args)
    except KeyboardInterrupt:
        return 130
    return 0 if started else STARTUP_FAILURE
