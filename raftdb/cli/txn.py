"""``raftdb txn [FILE|-]``: run a transaction written as the API's ``POST /v1/txn`` body.

The body is the API's JSON exactly (docs/api.md, ``compare``, ``success``,
``failure``), so what works with curl works here and the reference is one
page. The command checks only the top level (a JSON object of those three
lists); the node checks the rest and refuses a bad body with a ``400`` naming
the field (status 2), before anything is proposed. The transaction is one
keyed write: a retry after a lost connection is applied once.

A table prints ``SUCCESS`` or ``FAILURE`` (which branch ran), the index, and one
row per operation of that branch with its key and result; ``--output json`` is
the API's answer. The status is 4 when the ``failure`` branch ran, so a
script's ``if raftdb txn ...`` is the compare's outcome.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from raftdb.cli import common
from raftdb.cli.common import CommandError, Context, Exit
from raftdb.cli.values import bytes_field, read_stdin, shown
from raftdb.client import KeyValue, Txn, TxnDelete, TxnGet, TxnList, TxnPut, TxnResult

__all__ = ["register", "result_json"]

_FIELDS = ("compare", "success", "failure")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``txn``."""
    p = commands.add_parser(
        "txn",
        help="run a transaction (the JSON of POST /v1/txn)",
        description="Run the transaction in FILE (or stdin: - or left out), a JSON object "
        "with 'compare', 'success' and 'failure' as POST /v1/txn takes it (docs/api.md). "
        "Prints SUCCESS or FAILURE and each operation's result; exit 4 when the failure "
        "branch ran.",
    )
    common.add_client_flags(p)
    p.add_argument("file", metavar="FILE", nargs="?", default="-", help="default: stdin")
    p.set_defaults(run=common.client_command(txn))


def parse_body(data: bytes, source: str) -> Txn:
    """The transaction in a request body; a :class:`CommandError` (status 2) unless it
    is a JSON object of at most ``compare``, ``success`` and ``failure`` lists."""
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise CommandError(f"{source}: not JSON: {e}", Exit.USAGE) from None
    if not isinstance(body, dict):
        raise CommandError(f"{source}: a transaction is a JSON object", Exit.USAGE)
    unknown = sorted(set(body) - set(_FIELDS))
    if unknown:
        raise CommandError(
            f"{source}: unknown field {unknown[0]!r} (a transaction has {', '.join(_FIELDS)})",
            Exit.USAGE,
        )
    for name in _FIELDS:
        if not isinstance(body.get(name, []), list):
            raise CommandError(f"{source}: {name!r} must be a list", Exit.USAGE)
    t = Txn()
    t.compares = list(body.get("compare", []))
    t.success.ops = list(body.get("success", []))
    t.failure.ops = list(body.get("failure", []))
    return t


def txn(ctx: Context) -> Exit:
    """``raftdb txn [FILE|-]``."""
    name = ctx.args.file
    data = read_stdin() if name == "-" else Path(name).read_bytes()
    t = parse_body(data, "stdin" if name == "-" else name)
    result = ctx.client.txn(t)
    ops = t.success.ops if result.succeeded else t.failure.ops
    if ctx.out.json:
        ctx.out.data(result_json(result))
    else:
        ctx.out.text(f"{'SUCCESS' if result.succeeded else 'FAILURE'} (index {result.index})")
        if result.results is None:
            ctx.out.note("a retry answered as the first attempt: its results are not kept")
        elif ops:
            rows = [
                [op.get("op", ""), _op_key(op), _describe(r)]
                for op, r in zip(ops, result.results, strict=False)
            ]
            ctx.out.table(["OP", "KEY", "RESULT"], rows)
    return Exit.OK if result.succeeded else Exit.CONDITION_FAILED


def _op_key(op: dict[str, Any]) -> str:
    for name in ("key", "prefix"):
        if isinstance(op.get(name), str):
            return shown(op[name].encode())
        if isinstance(op.get(f"{name}_b64"), str):
            return f"(base64) {op[f'{name}_b64']}"
    return ""


def _describe(r: TxnPut | TxnDelete | TxnGet | TxnList) -> str:
    if isinstance(r, TxnPut):
        return f"mod_index {r.mod_index}" + (" (new key)" if r.prev_mod_index == 0 else "")
    if isinstance(r, TxnDelete):
        return f"deleted (was mod_index {r.prev_mod_index})" if r.deleted else "not found"
    if isinstance(r, TxnGet):
        if not r.found or r.value is None:
            return "not found"
        return f"{shown(r.value)} (mod_index {r.mod_index})"
    keys = ", ".join(f"{shown(k.key)}={shown(k.value or b'')}" for k in r.keys)
    return f"{len(r.keys)} keys{' (more)' if r.more else ''}: {keys}"


def result_json(result: TxnResult) -> dict[str, Any]:
    """The result in the API's field names (``POST /v1/txn``'s answer)."""
    results = None if result.results is None else [_op_json(r) for r in result.results]
    return {
        "succeeded": result.succeeded,
        "index": result.index,
        "results": results,
        "duplicate": result.duplicate,
    }


def _op_json(r: TxnPut | TxnDelete | TxnGet | TxnList) -> dict[str, Any]:
    if isinstance(r, TxnPut):
        return {
            "op": "put",
            "mod_index": r.mod_index,
            "create_index": r.create_index,
            "prev_mod_index": r.prev_mod_index,
        }
    if isinstance(r, TxnDelete):
        return {"op": "delete", "deleted": r.deleted, "prev_mod_index": r.prev_mod_index}
    if isinstance(r, TxnGet):
        if not r.found or r.value is None:
            return {"op": "get", "found": False}
        return {
            "op": "get",
            "found": True,
            **bytes_field("value", r.value),
            "create_index": r.create_index,
            "mod_index": r.mod_index,
        }
    return {"op": "list", "keys": [_key_json(k) for k in r.keys], "more": r.more}


def _key_json(k: KeyValue) -> dict[str, Any]:
    out = {**bytes_field("key", k.key), "create_index": k.create_index, "mod_index": k.mod_index}
    if k.value is not None:
        out.update(bytes_field("value", k.value))
    return out
