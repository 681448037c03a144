"""``raftdb put``, ``get``, ``del`` and ``ls``: one key at a time, and listings.

They are the API's single-key calls through :class:`raftdb.client.Client`, with
its failover and its retries (a write carries an ``Idempotency-Key``, so a retry
is applied once). What a script needs is in the exit status (docs/cli.md):

- ``get`` of a missing key is status 3 (not found) with one line, because a
  script that reads a key it expects must be able to tell "absent" from
  "empty";
- ``del`` of a missing key is status 0 and says ``0 deleted``, as ``etcdctl
  del`` and ``consul kv delete`` do: the key is absent afterwards, which is
  what was asked, and a re-run of a cleanup script must not fail. The client
  reports it (``DeleteResult.existed``) and the JSON carries it (``existed``);
  ``--must-exist`` turns it into status 3, as ``get``'s;
- a failed ``--if-match``/``--create-only`` is status 4; nothing changed.

``get`` writes the value's bytes exactly as stored (nothing added, so
``raftdb get k > file`` copies the value), plus a newline when stdout is a
terminal, so the prompt starts on a line of its own.
"""

from __future__ import annotations

import argparse
import itertools
from typing import Any

from raftdb.cli import common
from raftdb.cli.common import CommandError, Context, Exit
from raftdb.cli.values import arg_bytes, bytes_field, read_stdin, shown
from raftdb.client import KeyValue

__all__ = ["entry_json", "register"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``put``, ``get``, ``del`` and ``ls``."""
    p = commands.add_parser(
        "put",
        help="write a key's value",
        description="Write VALUE (or stdin, when it is left out or is -) as KEY's value; "
        "prints the write's index (the key's new mod_index).",
    )
    common.add_client_flags(p)
    p.add_argument("key_name", metavar="KEY")  # not "key": --key's dest
    p.add_argument("value", metavar="VALUE", nargs="?", default="-", help="default: stdin")
    cond = p.add_mutually_exclusive_group()
    cond.add_argument(
        "--if-match",
        metavar="INDEX",
        type=_index,
        help="only if the key's mod_index is INDEX (compare-and-set); else exit 4",
    )
    cond.add_argument(
        "--create-only", action="store_true", help="only if the key does not exist; else exit 4"
    )
    p.add_argument("--lease", metavar="ID", type=_index, help="attach the key to this lease")
    p.set_defaults(run=common.client_command(put))

    p = commands.add_parser(
        "get",
        help="read a key's value",
        description="Print KEY's value as it is stored (exit 3 when the key does not exist). "
        "--print-index or --output json adds its create_index and mod_index.",
    )
    common.add_client_flags(p)
    p.add_argument("key_name", metavar="KEY")  # not "key": --key's dest
    p.add_argument(
        "--consistency",
        choices=["linearizable", "stale"],
        default="linearizable",
        help="linearizable (default: sees every acknowledged write) or stale (this member's "
        "own state, at once)",
    )
    p.add_argument(
        "--print-index",
        action="store_true",
        help="a table of the key, value, create_index and mod_index instead of the raw value",
    )
    p.set_defaults(run=common.client_command(get))

    p = commands.add_parser(
        "del",
        help="delete a key",
        description="Delete KEY; prints how many keys were deleted (1 or 0) and the index. "
        "A missing key is not an error (exit 0, '0 deleted') unless --must-exist.",
    )
    common.add_client_flags(p)
    p.add_argument("key_name", metavar="KEY")  # not "key": --key's dest
    p.add_argument(
        "--if-match",
        metavar="INDEX",
        type=_index,
        help="only if the key's mod_index is INDEX; else exit 4",
    )
    p.add_argument("--must-exist", action="store_true", help="exit 3 when the key did not exist")
    p.set_defaults(run=common.client_command(delete))

    p = commands.add_parser(
        "ls",
        help="list the keys under a prefix",
        description="List the keys under PREFIX (default: every key) in byte order: "
        "key, create_index, mod_index and size; every page is fetched in turn.",
    )
    common.add_client_flags(p)
    p.add_argument("prefix", metavar="PREFIX", nargs="?", default="")
    p.add_argument("--values", action="store_true", help="show the values too")
    p.add_argument("--limit", metavar="N", type=_positive, help="at most N keys")
    p.add_argument(
        "--consistency",
        choices=["linearizable", "stale"],
        default="linearizable",
        help="as get's (each page is one read)",
    )
    p.set_defaults(run=common.client_command(ls))


def _index(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {value}")
    return value


def _positive(text: str) -> int:
    value = _index(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def put(ctx: Context) -> None:
    """``raftdb put KEY [VALUE]``."""
    a = ctx.args
    value = read_stdin() if a.value == "-" else arg_bytes(a.value)
    result = ctx.client.put(
        arg_bytes(a.key_name), value, if_match=a.if_match, create_only=a.create_only, lease=a.lease
    )
    if ctx.out.json:
        ctx.out.data({"index": result.index})
    else:
        ctx.out.text(str(result.index))


def get(ctx: Context) -> None:
    """``raftdb get KEY``."""
    a = ctx.args
    key = arg_bytes(a.key_name)
    if not (ctx.out.json or a.print_index):
        got = ctx.client.get(key, consistency=a.consistency)
        if got is None:
            raise _missing(key)
        ctx.out.raw(got.value)
        if ctx.out.stdout.isatty():
            ctx.out.text("")
        return
    # The create_index is only in listings: a listing that starts at the key and
    # holds one entry reads it, with the value and mod_index, in one consistent read.
    first = next(
        iter(ctx.client.list(key, start=key, page_size=1, consistency=a.consistency)), None
    )
    if first is None or first.key != key:
        raise _missing(key)
    if ctx.out.json:
        ctx.out.data(entry_json(first))
    else:
        assert first.value is not None
        ctx.out.table(
            ["KEY", "VALUE", "CREATE INDEX", "MOD INDEX"],
            [[shown(key), shown(first.value), first.create_index, first.mod_index]],
        )


def delete(ctx: Context) -> Exit:
    """``raftdb del KEY``."""
    a = ctx.args
    key = arg_bytes(a.key_name)
    result = ctx.client.delete(key, if_match=a.if_match)
    if ctx.out.json:
        ctx.out.data({"index": result.index, "existed": result.existed})
    else:
        ctx.out.text(f"{int(result.existed)} deleted (index {result.index})")
    if a.must_exist and not result.existed:
        ctx.out.note(f"raftdb: not_found: key '{shown(key)}' did not exist")
        return Exit.NOT_FOUND
    return Exit.OK


def ls(ctx: Context) -> None:
    """``raftdb ls [PREFIX]``."""
    a = ctx.args
    entries = ctx.client.list(arg_bytes(a.prefix), consistency=a.consistency)
    if a.limit is not None:
        entries = itertools.islice(entries, a.limit)
    if ctx.out.json:
        for e in entries:  # one line per key, as they come: any size of listing
            ctx.out.data(entry_json(e, value=a.values))
        return
    columns = ["KEY", "CREATE INDEX", "MOD INDEX", "SIZE"] + (["VALUE"] if a.values else [])
    rows: list[list[Any]] = []
    for e in entries:
        value = e.value or b""
        row: list[Any] = [shown(e.key), e.create_index, e.mod_index, len(value)]
        rows.append(row + ([shown(value)] if a.values else []))
    ctx.out.table(columns, rows)


def entry_json(e: KeyValue, *, value: bool = True) -> dict[str, Any]:
    """A listing's entry in the API's field names (``raftdb load`` reads it back)."""
    out: dict[str, Any] = bytes_field("key", e.key)
    out["create_index"] = e.create_index
    out["mod_index"] = e.mod_index
    if value and e.value is not None:
        out.update(bytes_field("value", e.value))
    return out


def _missing(key: bytes) -> CommandError:
    # The API's code first, as every failure line has it (docs/cli.md, "Exit status").
    return CommandError(f"not_found: key '{shown(key)}' not found", Exit.NOT_FOUND)
