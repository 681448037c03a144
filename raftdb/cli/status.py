"""``raftdb status``: one row per member of the cluster, as etcdctl's
``endpoint status --cluster -w table``.

Every endpoint given is asked for its own ``/v1/status`` (pinned: no failover,
all at once, each within ``--member-timeout``). The membership comes from the
leader's answer (else from the most advanced one), so the table has a row for
every member, not only for the endpoints given: a member lists only its peer URL,
not its API URL, so a member none of whose endpoints was given (or answered) has
a row with an unknown endpoint, and an endpoint that did not answer has a row of
its own with the error, since nothing tells which member it is.

The lag of a member is the leader's commit index minus the member's applied
index: how many committed entries it has yet to apply (0 when it is caught up;
unknown without a leader's answer). ``ERRORS`` says what is wrong with a row
(unreachable, no leader known, an alarm, not a member, a different leader).

The exit status is 6 when no endpoint answered, else 0: a script reads
``--output json`` for the details. ``--watch`` repeats the round every
``--interval`` seconds (see :func:`_watch`).
"""

from __future__ import annotations

import argparse
import contextlib
import re
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from rich.live import Live

from raftdb.cli import common
from raftdb.cli.common import Context, Exit
from raftdb.client import Client, RaftdbError, Status

__all__ = ["MEMBER_TIMEOUT", "WATCH_INTERVAL", "Row", "ask_all", "register", "rows_of"]

#: Default seconds each member has to answer (a dead one is not waited for long).
MEMBER_TIMEOUT: Final = 2.0
#: Default seconds between two refreshes of ``status --watch``.
WATCH_INTERVAL: Final = 2.0

#: An endpoint's answer: its status, or why it did not give one.
Answer = tuple[str, Status | RaftdbError]


@dataclass
class Row:
    """One line of the table: a member, or an endpoint that did not answer."""

    id: int | None
    endpoint: str | None
    peer_url: str | None = None
    learner: bool | None = None
    status: Status | None = None
    #: ``None``: not asked (no endpoint of this member was given).
    reachable: bool | None = None
    lag: int | None = None
    errors: list[str] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """The row as JSON, with the API's field names."""
        s = self.status
        return {
            "id": self.id,
            "endpoint": self.endpoint,
            "peer_url": self.peer_url,
            "learner": self.learner,
            "role": s.role if s else None,
            "term": s.term if s else None,
            "leader": s.leader if s else None,
            "commit_index": s.commit_index if s else None,
            "applied_index": s.applied_index if s else None,
            "lag": self.lag,
            "reachable": self.reachable,
            "errors": self.errors,
        }

    def cells(self) -> list[object]:
        """The row in the table's columns."""
        s = self.status
        reachable = {True: "yes", False: "no", None: "?"}[self.reachable]
        return [
            "?" if self.id is None else self.id,
            self.endpoint or "?",
            s.role if s else "",
            s.term if s else "",
            (s.leader or "none") if s else "",
            s.commit_index if s else "",
            s.applied_index if s else "",
            "" if self.lag is None else self.lag,
            reachable,
            "; ".join(self.errors),
        ]


COLUMNS: Final = (
    "ID",
    "ENDPOINT",
    "ROLE",
    "TERM",
    "LEADER",
    "COMMIT",
    "APPLIED",
    "LAG",
    "REACHABLE",
    "ERRORS",
)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``status``."""
    p = commands.add_parser(
        "status",
        help="a table of every member: role, term, indexes, lag, reachability",
        description="Ask every endpoint for its status and show one row per member of the "
        "cluster (exit status 6 when none answers).",
    )
    common.add_client_flags(p)
    p.add_argument(
        "--member-timeout",
        type=float,
        metavar="SECONDS",
        default=None,
        help=f"how long each endpoint has to answer (default {MEMBER_TIMEOUT:g}, "
        "or --timeout when shorter)",
    )
    p.add_argument(
        "--watch",
        action="store_true",
        help="refresh the table in place every --interval seconds until Ctrl-C "
        "(piped or with -w json: one table or JSON line per refresh)",
    )
    p.add_argument(
        "--interval",
        type=float,
        metavar="SECONDS",
        default=WATCH_INTERVAL,
        help=f"seconds between refreshes with --watch (default {WATCH_INTERVAL:g})",
    )
    p.add_argument(
        "--count",
        type=int,
        metavar="N",
        default=None,
        help="with --watch: stop after N refreshes (default: until Ctrl-C)",
    )
    p.set_defaults(run=common.client_command(_status))


def ask_all(client: Client, endpoints: Sequence[str], timeout: float) -> list[Answer]:
    """Every endpoint's own status (or its error), asked concurrently, in order."""

    def ask(endpoint: str) -> Status | RaftdbError:
        try:
            return client.status(endpoint, timeout=timeout)
        except RaftdbError as e:
            return e

    with ThreadPoolExecutor(max_workers=max(1, len(endpoints))) as pool:
        found = list(pool.map(ask, endpoints))
    return list(zip(endpoints, found, strict=True))


_GAVE_UP: Final = re.compile(r"GET /v1/status: gave up after [0-9.]+s: (.*)")


def _short(endpoint: str, error: RaftdbError) -> str:
    """An error's own reason, without the call's ``GET /v1/status: gave up …:`` and
    endpoint prefixes (the row shows both)."""
    text = " ".join(error.message.split())
    match = _GAVE_UP.fullmatch(text)
    if match:
        text = match[1]
    return text.removeprefix(f"{endpoint}: ")


def rows_of(answers: Sequence[Answer]) -> list[Row]:
    """The table's rows from the endpoints' answers (see the module docstring)."""
    statuses = [(ep, s) for ep, s in answers if isinstance(s, Status)]
    leaders = [s for _, s in statuses if s.role == "leader"]
    leader = max(leaders, key=lambda s: s.term, default=None)
    source = leader or max(
        (s for _, s in statuses), key=lambda s: (s.term, s.applied_index), default=None
    )
    by_id: dict[int, tuple[str, Status]] = {}
    for ep, s in statuses:
        by_id.setdefault(s.id, (ep, s))
    members: dict[int, dict[str, Any]] = {}
    if source is not None:
        for m in source.raw.get("members", []):
            members[int(m["id"])] = m
    failed = [(ep, _short(ep, e)) for ep, e in answers if isinstance(e, RaftdbError)]
    guessed = _pair_by_host(
        {i: str(m.get("peer_url", "")) for i, m in members.items() if i not in by_id},
        [ep for ep, _ in failed],
    )
    errors_of = dict(failed)
    rows: list[Row] = []
    for member_id in sorted(set(members) | set(by_id)):
        m = members.get(member_id)
        row = Row(member_id, None)
        if m is not None:
            row.peer_url = str(m.get("peer_url"))
            row.learner = bool(m.get("learner"))
        else:
            row.errors.append("not a member of the cluster (removed?)")
        if member_id in by_id:
            row.endpoint, row.status = by_id[member_id]
            row.reachable = True
            row.errors[:0] = _health(row.status, leader)
            if leader is not None:
                row.lag = max(0, leader.commit_index - row.status.applied_index)
        elif member_id in guessed:
            row.endpoint = guessed[member_id]
            row.reachable = False
            row.errors.append(errors_of.pop(row.endpoint))
        else:
            row.errors.append(f"no endpoint of it was given (peer URL {row.peer_url})")
        rows.append(row)
    rows += [Row(None, ep, reachable=False, errors=[why]) for ep, why in errors_of.items()]
    return rows


def _host(url: str) -> str:
    return urlsplit(url).hostname or ""


def _pair_by_host(unanswered: dict[int, str], failed: Sequence[str]) -> dict[int, str]:
    """Which member each endpoint that did not answer must be: the one member not
    accounted for whose peer URL is on the endpoint's host, when it is the only such
    endpoint too (members on one host, as in a local cluster, pair only when one of
    each is left). The others stay unpaired: nothing else says who they are."""
    pairs: dict[int, str] = {}
    for ep in failed:
        members = [i for i, peer in unanswered.items() if _host(peer) == _host(ep)]
        endpoints = [e for e in failed if _host(e) == _host(ep)]
        if len(members) == 1 and len(endpoints) == 1:
            pairs[members[0]] = ep
    return pairs


def _health(s: Status, leader: Status | None) -> list[str]:
    """What is wrong with a member that answered."""
    found = []
    if not s.leader:
        found.append("no leader known")
    elif leader is not None and s.leader != leader.id:
        found.append(f"follows {s.leader}, not the leader {leader.id}")
    found += [f"alarm: {alarm}" for alarm in s.raw.get("alarms", [])]
    return found


def _status(ctx: Context) -> Exit:
    limit = ctx.args.member_timeout
    if limit is None:
        limit = min(MEMBER_TIMEOUT, ctx.settings.timeout)
    elif not limit > 0:
        raise common.CommandError("--member-timeout: must be positive", Exit.USAGE)
    if not ctx.args.watch:
        if ctx.args.count is not None:
            raise common.CommandError("--count: only with --watch", Exit.USAGE)
        rows, answered = _survey(ctx, limit)
        ctx.out.table(COLUMNS, [r.cells() for r in rows], records=[r.record() for r in rows])
        return _verdict(ctx, answered, limit)
    interval = ctx.args.interval
    if not interval > 0:
        raise common.CommandError("--interval: must be positive", Exit.USAGE)
    if ctx.args.count is not None and ctx.args.count < 1:
        raise common.CommandError("--count: must be at least 1", Exit.USAGE)
    return _watch(ctx, limit, interval, ctx.args.count)


def _survey(ctx: Context, limit: float) -> tuple[list[Row], bool]:
    """One round: every endpoint asked; the rows, and whether any endpoint answered."""
    answers = ask_all(ctx.client, list(ctx.settings.endpoints), limit)
    return rows_of(answers), any(isinstance(s, Status) for _, s in answers)


def _verdict(ctx: Context, answered: bool, limit: float) -> Exit:
    if not answered:
        ctx.out.note(f"raftdb: no endpoint answered within {limit:g}s")
        return Exit.UNAVAILABLE
    return Exit.OK


def _watch(ctx: Context, limit: float, interval: float, count: int | None) -> Exit:
    """``--watch``: a round every ``interval`` seconds (on a fixed schedule, so a slow
    round does not make the next one late as well), ``count`` rounds or until Ctrl-C.

    On a terminal the table is redrawn in place (rich's ``Live``); piped, or with
    ``-w json``, each round is printed after the one before (one JSON line a round,
    the same list ``status -w json`` prints), so ``status --watch | tee log`` keeps
    every round. A round where no endpoint answers is shown, not fatal: watching a
    cluster come back is what the option is for. The exit status is the last round's.
    """
    out = ctx.out
    live = (
        None
        if out.json or not out.console.is_terminal
        else Live(console=out.console, auto_refresh=False, transient=False)
    )
    rounds = 0
    answered = False
    started = time.monotonic()
    with live if live is not None else contextlib.nullcontext():
        while True:
            rows, answered = _survey(ctx, limit)
            rounds += 1
            title = f"raftdb status · every {interval:g}s · {time.strftime('%H:%M:%S')}" + (
                "" if answered else " · no endpoint answered"
            )
            if live is not None:
                table = common.render_table(COLUMNS, [r.cells() for r in rows], title=title)
                live.update(table, refresh=True)
            elif out.json:
                out.data([r.record() for r in rows])
            else:
                out.table(COLUMNS, [r.cells() for r in rows], title=title)
            if count is not None and rounds >= count:
                break
            # The next round's slot on the schedule (skipping any already missed).
            elapsed = time.monotonic() - started
            time.sleep(interval - elapsed % interval)
    return _verdict(ctx, answered, limit)
