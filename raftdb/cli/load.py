"""``raftdb load FILE|-``: write many keys fast, from JSON lines, safe to run again.

Each line is ``{"key": ..., "value": ...}`` (UTF-8 text) or with ``key_b64``/
``value_b64`` (any bytes); ``create_index`` and ``mod_index`` are allowed and
ignored, so ``raftdb ls -w json --values`` output loads as it is. Blank lines
are skipped; any other field is refused (a typo must not load empty values).

**Why transactions.** Each key written alone costs a log entry, a commit round
and an HTTP request; a transaction of up to 128 puts (the node's bound on a
branch) costs one of each. Batches go to the cluster concurrently (``--jobs``
threads sharing one thread-safe :class:`~raftdb.client.Client`), so the
leader's batching of appends and fsyncs gets several entries at a time.

**Why a re-run is safe.** Every batch carries an ``Idempotency-Key`` derived
from the input (a hash chained over every batch so far, and the batch's
number): running the same input again, after a failure or an interrupt, sends
the same keys, and the node answers the batches it already applied as
duplicates without applying them again (within its session lifetime, 100 000
log entries). The chain needs no first pass, so stdin works too; ``--fresh``
uses new keys (to write the file again on purpose). Batch boundaries depend
only on the input (128 puts, or about 1 MiB of JSON), so the keys match.

**Order.** Batches in flight at once are applied in any order, so a key that
appears again in the input waits for the batch that wrote it before: the last
line for a key wins, as it would if the lines were written one by one.

**Failures.** A regular file is checked whole before anything is written (a
bad line: status 2, nothing written). From stdin, the lines are checked as
they come; a bad line stops the load after the batches before it. Either way,
and when a batch fails, the command says how many keys were loaded, and
exits with the failure's status.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import secrets
import sys
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Final

from raftdb.cli import common
from raftdb.cli.common import CommandError, Context, Exit
from raftdb.client import Client, RaftdbError, Txn, TxnResult

__all__ = ["BATCH_BYTES", "BATCH_PUTS", "Batch", "batches", "parse_line", "register"]

#: Puts in one transaction: the node's bound on a branch.
BATCH_PUTS: Final = 128
#: About this many bytes of JSON in one transaction (under the default
#: ``max_request_bytes`` of 1.5 MiB, with room for the JSON around the values).
BATCH_BYTES: Final = 1 << 20
_ALLOWED: Final = frozenset({"key", "key_b64", "value", "value_b64", "create_index", "mod_index"})
_DEFAULT_JOBS: Final = 4


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``load``."""
    p = commands.add_parser(
        "load",
        help="write keys from JSON lines, in batches",
        description="Write the keys of FILE (or stdin: -), one JSON object per line, "
        '{"key": K, "value": V} or with key_b64/value_b64, in transactions of up to '
        f"{BATCH_PUTS} puts sent concurrently. Safe to run again: a batch already applied "
        "is not applied twice.",
    )
    common.add_client_flags(p)
    p.add_argument("file", metavar="FILE", help="JSON lines, or - for stdin")
    p.add_argument(
        "--jobs",
        metavar="N",
        type=int,
        default=_DEFAULT_JOBS,
        help=f"batches in flight at once (default {_DEFAULT_JOBS})",
    )
    p.add_argument(
        "--fresh",
        action="store_true",
        help="new idempotency keys: write everything again, even batches an earlier run loaded",
    )
    p.set_defaults(run=common.client_command(load))


@dataclass
class Batch:
    """The puts of one transaction, the input lines they came from, and its key."""

    number: int
    first_line: int
    puts: list[tuple[bytes, bytes]] = field(default_factory=list)
    size: int = 0
    idempotency_key: str = ""

    def txn(self) -> Txn:
        t = Txn()
        for key, value in self.puts:
            t.success.put(key, value)
        return t


def parse_line(line: bytes, number: int) -> tuple[bytes, bytes] | None:
    """One input line's key and value (``None``: a blank line).

    Raises:
        CommandError: the line is not one of the accepted objects (status 2).
    """
    if not line.strip():
        return None

    def bad(why: str) -> CommandError:
        return CommandError(f"line {number}: {why}", Exit.USAGE)

    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError) as e:
        raise bad(f"not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise bad("not a JSON object")
    unknown = sorted(set(obj) - _ALLOWED)
    if unknown:
        raise bad(f"unknown field {unknown[0]!r} (a line has key or key_b64, value or value_b64)")
    key = _bytes(obj, "key", bad)
    if not key:
        raise bad("the key is empty")
    return key, _bytes(obj, "value", bad)


def _bytes(obj: dict[str, Any], name: str, bad: Any) -> bytes:
    text, b64 = obj.get(name), obj.get(f"{name}_b64")
    if (text is None) == (b64 is None):
        raise bad(f"needs exactly one of {name!r} and '{name}_b64'")
    if text is not None:
        if not isinstance(text, str):
            raise bad(f"{name!r} must be a string")
        return text.encode()
    if not isinstance(b64, str):
        raise bad(f"'{name}_b64' must be a string")
    try:
        return base64.b64decode(b64, validate=True)
    except binascii.Error:
        raise bad(f"'{name}_b64' is not base64") from None


def batches(lines: Iterable[bytes], salt: bytes = b"") -> Iterator[Batch]:
    """The input's batches, each with its idempotency key (module docstring)."""
    chain = hashlib.sha256(b"raftdb load\0" + salt).digest()
    batch = Batch(0, 1)
    raw = hashlib.sha256()
    for number, line in enumerate(lines, 1):
        kv = parse_line(line, number)
        if kv is None:
            continue
        cost = _cost(*kv)
        if batch.puts and (len(batch.puts) == BATCH_PUTS or batch.size + cost > BATCH_BYTES):
            chain = _seal(batch, chain, raw)
            yield batch
            batch, raw = Batch(batch.number + 1, number), hashlib.sha256()
        if not batch.puts:
            batch.first_line = number
        batch.puts.append(kv)
        batch.size += cost
        raw.update(len(kv[0]).to_bytes(8, "big") + kv[0] + len(kv[1]).to_bytes(8, "big") + kv[1])
    if batch.puts:
        _seal(batch, chain, raw)
        yield batch


def _cost(key: bytes, value: bytes) -> int:
    """About the bytes of a put in the transaction's JSON (values go as base64)."""
    return 2 * len(key) + (len(value) + 2) // 3 * 4 + 64


def _seal(batch: Batch, chain: bytes, raw: Any) -> bytes:
    chain = hashlib.sha256(chain + batch.number.to_bytes(8, "big") + raw.digest()).digest()
    batch.idempotency_key = f"raftdb-load-{chain.hex()[:32]}-{batch.number}"
    return chain


def _lines(stream: IO[bytes]) -> Iterator[bytes]:
    yield from stream


def _count_keys(path: Path) -> int:
    """A regular file's keys, every line checked first (nothing written if one is bad)."""
    with path.open("rb") as f:
        return sum(1 for number, line in enumerate(f, 1) if parse_line(line, number))


@dataclass
class _Tally:
    keys: int = 0
    batches: int = 0
    duplicates: int = 0


def load(ctx: Context) -> int:
    """``raftdb load FILE|-``."""
    a = ctx.args
    if a.jobs < 1:
        raise CommandError("--jobs: must be at least 1", Exit.USAGE)
    salt = secrets.token_bytes(16) if a.fresh else b""
    tally = _Tally()
    start = time.monotonic()
    total = None if a.file == "-" else _count_keys(Path(a.file))  # before anything is sent
    try:
        if a.file == "-":
            _run(ctx, _lines(sys.stdin.buffer), None, salt, tally)
        else:
            with Path(a.file).open("rb") as f:
                _run(ctx, _lines(f), total, salt, tally)
    except (RaftdbError, CommandError, KeyboardInterrupt):
        again = " (running the same input again is safe)" if tally.keys else ""
        ctx.out.note(f"raftdb: {tally.keys} keys were loaded before the failure{again}")
        raise
    seconds = max(time.monotonic() - start, 1e-9)
    rate = tally.keys / seconds
    if ctx.out.json:
        ctx.out.data(
            {
                "keys": tally.keys,
                "batches": tally.batches,
                "duplicate_batches": tally.duplicates,
                "seconds": round(seconds, 3),
                "keys_per_second": round(rate, 1),
            }
        )
    else:
        again = (
            f" ({tally.duplicates} already loaded by an earlier run)" if tally.duplicates else ""
        )
        ctx.out.text(
            f"loaded {tally.keys} keys in {tally.batches} batches{again} in {seconds:.2f}s "
            f"({rate:.0f} keys/s)"
        )
    return int(Exit.OK)


def _run(
    ctx: Context, lines: Iterable[bytes], total: int | None, salt: bytes, tally: _Tally
) -> None:
    client = ctx.client
    jobs: int = ctx.args.jobs
    pending: dict[Future[TxnResult], Batch] = {}
    #: key -> the batch in flight that writes it (a later write of it waits for it).
    writing: dict[bytes, Future[TxnResult]] = {}

    def settle(done: Iterable[Future[TxnResult]], advance: Any) -> None:
        for fut in done:
            batch = pending.pop(fut)
            result = fut.result()  # raises the batch's error
            for key, _ in batch.puts:
                if writing.get(key) is fut:
                    del writing[key]
            tally.keys += len(batch.puts)
            tally.batches += 1
            tally.duplicates += int(result.duplicate)
            advance(len(batch.puts))

    with (
        ctx.out.progress("loading", total) as advance,
        ThreadPoolExecutor(jobs, thread_name_prefix="raftdb-load") as pool,
    ):
        try:
            for batch in batches(lines, salt):
                while len(pending) >= jobs:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    settle(done, advance)
                before = {writing[k] for k, _ in batch.puts if k in writing}
                if before:
                    settle(wait(before).done, advance)
                fut = pool.submit(_send, client, batch)
                pending[fut] = batch
                for key, _ in batch.puts:
                    writing[key] = fut
            settle(wait(pending).done, advance)
        except BaseException:
            for fut in pending:
                fut.cancel()
            # What was sent is settled (applied or not) before the count is told.
            for fut in wait(pending).done:
                if not fut.cancelled() and fut.exception() is None:
                    tally.keys += len(pending[fut].puts)
                    tally.batches += 1
            raise


def _send(client: Client, batch: Batch) -> TxnResult:
    return client.txn(batch.txn(), idempotency_key=batch.idempotency_key)
