"""The ``raftdb`` command: run a node, and administer a cluster (docs/cli.md).

``raftdb serve`` runs a node (:mod:`raftdb.cli.serve`); every other command is a
client of a running cluster, through :class:`raftdb.client.Client`, with the
connection flags of :mod:`raftdb.cli.common` accepted before or after its
name. Each module here adds its commands with ``register(commands)``; the
``snapshot`` group's commands come from ``register_snapshot(commands)``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from types import ModuleType

from raftdb.cli import (
    backup,
    cluster,
    common,
    keys,
    leases,
    load,
    lock,
    restore,
    serve,
    status,
    txn,
    watch,
)
from raftdb.cli.serve import loop_factory, make_server

__all__ = ["build_parser", "loop_factory", "main", "make_server"]

#: The modules whose ``register(commands)`` adds top-level commands, in ``--help`` order.
_COMMANDS: tuple[ModuleType, ...] = (
    serve,
    keys,
    watch,
    txn,
    load,
    leases,
    lock,
    status,
    cluster,
    restore,
)
#: The modules whose ``register_snapshot(commands)`` adds ``snapshot`` commands.
_SNAPSHOT_COMMANDS: tuple[ModuleType, ...] = (backup, restore)


def build_parser() -> argparse.ArgumentParser:
    """The ``raftdb`` argument parser."""
    parser = argparse.ArgumentParser(
        prog="raftdb",
        description="raftdb: a Raft-replicated key-value database server, and its tools.",
    )
    common.add_client_flags(parser, top=True)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in _COMMANDS:
        module.register(commands)
    if _SNAPSHOT_COMMANDS:
        snapshot = commands.add_parser(
            "snapshot",
            help="save, inspect and restore backups",
            description="Back up a cluster's state and build members from a backup.",
        )
        snapshot_commands = snapshot.add_subparsers(
            dest="snapshot_command", required=True, metavar="COMMAND"
        )
        for module in _SNAPSHOT_COMMANDS:
            module.register_snapshot(snapshot_commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``raftdb`` command; returns the exit status."""
    args = build_parser().parse_args(argv)
    status: int = args.run(args)
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
