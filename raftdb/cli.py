"""The ``raftdb`` command.

``raftdb serve`` runs one node: its settings from flags (every config key has
one, ``--election-ticks``), over ``RAFTDB_*`` environment variables, over a
TOML file (``--config`` or ``RAFTDB_CONFIG``), and serves the REST API with
uvicorn on ``--host``/``--port``. ``raftdb config`` prints the settings those
sources add up to, as TOML, without starting anything.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from typing import Final

import uvicorn

from raftdb.app import CONFIG_EXIT_STATUS, RaftdbApp, warn_unknown_environment
from raftdb.config import KEYS, ConfigError, NodeConfig, env_name, flag_name, load_config

__all__ = ["build_parser", "main", "loop_factory", "make_server"]

#: uvicorn's exit status when the application fails to start.
STARTUP_FAILURE: Final = 3

_HELP: Final = {
    "id": "this node's id (≥ 1); member i has the peer URL cluster[i-1]",
    "cluster": "comma-separated peer URLs of all members, http://host:port,...",
    "join": "join a running cluster (that has added this node) instead of bootstrapping",
    "data_dir": "directory for the log, snapshots and state (default raftdb-<id>)",
    "storage": "storage plugin name or package.module:attr (default leveldb)",
    "state_machine": "state machine plugin name or package.module:attr (default leveldb)",
    "snapshot_entries": "snapshot every N applied entries (default 10000)",
    "snapshot_keep_entries": "entries kept after compaction for slow followers (default 5000)",
    "tick_ms": "milliseconds per Raft tick (default 100)",
    "election_ticks": "election timeout in ticks (default 10)",
    "heartbeat_ticks": "heartbeat interval in ticks (default 1)",
    "sync": "fsync before acknowledging writes (default on)",
    "request_timeout_s": "longest wait for a leader, commit or read (default 5)",
    "max_key_bytes": "longest key in bytes (default 4096)",
    "max_value_bytes": "longest value in bytes (default 1048576)",
    "max_request_bytes": "largest request body in bytes (default 1572864)",
    "cluster_token": "shared by one cluster's members; other tokens are refused (default raftdb)",
    "listen_peer_url": "listen for peers here instead of at this node's 'cluster' entry",
}
_BOOLEAN_KEYS: Final = frozenset({"join", "sync"})
_METAVARS: Final = {
    "cluster": "URLS",
    "data_dir": "DIR",
    "storage": "PLUGIN",
    "state_machine": "PLUGIN",
    "request_timeout_s": "SECONDS",
    "cluster_token": "TOKEN",
    "listen_peer_url": "URL",
}


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="TOML file with the node's settings (default: $RAFTDB_CONFIG)",
    )
    group = parser.add_argument_group(
        "node settings", "each overrides its RAFTDB_<KEY> variable and the TOML file"
    )
    for key in KEYS:
        help_text = f"{_HELP[key]} [{env_name(key)}]"
        if key in _BOOLEAN_KEYS:
            group.add_argument(
                flag_name(key),
                dest=key,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            metavar = _METAVARS.get(key, "N")
            group.add_argument(flag_name(key), dest=key, metavar=metavar, help=help_text)


def build_parser() -> argparse.ArgumentParser:
    """The ``raftdb`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="raftdb", description="raftdb: a Raft-replicated key-value database server."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
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
    _add_config_flags(serve)
    show = commands.add_parser(
        "config",
        help="print the effective settings as TOML",
        description="Print the settings that the flags, RAFTDB_* and the TOML file add up to.",
    )
    _add_config_flags(show)
    return parser


def _config(args: argparse.Namespace) -> NodeConfig:
    flags = {key: getattr(args, key) for key in KEYS}
    return load_config(flags, config_file=args.config)


def make_server(app: RaftdbApp, args: argparse.Namespace) -> uvicorn.Server:
    """The uvicorn server for ``app`` on ``--host``/``--port``, the lifespan on."""
    return uvicorn.Server(
        uvicorn.Config(
            app,
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            access_log=args.access_log,
            lifespan="on",
            loop=args.loop,
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``raftdb`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    warn_unknown_environment()
    try:
        config = _config(args)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return CONFIG_EXIT_STATUS
    if args.command == "config":
        sys.stdout.write(config.to_toml())
        return 0
    try:
        started = _serve(RaftdbApp(config, tune_gc=True), args)
    except KeyboardInterrupt:
        return 130
    return 0 if started else STARTUP_FAILURE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
