"""``raftdb member …`` and ``raftdb leader transfer``: change who is in the cluster
and who leads it (``raftdb status`` shows the result: :mod:`raftdb.cli.status`).

Each command is one call of :class:`raftdb.client.Client`. Membership changes and
leadership transfers carry no ``Idempotency-Key`` (the API has none for them), so
the client never resends one that may have reached a node: a lost connection is
exit status 5 (outcome unknown) and ``raftdb member list`` tells what happened.
``member promote`` is written so that running it again is safe: a member that is
already a voter is reported as such, with status 0.
"""

from __future__ import annotations

import argparse
from typing import TypeAlias

from raftdb.cli import common
from raftdb.cli.common import CommandError, Context, Exit
from raftdb.client import Member, RaftdbError

__all__ = ["register"]

Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _member_id(text: str) -> int:
    """A member id as argparse's ``type``: an integer ≥ 1."""
    if not text.isascii() or not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a member id is an integer ≥ 1, not {text!r}")
    return int(text)


def _client_parser(
    commands: Commands, name: str, help_text: str, description: str
) -> argparse.ArgumentParser:
    parser = commands.add_parser(name, help=help_text, description=description)
    common.add_client_flags(parser)
    return parser


def register(commands: Commands) -> None:
    """Add ``member`` (list, add, remove, promote) and ``leader`` (transfer)."""
    member = commands.add_parser(
        "member",
        help="list, add, remove and promote members",
        description="Show or change the cluster's membership (one Raft entry per change).",
    )
    member_commands = member.add_subparsers(dest="member_command", required=True, metavar="COMMAND")
    p = _client_parser(
        member_commands,
        "list",
        "list the members",
        "List the members as the answering node has applied the membership.",
    )
    p.set_defaults(run=common.client_command(_list))

    p = _client_parser(
        member_commands,
        "add",
        "add a voter or a learner",
        "Add a member; start it afterwards with `raftdb serve --id ID --join` (a learner "
        "receives the log but does not vote until promoted).",
    )
    p.add_argument("id", type=_member_id, metavar="ID", help="the new member's id")
    p.add_argument("peer_url", metavar="URL", help="its peer URL, http://host:port")
    p.add_argument("--learner", action="store_true", help="add it as a learner (no vote)")
    p.set_defaults(run=common.client_command(_add))

    p = _client_parser(
        member_commands,
        "remove",
        "remove a member",
        "Remove a member; once the change is committed it takes no further part.",
    )
    p.add_argument("id", type=_member_id, metavar="ID", help="the member's id")
    p.set_defaults(run=common.client_command(_remove))

    p = _client_parser(
        member_commands,
        "promote",
        "make a learner a voter",
        "Promote a learner to a voter (status 0 too when it already is one).",
    )
    p.add_argument("id", type=_member_id, metavar="ID", help="the learner's id")
    p.set_defaults(run=common.client_command(_promote))

    leader = commands.add_parser(
        "leader",
        help="hand leadership to another member",
        description="Leadership commands.",
    )
    leader_commands = leader.add_subparsers(dest="leader_command", required=True, metavar="COMMAND")
    p = _client_parser(
        leader_commands,
        "transfer",
        "hand leadership to a voter",
        "Hand leadership to the voter ID; answers once it leads.",
    )
    p.add_argument("id", type=_member_id, metavar="ID", help="the voter to lead")
    p.set_defaults(run=common.client_command(_transfer))


def member_record(m: Member) -> dict[str, object]:
    """A member as the API's JSON spells it."""
    return {"id": m.id, "peer_url": m.peer_url, "learner": m.learner}


def _role(m: Member) -> str:
    return "learner" if m.learner else "voter"


def _list(ctx: Context) -> None:
    members = sorted(ctx.client.members(), key=lambda m: m.id)
    ctx.out.table(
        ["ID", "PEER URL", "ROLE"],
        [[m.id, m.peer_url, _role(m)] for m in members],
        records=[member_record(m) for m in members],
    )


def _add(ctx: Context) -> None:
    args = ctx.args
    added = ctx.client.member_add(args.id, args.peer_url, learner=args.learner)
    if ctx.out.json:
        ctx.out.data(member_record(added))
        return
    ctx.out.text(f"member {added.id} added as a {_role(added)} at {added.peer_url}")
    _join_hint(ctx, added)


def _join_hint(ctx: Context, added: Member) -> None:
    """How to start the new member, when the ids are 1..n (``cluster`` lists member
    *i* as entry *i*−1, so a list with gaps cannot be written for it)."""
    try:
        members = sorted(ctx.client.members(), key=lambda m: m.id)
    except RaftdbError:
        return
    if [m.id for m in members] != list(range(1, len(members) + 1)):
        return
    urls = ",".join(m.peer_url for m in members)
    ctx.out.note(f"start it with: raftdb serve --id {added.id} --join --cluster {urls} ...")


def _remove(ctx: Context) -> None:
    ctx.client.member_remove(ctx.args.id)
    if ctx.out.json:
        ctx.out.data({"id": ctx.args.id, "removed": True})
    else:
        ctx.out.text(f"member {ctx.args.id} removed")


def _promote(ctx: Context) -> Exit:
    member_id: int = ctx.args.id
    found = next((m for m in ctx.client.members() if m.id == member_id), None)
    if found is None:
        raise CommandError(f"member_not_found: no member {member_id}", Exit.NOT_FOUND)
    promoted = found
    if found.learner:
        promoted = ctx.client.member_add(member_id, found.peer_url, learner=False)
    if ctx.out.json:
        ctx.out.data(member_record(promoted))
    elif found.learner:
        ctx.out.text(f"member {member_id} promoted to a voter")
    else:
        ctx.out.text(f"member {member_id} is already a voter")
    return Exit.OK


def _transfer(ctx: Context) -> None:
    leader = ctx.client.leader_transfer(ctx.args.id)
    if ctx.out.json:
        ctx.out.data({"leader": leader})
    else:
        ctx.out.text(f"member {leader} leads")
