"""``raftdb watch``: print the changes under a prefix, or to one key (``--exact``), as they happen.

Built on :meth:`raftdb.client.Client.watch`, so a stream that breaks (its member
died or stopped) is resumed on another member exactly after the last event
printed: no gap, no duplicate, and a transaction's events are never split. One
line per event (``put KEY VALUE`` / ``delete KEY``, escaped by
:func:`raftdb.cli.values.shown` so an event is always one line), or one JSON
object per event; each line is flushed as it is printed, so ``raftdb watch |
while read ...`` sees it at once. Runs until Ctrl-C (status 130) or ``--count``
events (status 0).
"""

from __future__ import annotations

import argparse
from typing import Any

from raftdb.cli import common
from raftdb.cli.common import CommandError, Context, Exit
from raftdb.cli.values import arg_bytes, bytes_field, shown
from raftdb.client import WatchEvent

__all__ = ["event_json", "register"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``watch``."""
    p = commands.add_parser(
        "watch",
        help="print the changes under a prefix, or to a key",
        description="Print each change under PREFIX (default: every key), or to the key "
        "PREFIX with --exact, "
        "as a line 'put KEY VALUE' or 'delete KEY' (--output json: one object per event), "
        "until Ctrl-C or --count events. Without --since, from now on.",
    )
    common.add_client_flags(p)
    p.add_argument("prefix", metavar="PREFIX", nargs="?", default="")
    # Not --key KEY: --key is the client certificate's key, on every client command.
    p.add_argument("--exact", action="store_true", help="PREFIX is one key: watch only that key")
    p.add_argument(
        "--since", metavar="INDEX", type=int, help="the changes with an index above INDEX"
    )
    p.add_argument("--count", metavar="N", type=int, help="stop after N events")
    p.add_argument(
        "--prev", action="store_true", help="JSON: add each change's previous value and index"
    )
    p.set_defaults(run=common.client_command(watch))


def watch(ctx: Context) -> Exit:
    """``raftdb watch [PREFIX]``, ``raftdb watch --exact KEY``."""
    a = ctx.args
    if a.count is not None and a.count < 1:
        raise CommandError("--count: must be at least 1", Exit.USAGE)
    if a.since is not None and a.since < 0:
        raise CommandError("--since: must not be negative", Exit.USAGE)
    key = arg_bytes(a.prefix) if a.exact else None
    prefix = None if a.exact else arg_bytes(a.prefix)
    if a.exact and not key:
        raise CommandError("--exact: give the KEY to watch", Exit.USAGE)
    seen = 0
    with ctx.client.watch(prefix, key=key, since=a.since, prev=a.prev) as events:
        for event in events:
            assert isinstance(event, WatchEvent)  # progress events are not asked for
            if ctx.out.json:
                ctx.out.data(event_json(event))
            elif event.type == "put":
                ctx.out.text(f"put {shown(event.key)} {shown(event.value)}")
            else:
                ctx.out.text(f"delete {shown(event.key)}")
            seen += 1
            if a.count is not None and seen >= a.count:
                break
    return Exit.OK


def event_json(event: WatchEvent) -> dict[str, Any]:
    """An event in the API's field names (``type`` is the event's SSE name)."""
    out: dict[str, Any] = {"type": event.type, **bytes_field("key", event.key)}
    if event.type == "put":
        out.update(bytes_field("value", event.value))
    out["create_index"] = event.create_index
    out["mod_index"] = event.index
    if event.prev_mod_index is not None:
        out["prev_mod_index"] = event.prev_mod_index
    if event.prev_value is not None:
        out.update(bytes_field("prev_value", event.prev_value))
    return out
