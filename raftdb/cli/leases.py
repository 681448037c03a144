"""``raftdb lease grant|keepalive|revoke|list|info``: leases, the time to live that
keys share (``raftdb put KEY VALUE --lease ID``), as etcdctl's ``lease`` commands.

In JSON, lease ids are decimal strings and keys are ``keys`` (the UTF-8 ones) and
``keys_b64`` (the others), as the API spells them (docs/api.md, Leases). In a
table, a key that is not UTF-8 is shown with its bytes escaped (``\\xff``).
``lease grant`` prints the id alone, so that ``ID=$(raftdb lease grant 30)`` works.
"""

from __future__ import annotations

import argparse
import base64
import time
from collections.abc import Sequence
from typing import Any, TypeAlias

from raftdb.cli import common
from raftdb.cli.common import CommandError, Context, Exit
from raftdb.client import LeaseInfo, LeaseNotFoundError, RaftdbError

__all__ = ["lease_id", "lease_record", "register", "shown"]

Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def lease_id(text: str) -> int:
    """A lease id as argparse's ``type``: a decimal integer ≥ 1."""
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a lease id is a decimal integer ≥ 1, not {text!r}")
    return int(text)


def _ttl(text: str) -> int:
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a TTL is a whole number of seconds ≥ 1, not {text!r}")
    return int(text)


def shown(data: bytes) -> str:
    """Bytes for a table: UTF-8 as text, any other byte escaped (``\\xff``)."""
    return data.decode("utf-8", errors="backslashreplace")


def _keys_json(keys: Sequence[bytes]) -> dict[str, list[str]]:
    text: list[str] = []
    b64: list[str] = []
    for key in sorted(keys):
        try:
            text.append(key.decode())
        except UnicodeDecodeError:
            b64.append(base64.b64encode(key).decode())
    return {"keys": text, "keys_b64": b64} if b64 else {"keys": text}


def lease_record(lease: LeaseInfo, *, keys: bool = True) -> dict[str, Any]:
    """A lease as the API's JSON spells it (``GET /v1/leases/{id}``)."""
    record: dict[str, Any] = {
        "id": str(lease.id),
        "ttl": lease.ttl,
        "remaining": round(lease.remaining, 3),
    }
    if keys:
        record.update(_keys_json(lease.keys))
    return record


def register(commands: Commands) -> None:
    """Add ``lease`` and its commands."""
    lease = commands.add_parser(
        "lease",
        help="grant, keep alive, revoke and list leases",
        description="Leases: a time to live shared by the keys attached to them.",
    )
    lease_commands = lease.add_subparsers(dest="lease_command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str, description: str) -> argparse.ArgumentParser:
        p = lease_commands.add_parser(name, help=help_text, description=description)
        common.add_client_flags(p)
        return p

    p = add("grant", "grant a lease", "Grant a lease of TTL seconds and print its id.")
    p.add_argument("ttl", type=_ttl, metavar="TTL", help="its time to live, whole seconds")
    p.set_defaults(run=common.client_command(_grant))

    p = add(
        "keepalive",
        "keep a lease alive",
        "Renew the lease every TTL/3 until Ctrl-C (or once, with --once).",
    )
    p.add_argument("id", type=lease_id, metavar="ID", help="the lease's id")
    p.add_argument("--once", action="store_true", help="renew it once and exit")
    p.set_defaults(run=common.client_command(_keepalive))

    p = add("revoke", "revoke a lease", "Revoke the lease: its keys are deleted.")
    p.add_argument("id", type=lease_id, metavar="ID", help="the lease's id")
    p.set_defaults(run=common.client_command(_revoke))

    p = add(
        "list",
        "list every lease",
        "List every lease with its TTL, remaining seconds and number of keys "
        "(an admin token when the cluster has tokens).",
    )
    p.add_argument(
        "--no-keys",
        dest="keys",
        action="store_false",
        help="do not look up each lease's keys (one request less per lease)",
    )
    p.set_defaults(run=common.client_command(_list))

    p = add("info", "show a lease", "Show a lease's TTL, remaining seconds and keys.")
    p.add_argument("id", type=lease_id, metavar="ID", help="the lease's id")
    p.set_defaults(run=common.client_command(_info))


def _grant(ctx: Context) -> None:
    granted = ctx.client.lease_grant(ctx.args.ttl)
    if ctx.out.json:
        ctx.out.data({"id": str(granted.id), "ttl": granted.ttl})
    else:
        ctx.out.text(str(granted.id))


def _keepalive(ctx: Context) -> Exit:
    """Renew until Ctrl-C (130): every TTL/3; a renewal that fails for a passing reason
    is tried again at the next round; a lease found gone ends it (status 3)."""
    lid: int = ctx.args.id
    renewed = ctx.client.lease_keepalive(lid)
    while True:
        if ctx.out.json:
            ctx.out.data({"id": str(renewed.id), "ttl": renewed.ttl})
        else:
            ctx.out.text(f"lease {renewed.id} kept alive, TTL {renewed.ttl}s")
        if ctx.args.once:
            return Exit.OK
        interval = max(0.2, renewed.ttl / 3)
        while True:
            time.sleep(interval)
            try:
                renewed = ctx.client.lease_keepalive(lid, timeout=interval)
                break
            except LeaseNotFoundError:
                raise CommandError(
                    f"lease_not_found: lease {lid} ended (expired or revoked)", Exit.NOT_FOUND
                ) from None
            except RaftdbError as e:
                ctx.out.note(f"raftdb: renewing lease {lid} failed, trying again: {e.message}")


def _revoke(ctx: Context) -> None:
    ctx.client.lease_revoke(ctx.args.id)
    if ctx.out.json:
        ctx.out.data({"id": str(ctx.args.id), "revoked": True})
    else:
        ctx.out.text(f"lease {ctx.args.id} revoked")


def _list(ctx: Context) -> None:
    def _count(lease: LeaseInfo) -> object:
        return len(lease.keys) if ctx.args.keys else ""

    found = sorted(ctx.client.leases(), key=lambda lease: lease.id)
    if ctx.args.keys:
        with_keys = []
        for lease in found:
            try:
                with_keys.append(ctx.client.lease_info(lease.id))
            except LeaseNotFoundError:
                continue  # it ended since the listing
        found = with_keys
    ctx.out.table(
        ["ID", "TTL", "REMAINING", "KEYS"],
        [[lease.id, lease.ttl, f"{lease.remaining:.1f}", _count(lease)] for lease in found],
        records=[lease_record(lease, keys=ctx.args.keys) for lease in found],
    )


def _info(ctx: Context) -> None:
    lease = ctx.client.lease_info(ctx.args.id)
    ctx.out.table(
        ["ID", "TTL", "REMAINING", "KEYS"],
        [[lease.id, lease.ttl, f"{lease.remaining:.1f}", "\n".join(map(shown, lease.keys))]],
        records=lease_record(lease),
    )
