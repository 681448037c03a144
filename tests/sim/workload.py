"""The simulated clients, and what they record for the invariants.

Three kinds of client run against the simulated cluster, each with at most
one request open at a time (as in Jepsen) and a client session
(``client_id``, ``seq``, ``ack``: raftdb's Idempotency-Key), so that a request
that timed out is retried, through another node, as the same ``seq``:

- key-value clients: single-key gets (ReadIndex), puts, deletes and
  conditional writes on ``a``/``b``/``c``; multi-key transactions on the same
  keys; and a bank: transfers between four accounts (compare both
  ``mod_index`` es the client last read, then two puts) and reads of every
  balance in one transaction. Every value written is unique, so the
  linearizability checker's value compares stand for raftdb's index compares
  (:class:`~raftdb.testing.linearizability.KVTxnModel`).
- lease workers: grant a lease, attach keys to it (a put with the lease, or a
  transaction's), then keep it alive (a keep-alive every third of the TTL),
  abandon it, or revoke it; sometimes detach a key by writing it without a
  lease. What they saw (when each renewal was sent and answered) is what the
  lease invariants judge the leader's expiries by.

The clients' operations go to the :class:`History` for the linearizability
check; the lease workers' keys stay out of it (their deletions come from the
leader, not from a client).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from raftdb.kv.commands import Command, CommandStatus, KeyValue, KVResult, Op
from raftdb.kv.txn import CmpOp, Compare, Target, Txn, TxnOp, TxnOpKind
from raftdb.testing.linearizability import (
    CompareAndDelete,
    CompareAndSet,
    Delete,
    Get,
    IfValue,
    KVTxnInput,
    KVTxnOutput,
    Operation,
    Put,
    PutIfAbsent,
    Transaction,
    TxnOutput,
    TxnStep,
)

from .invariants import InvariantViolation

if TYPE_CHECKING:
    from raftdb.kv.state_machine import MemoryStateMachine

    from .simulator import SimNode, Simulation

__all__ = ["ACCOUNTS", "KEYS", "LEASE_PREFIX", "History", "LeaseTrack", "Request", "Workload"]

KEYS: Final = (b"a", b"b", b"c")
BANK_PREFIX: Final = b"acct/"
ACCOUNTS: Final = tuple(BANK_PREFIX + str(i).encode() for i in range(4))
OPENING_BALANCE: Final = 100
#: The bank's total: every committed read of all balances must add up to it.
BANK_TOTAL: Final = OPENING_BALANCE * len(ACCOUNTS)
LEASE_PREFIX: Final = b"lease/"
#: TTLs the lease workers ask for, in seconds (raftdb's minimum is 2 s with a
#: 1 s election timeout, which is the simulation's: 10 ticks of 0.1 s).
LEASE_TTLS: Final = (2, 3, 5)

#: Statuses of a request that was not applied (so it had no effect).
_NOT_APPLIED: Final = frozenset(
    {CommandStatus.STALE, CommandStatus.SESSION_EXPIRED, CommandStatus.INVALID}
)


# -- the linearizability history ------------------------------------------------------


@dataclass
class _Op:
    client: str
    input: KVTxnInput
    call: int
    output_of: Callable[[KVResult], KVTxnOutput] | None  # writes: from the applied result
    req: tuple[bytes, int] | None = None  # writes: the session (client id, seq)
    ret: int | None = None
    output: KVTxnOutput = None


class History:
    """The clients' operations, as the linearizability checker takes them.

    A write whose client got no answer (every attempt timed out, or the
    client gave up) is resolved at the end from what the cluster applied: if
    no node ever applied it, it had no effect and is left out; if one did, it
    took effect before the first node applied it, so it is recorded as
    returning then, with the result the state machine computed. Both are
    sound (the true execution is still a witness) and keep the checker's
    search small. An unanswered read has no effect and is left out.
    """

    def __init__(self, sim: Simulation) -> None:
        self._sim = sim
        self._ops: dict[int, _Op] = {}
        self._next = 0
        # session -> (step, result) of the first application anywhere
        self.first_applied: dict[tuple[bytes, int], tuple[int, KVResult]] = {}

    def invoke(
        self,
        client: str,
        op: KVTxnInput,
        req: tuple[bytes, int] | None = None,
        output_of: Callable[[KVResult], KVTxnOutput] | None = None,
    ) -> int:
        self._next += 1
        self._ops[self._next] = _Op(client, op, self._sim.step_no, output_of, req)
        return self._next

    def complete(self, handle: int, output: KVTxnOutput) -> None:
        op = self._ops[handle]
        op.ret, op.output = self._sim.step_no, output

    def fail(self, handle: int) -> None:
        del self._ops[handle]

    def applied(self, req: tuple[bytes, int], result: KVResult) -> None:
        self.first_applied.setdefault(req, (self._sim.step_no, result))

    def operations(self) -> list[Operation[KVTxnInput, KVTxnOutput]]:
        out: list[Operation[KVTxnInput, KVTxnOutput]] = []
        for op in self._ops.values():
            if op.ret is not None:
                out.append(Operation(op.client, op.input, op.output, op.call, op.ret))
            elif op.req is not None and op.req in self.first_applied:
                assert op.output_of is not None
                step, result = self.first_applied[op.req]
                output = op.output_of(result)
                out.append(Operation(op.client, op.input, output, op.call, max(step, op.call)))
        return out

    def answered(self, handle: int) -> bool:
        op = self._ops.get(handle)
        return op is not None and op.ret is not None

    def unanswered(self) -> int:
        return sum(1 for op in self._ops.values() if op.ret is None)


# -- requests --------------------------------------------------------------------------


@dataclass
class Request:
    """One command in a client's session, retried (same ``seq``) until answered.

    Attributes:
        kind: what it is, for the invariants ("put", "txn", "bank-read",
            "grant", "keepalive", ...).
        on_answer: called with the result the client received.
        first: the result of the first application anywhere (not a
            duplicate, not stale), once there is one.
    """

    client: Client
    seq: int
    data: bytes
    kind: str
    call_tick: int
    max_attempts: int
    timeout: int
    on_answer: Callable[[KVResult], None]
    on_give_up: Callable[[], None] | None = None
    lease: int = 0
    node_id: int = 0
    deadline: int = 0
    attempts: int = 0
    first: KVResult | None = None
    first_tick: int = 0


class Client(ABC):
    """A client with a session; :meth:`act` runs once per round."""

    def __init__(self, workload: Workload, name: str) -> None:
        self.w = workload
        self.name = name
        self.client_id = name.encode()
        self.seq = 0
        self.answered = 0  # the highest seq answered
        self.pending: Request | None = None

    @property
    def busy(self) -> bool:
        return self.pending is not None

    def request(
        self,
        cmd: Command,
        kind: str,
        on_answer: Callable[[KVResult], None],
        *,
        max_attempts: int = 3,
        timeout: int | None = None,
        lease: int = 0,
        on_give_up: Callable[[], None] | None = None,
    ) -> Request | None:
        """Send ``cmd`` in the session; None if no node took it (nothing was sent,
        and the ``seq`` is used again).

        ``ack`` is the lowest ``seq`` not answered, except that a request given
        up unanswered is not waited for: ack is then the next ``seq`` after the
        last answered. (Acknowledging a ``seq`` never answered would claim
        answers the session never gave: a client with no session yet would be
        told ``SESSION_EXPIRED``.)
        """
        seq = self.seq + 1
        ack = min(seq, self.answered + 1)
        data = cmd.with_session(self.client_id, seq, ack).encode()
        w = self.w
        req = Request(
            self,
            seq,
            data,
            kind,
            w.sim.now,
            max_attempts,
            w.sim.cfg.op_timeout if timeout is None else timeout,
            on_answer,
            on_give_up,
            lease,
        )
        if not w.send(req):
            return None
        self.seq = seq
        self.pending = req
        w.requests[(self.client_id, seq)] = req
        return req

    @abstractmethod
    def act(self) -> None:
        """Start a request if idle (and the dice say so)."""


def _text(value: bytes) -> str:
    return value.decode()


class KVClient(Client):
    """Single-key operations, multi-key transactions and bank transfers."""

    def __init__(self, workload: Workload, name: str) -> None:
        super().__init__(workload, name)
        self.reading = False  # a ReadIndex read is open
        self.balances: dict[bytes, tuple[bytes, int]] | None = None  # last bank read

    @property
    def busy(self) -> bool:
        return self.pending is not None or self.reading

    def act(self) -> None:
        w = self.w
        rng = w.sim.rng
        if self.busy or rng.random() >= w.sim.cfg.client_rate:
            return
        w.ops += 1
        roll = rng.random()
        if roll < 0.35:
            self._read(rng.choice(KEYS))
        elif roll < 0.72:
            self._write(rng.choice(KEYS), rng.random())
        elif roll < 0.82:
            self._txn()
        else:
            self._bank()

    # -- single keys --------------------------------------------------------------

    def _read(self, key: bytes) -> None:
        w = self.w
        handle = w.history.invoke(self.name, Get(_text(key)))

        def done(node: SimNode) -> None:
            self.reading = False
            kv = node.sm.get(key)
            w.history.complete(handle, None if kv is None else _text(kv.value))

        def lost() -> None:
            self.reading = False
            # No effect: an unanswered read is left out of the history.

        if w.sim.read_index(handle, done, lost):
            self.reading = True
        else:
            w.history.fail(handle)

    def _write(self, key: bytes, roll: float) -> None:
        w = self.w
        value = w.unique()
        latest = w.latest.get(key)
        inp: KVTxnInput
        cmd: Command
        output_of: Callable[[KVResult], KVTxnOutput]
        if roll < 0.7:
            inp, cmd, output_of = Put(_text(key), value), Command.put(key, value.encode()), _none
        elif roll < 0.8:
            inp, cmd, output_of = Delete(_text(key)), Command.delete(key), _deleted
        elif roll < 0.92 and latest is not None:
            inp = CompareAndSet(_text(key), _text(latest[0]), value)
            cmd, output_of = Command.put(key, value.encode(), if_mod=latest[1]), _ok
        elif latest is not None:
            inp = CompareAndDelete(_text(key), _text(latest[0]))
            cmd, output_of = Command.delete(key, if_mod=latest[1]), _ok
        else:
            inp = PutIfAbsent(_text(key), value)
            cmd, output_of = Command.put(key, value.encode(), create_only=True), _ok
        self._send(cmd, "kv", inp, output_of)

    def _send(
        self,
        cmd: Command,
        kind: str,
        inp: KVTxnInput,
        output_of: Callable[[KVResult], KVTxnOutput],
        then: Callable[[KVResult], None] | None = None,
        *,
        timeout: int | None = None,
    ) -> None:
        w = self.w
        req_key = (self.client_id, self.seq + 1)
        handle = w.history.invoke(self.name, inp, req_key, output_of)

        def answer(result: KVResult) -> None:
            self.pending = None
            if result.duplicate:
                # The retry's answer from the session; the reads are the first
                # application's (checked equal to this answer by the workload).
                first = w.requests[req_key].first
                assert first is not None
                result = first
            w.history.complete(handle, output_of(result))
            if then is not None:
                then(result)

        def give_up() -> None:
            self.pending = None  # left open in the history: resolved at the end

        if self.request(cmd, kind, answer, on_give_up=give_up, timeout=timeout) is None:
            w.history.fail(handle)

    # -- transactions on a, b, c ---------------------------------------------------------

    def _txn(self) -> None:
        w = self.w
        rng = w.sim.rng
        compares: list[Compare] = []
        model_compares: list[IfValue] = []
        for _ in range(rng.randrange(3)):
            key = rng.choice(KEYS)
            latest = w.latest.get(key)
            roll = rng.random()
            if latest is None or roll < 0.2:
                compares.append(Compare(key, Target.EXISTS, CmpOp.EQ, False))
                model_compares.append(IfValue(_text(key), None))
            elif roll < 0.6:
                compares.append(Compare(key, Target.MOD_INDEX, CmpOp.EQ, latest[1]))
                model_compares.append(IfValue(_text(key), _text(latest[0])))
            else:
                compares.append(Compare(key, Target.VALUE, CmpOp.EQ, latest[0]))
                model_compares.append(IfValue(_text(key), _text(latest[0])))
        success, model_success = self._branch(rng.randrange(1, 4))
        failure, model_failure = self._branch(rng.randrange(3))
        txn = Txn(tuple(compares), success, failure)
        inp = Transaction(tuple(model_compares), model_success, model_failure)
        self._send(Command.txn(txn.encode()), "txn", inp, _txn_output)

    def _branch(self, n: int) -> tuple[tuple[TxnOp, ...], tuple[TxnStep, ...]]:
        w = self.w
        rng = w.sim.rng
        ops: list[TxnOp] = []
        model: list[TxnStep] = []
        for _ in range(n):
            key = rng.choice(KEYS)
            roll = rng.random()
            if roll < 0.5:
                value = w.unique()
                ops.append(TxnOp.put(key, value.encode()))
                model.append(Put(_text(key), value))
            elif roll < 0.7:
                ops.append(TxnOp.delete(key))
                model.append(Delete(_text(key)))
            else:
                ops.append(TxnOp.get(key))
                model.append(Get(_text(key)))
        return tuple(ops), tuple(model)

    # -- the bank --------------------------------------------------------------------

    def _bank(self) -> None:
        w = self.w
        if w.latest.get(ACCOUNTS[0]) is None and w.sim.rng.random() < 0.5:
            self._open()
        elif self.balances is None or len(self.balances) < len(ACCOUNTS):
            self._read_balances()
        else:
            self._transfer(self.balances)

    def _open(self) -> None:
        """Create every account, once: compare that the first one does not exist."""
        tag = self.w.unique()
        values = [f"{OPENING_BALANCE}:{tag}" for _ in ACCOUNTS]
        txn = Txn(
            (Compare(ACCOUNTS[0], Target.EXISTS, CmpOp.EQ, False),),
            tuple(TxnOp.put(a, v.encode()) for a, v in zip(ACCOUNTS, values, strict=True)),
        )
        inp = Transaction(
            (IfValue(_text(ACCOUNTS[0]), None),),
            tuple(Put(_text(a), v) for a, v in zip(ACCOUNTS, values, strict=True)),
        )
        self._send(Command.txn(txn.encode()), "bank-open", inp, _txn_output)

    def _read_balances(self) -> None:
        """Every balance in one transaction: a list of the prefix, or a get of each."""
        use_list = self.w.sim.rng.random() < 0.5
        op = (TxnOp.list(BANK_PREFIX),) if use_list else tuple(TxnOp.get(a) for a in ACCOUNTS)
        inp = Transaction((), tuple(Get(_text(a)) for a in ACCOUNTS))

        def remember(result: KVResult) -> None:
            self.balances = _balances(result)

        self._send(Command.txn(Txn((), op).encode()), "bank-read", inp, _bank_read, remember)

    def _transfer(self, balances: dict[bytes, tuple[bytes, int]]) -> None:
        rng = self.w.sim.rng
        funded = [a for a in ACCOUNTS if _amount(balances[a][0]) > 0]
        if not funded:
            self._read_balances()
            return
        src = rng.choice(funded)
        dst = rng.choice([a for a in ACCOUNTS if a != src])
        (v_src, m_src), (v_dst, m_dst) = balances[src], balances[dst]
        amount = rng.randint(1, min(20, _amount(v_src)))
        tag = self.w.unique()
        new_src = f"{_amount(v_src) - amount}:{tag}"
        new_dst = f"{_amount(v_dst) + amount}:{tag}"
        txn = Txn(
            (
                Compare(src, Target.MOD_INDEX, CmpOp.EQ, m_src),
                Compare(dst, Target.MOD_INDEX, CmpOp.EQ, m_dst),
            ),
            (TxnOp.put(src, new_src.encode()), TxnOp.put(dst, new_dst.encode())),
            (TxnOp.get(src), TxnOp.get(dst)),
        )
        inp = Transaction(
            (IfValue(_text(src), _text(v_src)), IfValue(_text(dst), _text(v_dst))),
            (Put(_text(src), new_src), Put(_text(dst), new_dst)),
            (Get(_text(src)), Get(_text(dst))),
        )

        def learn(result: KVResult) -> None:
            # Success: the client knows the new balances; failure: its reads.
            txn_result = result.txn
            if txn_result is None:
                self.balances = None
                return
            if txn_result.succeeded:
                balances[src] = (new_src.encode(), result.index)
                balances[dst] = (new_dst.encode(), result.index)
                return
            for op_result in txn_result.results:
                if op_result.kv is None:
                    self.balances = None
                    return
                balances[op_result.kv.key] = (op_result.kv.value, op_result.kv.mod_index)

        self._send(Command.txn(txn.encode()), "bank-transfer", inp, _txn_output, learn)


def _amount(value: bytes) -> int:
    return int(value.split(b":", 1)[0])


def _none(result: KVResult) -> KVTxnOutput:
    return None


def _deleted(result: KVResult) -> KVTxnOutput:
    return result.prev_mod_index != 0


def _ok(result: KVResult) -> KVTxnOutput:
    return result.status == CommandStatus.OK


def _txn_output(result: KVResult) -> KVTxnOutput:
    txn = result.txn
    if result.status != CommandStatus.OK or txn is None:
        raise InvariantViolation(f"a transaction without leases answered {result}")
    outputs: list[str | bool | None] = []
    for r in txn.results:
        if r.kind == TxnOpKind.GET:
            outputs.append(None if r.kv is None else _text(r.kv.value))
        elif r.kind == TxnOpKind.DELETE:
            outputs.append(r.found)
        else:
            outputs.append(None)
    return TxnOutput(txn.succeeded, tuple(outputs) if not result.duplicate else None)


def _balances(result: KVResult) -> dict[bytes, tuple[bytes, int]]:
    """``{account: (value, mod_index)}`` from a read of all balances (list or gets)."""
    txn = result.txn
    assert txn is not None
    out: dict[bytes, tuple[bytes, int]] = {}
    for r in txn.results:
        kvs = r.kvs if r.kind == TxnOpKind.LIST else (() if r.kv is None else (r.kv,))
        for kv in kvs:
            out[kv.key] = (kv.value, kv.mod_index)
    return out


def _bank_read(result: KVResult) -> KVTxnOutput:
    """A read of all balances, as the model's gets of every account."""
    balances = _balances(result)
    txn = result.txn
    assert txn is not None
    values = tuple(_text(balances[a][0]) if a in balances else None for a in ACCOUNTS)
    return TxnOutput(txn.succeeded, values)


# -- leases --------------------------------------------------------------------------


@dataclass
class LeaseTrack:
    """A granted lease, as its worker saw it and as the cluster applied it.

    Attributes:
        mode: ``keep`` (kept alive to the end of the faulty phase), ``abandon``
            (a few renewals, then no more), ``revoke`` (a few, then revoked).
        last_send: when the renewal last answered OK was sent (its first
            attempt): every leader's deadline for it is at least this plus
            the TTL, so no expiry may apply before then.
        lapses: keep-alives answered only after the previous renewal's
            ``last_send`` + TTL (the lease was not kept alive then: it may
            have expired, legitimately).
        changes_survived: leader changes that happened while the lease was
            kept alive (within a TTL of ``last_send``) and after which a
            keep-alive was answered OK: the new leader did not expire it.
        renewal_sent: for each renewal index (grant, keep-alives) applied,
            the tick its request was first sent.
        ended: how it ended ("expired", "revoked") and the tick and index.
    """

    id: int
    ttl: int  # seconds
    ttl_ticks: int
    mode: str
    granted_tick: int
    last_send: int
    lapses: int = 0
    changes_survived: int = 0
    change_pending: bool = False  # a leader change since the last renewal answered
    renewals_left: int = 0
    keys: list[bytes] = field(default_factory=list)
    renewal_sent: dict[int, int] = field(default_factory=dict)
    last_renewal_index: int = 0
    last_renewal_tick: int = 0
    ended: str = ""
    ended_tick: int = 0
    ended_index: int = 0
    abandoned_tick: int | None = None
    leader_changes: int = 0
    deleted: list[bytes] = field(default_factory=list)  # the keys its end deleted


class LeaseWorker(Client):
    """Grants a lease, attaches keys, then keeps it alive, abandons or revokes it."""

    def __init__(self, workload: Workload, name: str) -> None:
        super().__init__(workload, name)
        self.lease: LeaseTrack | None = None
        self.keys_wanted = 0
        self.next_keepalive = 0

    def act(self) -> None:
        w = self.w
        rng = w.sim.rng
        if self.pending is not None:
            return
        lease = self.lease
        if lease is None:
            if rng.random() < 0.2:
                self._grant(rng.choice(LEASE_TTLS))
            return
        now = w.sim.now
        if now >= self.next_keepalive:
            if lease.mode == "keep" or lease.renewals_left > 0:
                self._keepalive(lease)
                return
            if lease.mode == "revoke":
                self._revoke(lease)
                return
            lease.abandoned_tick = now
            self.lease = None  # abandoned: the leader must expire it
            return
        if len(lease.keys) < self.keys_wanted:
            self._attach(lease, len(lease.keys))
        elif lease.keys and rng.random() < 0.02:
            self._detach(lease)

    def _gone(self, lease: LeaseTrack, what: str) -> None:
        """The lease was not found: it must have expired, so a TTL must have passed
        since the last renewal answered was sent."""
        now = self.w.sim.now
        if now < lease.last_send + lease.ttl_ticks:
            raise InvariantViolation(
                f"{self.name}: {what} found no lease {lease.id} at tick {now}, "
                f"{now - lease.last_send} ticks after a renewal answered was sent "
                f"(TTL {lease.ttl_ticks} ticks)"
            )
        self.lease = None

    def _grant(self, ttl: int) -> None:
        w = self.w

        def answer(result: KVResult) -> None:
            self.pending = None
            if result.status != CommandStatus.OK:
                raise InvariantViolation(f"{self.name}: a lease grant answered {result}")
            rng = w.sim.rng
            roll = rng.random()
            mode = "keep" if roll < 0.45 else "abandon" if roll < 0.85 else "revoke"
            track = w.leases[result.lease]
            track.mode = mode
            track.renewals_left = rng.randrange(4)
            self.lease = track
            self.keys_wanted = rng.randint(1, 2)
            self.next_keepalive = w.sim.now + max(1, track.ttl_ticks // 3)

        self.request(Command.lease_grant(ttl), "grant", answer, max_attempts=4, timeout=8)

    def _keepalive(self, lease: LeaseTrack) -> None:
        w = self.w
        interval = max(1, lease.ttl_ticks // 3)
        sent = w.sim.now

        def answer(result: KVResult) -> None:
            self.pending = None
            now = w.sim.now
            if result.status == CommandStatus.LEASE_NOT_FOUND:
                self._gone(lease, "a keep-alive")
                return
            if result.status != CommandStatus.OK:
                raise InvariantViolation(f"{self.name}: keep-alive of {lease.id} answered {result}")
            if now >= lease.last_send + lease.ttl_ticks:
                lease.lapses += 1  # answered too late: it was not kept alive meanwhile
            elif lease.change_pending:
                lease.changes_survived += 1
            lease.change_pending = False
            lease.last_send = max(lease.last_send, sent)
            lease.renewals_left -= 1
            self.next_keepalive = sent + interval

        def give_up() -> None:
            self.pending = None
            lease.abandoned_tick = w.sim.now
            self.lease = None

        self.request(
            Command.lease_keepalive(lease.id),
            "keepalive",
            answer,
            # Retried quickly, as a keep-alive stream reconnects: a TTL holds
            # about six attempts.
            max_attempts=12,
            timeout=max(2, interval // 2),
            lease=lease.id,
            on_give_up=give_up,
        )

    def _revoke(self, lease: LeaseTrack) -> None:
        def answer(result: KVResult) -> None:
            self.pending = None
            self.lease = None
            if result.status not in (CommandStatus.OK, CommandStatus.LEASE_NOT_FOUND):
                raise InvariantViolation(f"{self.name}: revoke of {lease.id} answered {result}")

        def give_up() -> None:
            self.pending = None
            lease.abandoned_tick = self.w.sim.now
            self.lease = None

        self.request(
            Command.lease_revoke(lease.id),
            "revoke",
            answer,
            max_attempts=4,
            timeout=10,
            lease=lease.id,
            on_give_up=give_up,
        )

    def _attach(self, lease: LeaseTrack, n: int) -> None:
        """Put a key with the lease, as a plain put or as a transaction's."""
        w = self.w
        key = LEASE_PREFIX + f"{lease.id}/{n}".encode()
        value = w.unique().encode()
        if w.sim.rng.random() < 0.6:
            cmd = Command.put(key, value, lease=lease.id)
        else:
            cmd = Command.txn(Txn((), (TxnOp.put(key, value, lease=lease.id),)).encode())

        def answer(result: KVResult) -> None:
            self.pending = None
            if result.status == CommandStatus.LEASE_NOT_FOUND:
                self._gone(lease, f"attaching {key!r}")
                return
            if result.status != CommandStatus.OK:
                raise InvariantViolation(f"{self.name}: attaching {key!r} answered {result}")
            lease.keys.append(key)

        def give_up() -> None:
            self.pending = None
            lease.keys.append(key)  # it may have been attached: do not reuse the name

        self.request(cmd, "attach", answer, timeout=10, lease=lease.id, on_give_up=give_up)

    def _detach(self, lease: LeaseTrack) -> None:
        """Write one of the lease's keys without a lease: it must outlive the lease."""
        w = self.w
        key = lease.keys.pop(w.sim.rng.randrange(len(lease.keys)))
        self.keys_wanted -= 1

        def answer(result: KVResult) -> None:
            self.pending = None

        def give_up() -> None:
            self.pending = None

        self.request(
            Command.put(key, w.unique().encode()), "detach", answer, timeout=10, on_give_up=give_up
        )


# -- the workload --------------------------------------------------------------------


class Workload:
    """Every client, and what the cluster committed as they see it.

    ``latest`` is the committed state of the keys the clients use (from the
    first application of each index), so that conditional writes often hold;
    a client's knowledge in a real run comes from its reads, which would
    make them fail more often, not differently.
    """

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.history = History(sim)
        self.clients: list[Client] = [KVClient(self, f"kv{i}") for i in range(sim.cfg.clients)]
        self.clients += [LeaseWorker(self, f"lease{i}") for i in range(sim.cfg.lease_workers)]
        self.final = KVClient(self, "final")  # the write that proves recovery
        self.final_done = False
        self.requests: dict[tuple[bytes, int], Request] = {}
        self.latest: dict[bytes, tuple[bytes, int]] = {}
        self.leases: dict[int, LeaseTrack] = {}
        self.ops = 0
        self.bank_reads = 0
        self.txns = 0
        self.duplicates = 0
        self._unique = 0

    def unique(self) -> str:
        """A value never written before."""
        self._unique += 1
        return f"v{self._unique}"

    def round(self, act: bool) -> None:
        """Retry or give up timed-out requests, then (``act``) let each idle client act."""
        now = self.sim.now
        for client in (*self.clients, self.final):
            req = client.pending
            if req is not None and req.deadline <= now:
                self._retry(req)
        if act:
            for client in self.clients:
                client.act()

    def final_write(self) -> None:
        """After the heal: a write that must commit (sent again while unanswered)."""
        if self.final.pending is not None or self.final_done:
            return

        def done(result: KVResult) -> None:
            self.final_done = True

        value = self.unique()
        self.final._send(
            Command.put(b"final", value.encode()),
            "kv",
            Put("final", value),
            _none,
            done,
            timeout=3 * self.sim.cfg.election_tick,
        )

    def send(self, req: Request) -> bool:
        """One attempt of ``req`` through a live node (another than the last, if any;
        the one a targeted schedule pinned, if it is up)."""
        sim = self.sim
        live = [n for n in sim.live_nodes() if n.id != req.node_id] or sim.live_nodes()
        pinned = [n for n in sim.live_nodes() if n.id == sim.pinned]
        if not live:
            return False
        node = pinned[0] if pinned else sim.rng.choice(live)
        if not sim.propose(node, req.data):
            return False
        req.node_id = node.id
        req.attempts += 1
        req.deadline = sim.now + req.timeout
        return True

    def _retry(self, req: Request) -> None:
        if req.attempts < req.max_attempts and self.send(req):
            return
        if req.attempts >= req.max_attempts:
            req.client.pending = None
            if req.on_give_up is not None:
                req.on_give_up()
            return
        req.deadline = self.sim.now + 1  # no node took it: try again next round

    def node_lost(self, node_id: int) -> None:
        """``node_id`` crashed: its clients' connections broke, they retry at once."""
        for client in self.clients:
            req = client.pending
            if req is not None and req.node_id == node_id:
                req.deadline = self.sim.now

    def stop(self) -> None:
        """The faulty phase is over: clients stop (their open requests are left
        unanswered); every lease not ended is abandoned now."""
        now = self.sim.now
        for client in self.clients:
            client.pending = None
            if isinstance(client, KVClient):
                client.reading = False
            if isinstance(client, LeaseWorker):
                client.lease = None
        for track in self.leases.values():
            if not track.ended and track.abandoned_tick is None:
                track.abandoned_tick = now

    def lease_live(self) -> bool:
        """Whether some lease is granted, not ended, and still looked after."""
        return any(not t.ended and t.abandoned_tick is None for t in self.leases.values())

    def leader_changed(self) -> None:
        """A node became leader: note it for every lease alive and kept alive now."""
        now = self.sim.now
        for track in self.leases.values():
            if not track.ended and track.abandoned_tick is None:
                track.leader_changes += 1
                if now < track.last_send + track.ttl_ticks:
                    track.change_pending = True

    def ttl_ticks(self) -> list[int]:
        return [t.ttl_ticks for t in self.leases.values()]

    def check_expired_after_heal(self, heal: int, leader_since: int, election: int) -> None:
        """Every lease ended; each abandoned one that expired after the heal did so
        within its TTL and an election timeout of the latest of: the heal, the
        final leader taking over (it gives every lease a full TTL), the lease's
        last renewal being applied."""
        for track in self.leases.values():
            if not track.ended:
                raise InvariantViolation(f"lease {track.id} never ended ({track})")
            if track.ended != "expired" or track.ended_tick < heal:
                continue
            start = max(heal, leader_since, track.last_renewal_tick)
            if track.ended_tick > start + track.ttl_ticks + election:
                raise InvariantViolation(
                    f"lease {track.id} (ttl {track.ttl_ticks} ticks) expired at tick "
                    f"{track.ended_tick}: more than its TTL and an election timeout "
                    f"({election} ticks) after tick {start} (heal {heal}, leader since "
                    f"{leader_since}, last renewal applied {track.last_renewal_tick})"
                )

    def check_final_state(self, sm: MemoryStateMachine) -> None:
        """After the heal: the bank still adds up; no lease is left, no key kept of one
        that ended (a key detached from its lease, written without one, stays)."""
        _check_bank_read_kvs(sm.range(BANK_PREFIX), sm.applied_index)
        if sm.leases():
            raise InvariantViolation(f"leases left after the heal: {sm.leases()}")
        for track in self.leases.values():
            for key in track.deleted:
                kv = sm.get(key)
                if kv is not None and kv.mod_index <= track.ended_index:
                    raise InvariantViolation(
                        f"key {key!r} of lease {track.id} outlived it (ended at "
                        f"{track.ended_index}): {kv}"
                    )

    def lease_summary(self) -> dict[str, int]:
        tracks = self.leases.values()
        return {
            "granted": len(self.leases),
            "expired": sum(t.ended == "expired" for t in tracks),
            "revoked": sum(t.ended == "revoked" for t in tracks),
            "kept": sum(t.mode == "keep" for t in tracks),
            "lapses": sum(t.lapses for t in tracks),
            "leader_changes_survived": sum(t.changes_survived for t in tracks),
            "expired_after_heal": sum(
                t.ended == "expired" and t.ended_tick >= self.sim.heal_tick for t in tracks
            ),
        }

    # -- what nodes apply ------------------------------------------------------------

    def answer(self, node: SimNode, session: tuple[bytes, int], result: KVResult) -> None:
        """``node`` applied an entry of ``session``: answer the client waiting there."""
        req = self.requests.get(session)
        if req is None or req.client.pending is not req or req.node_id != node.id:
            return
        if result.status in _NOT_APPLIED:
            raise InvariantViolation(
                f"{req.client.name}'s open request {req.seq} ({req.kind}) answered "
                f"{result.status.name} at {result.index}"
            )
        req.client.pending = None
        req.client.answered = max(req.client.answered, req.seq)
        req.on_answer(result)

    def committed(
        self, session: tuple[bytes, int] | None, cmd: Command | None, result: KVResult
    ) -> None:
        """The first application, anywhere, of the entry at ``result.index``."""
        sim = self.sim
        for change in result.changes:
            if change.kind == 1:
                self.latest[change.key] = (change.value, change.mod_index)
            else:
                self.latest.pop(change.key, None)
        if cmd is not None and cmd.op in (Op.LEASE_EXPIRE, Op.LEASE_REVOKE) and result.ok:
            self._lease_ended(cmd, result)
        if session is None:
            return
        req = self.requests.get(session)
        if req is None:
            return
        if result.duplicate:
            self.duplicates += 1
            _check_duplicate(req, cmd, result)
            return
        if result.status in _NOT_APPLIED or req.first is not None:
            return
        req.first, req.first_tick = result, sim.now
        self.history.applied(session, result)
        if req.kind in ("txn", "bank-transfer", "bank-read", "bank-open"):
            self.txns += 1
        if req.kind == "bank-read":
            self.bank_reads += 1
            _check_bank_read(result)
        if cmd is None:
            return
        self._lease_committed(cmd, result, req)

    def _lease_committed(self, cmd: Command, result: KVResult, req: Request) -> None:
        sim = self.sim
        if cmd.op == Op.LEASE_GRANT and result.status == CommandStatus.OK:
            ttl_ticks = round(cmd.ttl / TICK_S)
            track = LeaseTrack(result.lease, cmd.ttl, ttl_ticks, "", req.call_tick, req.call_tick)
            track.renewal_sent[result.index] = req.call_tick
            track.last_renewal_index, track.last_renewal_tick = result.index, sim.now
            self.leases[result.lease] = track
        elif cmd.op == Op.LEASE_KEEPALIVE and result.status == CommandStatus.OK:
            track = self.leases[cmd.lease]
            track.renewal_sent[result.index] = req.call_tick
            track.last_renewal_index, track.last_renewal_tick = result.index, sim.now

    def _lease_ended(self, cmd: Command, result: KVResult) -> None:
        """A lease ended (first application): an expiry must not come early.

        Every leader's deadline for a renewal is at least a TTL after the
        renewal was sent (the leader applied it later, or took over later and
        gave a full TTL), and an expiry is proposed after the deadline. So an
        expiry applied at tick ``x`` that names renewal ``r`` needs ``x >=
        sent(r) + TTL``; and since a renewal answered before ``x`` was applied
        before the expiry (which then must name it), ``x >= last_send + TTL``
        for the last renewal answered: a lease whose keep-alives are each
        answered within a TTL of the previous one's sending is never expired.
        """
        now = self.sim.now
        track = self.leases[cmd.lease]
        track.ended = "expired" if cmd.op == Op.LEASE_EXPIRE else "revoked"
        track.ended_tick, track.ended_index = now, result.index
        track.deleted = [c.key for c in result.changes]
        if cmd.op != Op.LEASE_EXPIRE:
            return
        assert cmd.expect is not None
        sent = track.renewal_sent.get(cmd.expect)
        if sent is None:
            raise InvariantViolation(
                f"lease {cmd.lease} expired at {result.index} naming {cmd.expect}, "
                f"which is not one of its renewals {sorted(track.renewal_sent)}"
            )
        if now < sent + track.ttl_ticks:
            raise InvariantViolation(
                f"lease {cmd.lease} (ttl {track.ttl_ticks} ticks) expired at tick {now} "
                f"(index {result.index}), {now - sent} ticks after its renewal at "
                f"{cmd.expect} was sent"
            )
        if now < track.last_send + track.ttl_ticks:
            raise InvariantViolation(
                f"lease {cmd.lease} was kept alive (a keep-alive sent at tick "
                f"{track.last_send} answered) but expired at tick {now} (index "
                f"{result.index}), within its TTL of {track.ttl_ticks} ticks"
            )


#: Simulated seconds per tick (the node's heartbeat interval).
TICK_S: Final = 0.1


def _check_duplicate(req: Request, cmd: Command | None, result: KVResult) -> None:
    """A retry answered from the session must say what the first application did
    (what the session keeps of it: see ``raftdb.kv.applier._duplicate``)."""
    first = req.first
    if first is None:
        raise InvariantViolation(
            f"{req.client.name} request {req.seq} ({req.kind}) answered as a duplicate at "
            f"{result.index}, but no earlier application of it"
        )
    same = result.status == first.status and not result.changes
    op = None if cmd is None else cmd.op
    if op == Op.TXN:
        same = same and result.mod_index == first.index
        if first.txn is not None:
            same = same and result.txn is not None and result.txn.succeeded == first.txn.succeeded
    elif op in (Op.LEASE_GRANT, Op.LEASE_KEEPALIVE, Op.LEASE_REVOKE):
        same = same and (result.lease, result.ttl) == (first.lease, first.ttl)
    elif op in (Op.PUT, Op.DELETE):
        same = same and (result.create_index, result.mod_index, result.prev_mod_index) == (
            first.create_index,
            first.mod_index,
            first.prev_mod_index,
        )
        # The index the node reports for the write (its ETag) is the first
        # application's: a delete's too (it used to be 0, the after-state).
        if first.status == CommandStatus.OK:
            same = same and result.mod_index == first.index
    if not same:
        raise InvariantViolation(
            f"{req.client.name} request {req.seq} ({req.kind}): the duplicate answer at "
            f"{result.index} ({result}) differs from the first application ({first})"
        )


def _check_bank_read(result: KVResult) -> None:
    """A committed read of every balance sees no account (before the bank opens) or
    all of them, adding up to the total."""
    balances = _balances(result)
    _check_bank_read_kvs([(k, v) for k, (v, _) in balances.items()], result.index)


def _check_bank_read_kvs(kvs: Sequence[tuple[bytes, bytes] | KeyValue], index: int) -> None:
    pairs = [(kv.key, kv.value) if isinstance(kv, KeyValue) else kv for kv in kvs]
    if not pairs:
        return
    total = sum(_amount(v) for _, v in pairs)
    if sorted(k for k, _ in pairs) != sorted(ACCOUNTS) or total != BANK_TOTAL:
        raise InvariantViolation(
            f"bank read at {index} sees {sorted(k for k, _ in pairs)} totalling {total}, "
            f"not {BANK_TOTAL} in {len(ACCOUNTS)} accounts"
        )
