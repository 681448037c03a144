"""A linearizability checker for recorded client histories.

Theory of operation
-------------------
A history is a list of :class:`Operation` records: who called what, what came
back, and when the call started and ended on one clock (monotonic seconds or a
simulation's logical step; only their order matters). The history is
*linearizable* for a sequential :class:`Model` if every operation can be given
one instant between its call and its return such that executing the operations
one by one in that order, from the model's initial state, gives every recorded
output (Herlihy & Wing, 1990).

The search is the Wing & Gong algorithm with Lowe's memoization ("Testing for
linearizability", Concurrency and Computation, 2017), the algorithm Porcupine and
Knossos also use, written here from the papers:

* Completed operations become call and return entries in a doubly linked list
  sorted by time. The operations whose call entry comes before the first return
  entry are exactly the ones that may go next: an operation whose return is the
  first one left cannot be preceded by anything called after it returned.
* Depth-first search: take a candidate, run it on the model; if the model agrees
  with the recorded output, *lift* both its entries out of the list, push an undo
  record, and start again from the head. If no candidate works, pop the undo
  record and try the next candidate after the one just undone. Lifting and
  undoing are O(1) "dancing links" splices, and the undo stack replaces
  recursion, so histories of any length run without hitting Python's recursion
  limit.
* Two configurations with the same set of linearized operations and the same
  model state have the same future, so the pair (bitset, state) is memoized and
  a configuration already explored is never explored again. Bitsets are Python
  ints; states must be hashable to serve as memo keys.

Unknown outcomes
----------------
A client that timed out, or crashed, does not know whether its operation took
effect, and it may yet take effect later. Following Jepsen (``:info``) and
Porcupine, such an operation has ``return_time = math.inf`` and output
:data:`UNKNOWN`. It has no return entry, so it never *has* to be linearized: it
may be placed anywhere after its call, or left out altogether. The search
succeeds once every *completed* operation is linearized. When it is placed, the
model's ``step`` receives :data:`UNKNOWN` as the output and must accept it and
return the state the input would produce.

Three refinements keep unknown operations from swamping the search; none
changes the answer, which stays exhaustive:

* They are kept apart and tried only after the completed candidates, so the
  search first tries the plain explanation that they did not take effect
  (chaos tests record many timed-out writes that never took effect).
* The memo is keyed by (completed operations placed, state) and keeps the sets
  of unknown operations placed with them. A configuration is skipped if an
  explored one differs only by placing a *subset* of its unknown operations:
  that one can do anything this one can, by never placing the extras, which
  are optional and constrain nobody's real-time order. (An exact memo would
  explore every subset of never-applied writes separately.)
* As a special case, an unknown operation that would leave the state as it is
  is not placed.

Cost
----
Deciding linearizability is NP-complete. The work grows with how many
operations on one key overlap in time, and with how many unknown-outcome
operations on that key are pending at once (each may still take effect at any
later point, so it stays a candidate until the end). A few thousand operations
per key from a handful of clients, with a few percent unknown, check in well
under a second. Tests that produce many timeouts should keep per-key histories
short (rotate to a fresh key every few hundred operations, as Jepsen's
independent-key tests do) and write unique values, which lets reads pin down
the order.

P-compositionality
------------------
Linearizability is local (Herlihy & Wing): a history is linearizable iff its
restriction to each object is. :meth:`Model.partition` splits a history into
independent sub-histories (per key, for a key-value store), each checked on its
own. This turns one search exponential in the number of concurrent operations
into many small ones, and is what makes histories of thousands of operations
tractable.

Transactions
------------
:class:`KVTxnModel` adds multi-key :class:`Transaction` s (compare on values,
then one of two branches of puts, gets and deletes, atomically). A transaction
makes the keys it touches one object, so its partitions are the groups of keys
that transactions join, and the search cost grows with the concurrency inside
a group: tests should keep transactional key sets small (a handful of bank
accounts) and apart from the many single keys.

Budget
------
So that a pathological history cannot hang a test,
:func:`check_linearizability` takes a wall-clock ``timeout`` and a
``max_steps`` budget (model steps over all partitions) and answers
:attr:`CheckStatus.UNKNOWN` when either runs out.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_right
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Final, Generic, Protocol, TypeAlias, TypeVar

__all__ = [
    "UNKNOWN",
    "CheckResult",
    "CheckStatus",
    "CompareAndDelete",
    "CompareAndSet",
    "Delete",
    "Get",
    "HistoryRecorder",
    "IfValue",
    "KVInput",
    "KVModel",
    "KVOperation",
    "KVOutput",
    "KVState",
    "KVTxnInput",
    "KVTxnModel",
    "KVTxnOperation",
    "KVTxnOutput",
    "KVTxnState",
    "Model",
    "Operation",
    "PartitionResult",
    "Put",
    "PutIfAbsent",
    "Transaction",
    "TxnOutput",
    "TxnStep",
    "Unknown",
    "check_linearizability",
    "single_partition",
]

In_co = TypeVar("In_co", covariant=True)
Out_co = TypeVar("Out_co", covariant=True)
S = TypeVar("S", bound=Hashable)
In = TypeVar("In")
Out = TypeVar("Out")


class Unknown(Enum):
    """The type of :data:`UNKNOWN`, the output of an operation whose outcome is unknown."""

    UNKNOWN = "unknown"

    def __repr__(self) -> str:
        return "UNKNOWN"


#: The output of an operation that timed out or whose client crashed.
UNKNOWN: Final = Unknown.UNKNOWN


@dataclass(frozen=True, slots=True)
class Operation(Generic[In_co, Out_co]):
    """One client operation as the client saw it.

    Record an operation that *definitely* failed (the server refused it, or it
    never left the client) not at all: it had no effect and returned nothing,
    so it has no place in the history. Record an operation whose outcome is
    unknown with ``return_time=math.inf`` and ``output=UNKNOWN`` (see
    :meth:`unknown`): it may have taken effect at any time after its call, or
    never.

    Attributes:
        client_id: who issued it; only used to describe the history.
        input: the operation and its arguments, as the model understands them.
        output: what the client received, or :data:`UNKNOWN`.
        call_time: when the call was issued.
        return_time: when the response arrived; ``math.inf`` if it never did.

    Two operations are ordered in real time only if one's ``return_time`` is
    strictly less than the other's ``call_time``; equal times count as
    overlapping, so a coarse logical clock never manufactures a violation.

    Raises:
        ValueError: on a NaN or infinite call time, a return before the call,
            or an output that disagrees with the return time about being known.
    """

    client_id: Hashable
    input: In_co
    output: Out_co | Unknown
    call_time: float
    return_time: float

    def __post_init__(self) -> None:
        if not math.isfinite(self.call_time):
            raise ValueError(f"call_time must be finite: {self!r}")
        if math.isnan(self.return_time) or self.return_time < self.call_time:
            raise ValueError(f"return_time must be >= call_time: {self!r}")
        if (self.return_time == math.inf) != (self.output is UNKNOWN):
            raise ValueError(f"return_time=inf if and only if output is UNKNOWN: {self!r}")

    @staticmethod
    def unknown(client_id: Hashable, input: In, call_time: float) -> Operation[In, Out]:
        """An operation whose outcome is unknown: it timed out, or its client crashed."""
        return Operation(client_id, input, UNKNOWN, call_time, math.inf)

    @property
    def is_unknown(self) -> bool:
        """Whether the outcome is unknown (the op may or may not have taken effect)."""
        return self.output is UNKNOWN

    def __str__(self) -> str:
        out = "?" if self.output is UNKNOWN else repr(self.output)
        ret = "inf" if self.return_time == math.inf else f"{self.return_time:g}"
        return f"[{self.call_time:g}, {ret}] client {self.client_id}: {self.input!r} -> {out}"


class Model(Protocol[S, In, Out]):
    """A sequential specification the history is checked against.

    Implementations are stateless objects; the state is a separate, hashable
    value so the checker can memoize configurations and undo steps for free.
    """

    def init(self) -> S:
        """The state before any operation.

        Returns:
            A hashable state value.
        """
        ...

    def step(self, state: S, input: In, output: Out | Unknown) -> tuple[bool, S]:
        """Apply one operation to ``state``, as the sequential object would.

        Must be a deterministic, pure function of its arguments: the checker
        calls it many times on the same state, in any order, and never copies
        states. (A nondeterministic object must fold its choices into the
        state or the output.)

        Args:
            state: the current state; never mutated.
            input: the operation.
            output: what the client recorded, or :data:`UNKNOWN` when the
                outcome is unknown; then any output the input could produce
                is acceptable.

        Returns:
            ``(ok, new_state)``: ``ok`` is whether ``output`` is a possible
            result of ``input`` in ``state`` (always true for :data:`UNKNOWN`
            unless ``input`` could never run); ``new_state`` is the state
            after it, and is ignored when ``ok`` is false.
        """
        ...

    def partition(
        self, history: Sequence[Operation[In, Out]]
    ) -> Mapping[Hashable, Sequence[Operation[In, Out]]]:
        """Split ``history`` into sub-histories that can be checked independently.

        Sound only when no operation's output depends on state outside its
        part (one key of a key-value store). Return ``single_partition(history)``
        when nothing can be split. A model may also drop operations that can
        never matter (an unknown-outcome read).

        Args:
            history: the whole history, in any order.

        Returns:
            A mapping from a label (the key), used in the result to name a
            failing part, to that part's operations.
        """
        ...


def single_partition(
    history: Sequence[Operation[In, Out]],
) -> dict[Hashable, Sequence[Operation[In, Out]]]:
    """The trivial partition, for models whose operations all touch one object."""
    return {None: history}


# -- The key-value model --------------------------------------------------------------

Key: TypeAlias = str | bytes
Value: TypeAlias = str | bytes | int


@dataclass(frozen=True, slots=True)
class Put:
    """Set ``key`` to ``value``. Output: anything (ignored); an acknowledgement."""

    key: Key
    value: Value


@dataclass(frozen=True, slots=True)
class Get:
    """Read ``key``. Output: its value, or ``None`` if it is absent."""

    key: Key


@dataclass(frozen=True, slots=True)
class Delete:
    """Remove ``key``. Output: whether it existed, or ``None`` if the API does not say."""

    key: Key


@dataclass(frozen=True, slots=True)
class CompareAndSet:
    """Set ``key`` to ``new`` if it exists and holds ``expected``. Output: whether it did.

    This compares values. A store whose CAS compares a per-key modify index
    (etcd's ``prevIndex``) checks against this model when the test writes a
    unique value with every write: a value then names exactly one version,
    and "expected index i" translates to "expected the value written at i".
    Unique values also rule out ABA ambiguities, which makes violations
    easier to see.
    """

    key: Key
    expected: Value
    new: Value


@dataclass(frozen=True, slots=True)
class CompareAndDelete:
    """Remove ``key`` if it exists and holds ``expected``. Output: whether it did.

    The conditional delete (raftdb's ``delete(if_mod=...)``), by value as
    :class:`CompareAndSet` is.
    """

    key: Key
    expected: Value


@dataclass(frozen=True, slots=True)
class PutIfAbsent:
    """Create-only put: set ``key`` to ``value`` if absent. Output: whether it did."""

    key: Key
    value: Value


KVInput: TypeAlias = Put | Get | Delete | CompareAndSet | CompareAndDelete | PutIfAbsent
KVOutput: TypeAlias = Value | bool | None
#: The state of one key (the model is only ever run on one key's sub-history).
KVState: TypeAlias = Value | None
KVOperation: TypeAlias = Operation[KVInput, KVOutput]


def _same(a: object, b: object) -> bool:
    # The type check stops a recorded True from matching a stored 1 (1 == True).
    return type(a) is type(b) and a == b


class KVModel:
    """raftdb's key-value operations as a :class:`Model`, partitioned by key.

    The state is the value of a single key (``None`` when absent), which keeps
    states tiny and hashing cheap; :meth:`partition` is what makes that sound,
    so the model must only be run through :func:`check_linearizability` (or
    on one key's operations).
    """

    def init(self) -> KVState:
        """Every key starts absent."""
        return None

    def step(
        self, state: KVState, input: KVInput, output: KVOutput | Unknown
    ) -> tuple[bool, KVState]:
        """Apply ``input`` to one key's value; see :meth:`Model.step`."""
        unknown = output is UNKNOWN
        if isinstance(input, Get):
            return unknown or _same(output, state), state
        if isinstance(input, Put):
            return True, input.value
        if isinstance(input, Delete):
            existed = state is not None
            return unknown or output is None or output is existed, None
        if isinstance(input, CompareAndSet):
            swapped = state is not None and _same(state, input.expected)
            after = input.new if swapped else state
            return unknown or output is swapped, after
        if isinstance(input, CompareAndDelete):
            deleted = state is not None and _same(state, input.expected)
            return unknown or output is deleted, None if deleted else state
        if isinstance(input, PutIfAbsent):
            created = state is None
            after = input.value if created else state
            return unknown or output is created, after
        raise TypeError(f"not a key-value operation: {input!r}")

    def partition(self, history: Sequence[KVOperation]) -> Mapping[Hashable, Sequence[KVOperation]]:
        """One sub-history per key, in first-seen order.

        Unknown-outcome reads are dropped: leaving them out is always a valid
        choice and including them never changes the state, so they only cost
        search time.
        """
        parts: dict[Hashable, list[KVOperation]] = {}
        for op in history:
            if op.output is UNKNOWN and isinstance(op.input, Get):
                continue
            parts.setdefault(op.input.key, []).append(op)
        return parts


# -- Multi-key transactions -------------------------------------------------------------

#: The operations a :class:`Transaction` branch may hold.
TxnStep: TypeAlias = Put | Get | Delete


@dataclass(frozen=True, slots=True)
class IfValue:
    """A transaction's condition: ``key`` holds ``value`` (``None``: the key is absent).

    raftdb compares on ``mod_index``, ``create_index`` and existence; with a
    unique value in every write (as for :class:`CompareAndSet`) those become
    value conditions: "``mod_index == i``" is "holds the value written at
    ``i``", and "does not exist" (or ``create_index == 0``) is ``value=None``.
    """

    key: Key
    value: Value | None


@dataclass(frozen=True, slots=True)
class Transaction:
    """An atomic multi-key operation, as etcd's and raftdb's ``txn``.

    If every condition in ``compare`` holds in the state before it, the
    ``success`` operations run, else the ``failure`` ones, in order, each
    seeing the earlier ones' writes. Output: a :class:`TxnOutput`.
    """

    compare: tuple[IfValue, ...] = ()
    success: tuple[TxnStep, ...] = ()
    failure: tuple[TxnStep, ...] = ()

    @property
    def keys(self) -> tuple[Key, ...]:
        """Every key it compares or touches, first-seen order, once each."""
        seen: dict[Key, None] = {}
        for c in self.compare:
            seen[c.key] = None
        for o in (*self.success, *self.failure):
            seen[o.key] = None
        return tuple(seen)

    @property
    def writes(self) -> bool:
        """Whether either branch can change the state."""
        return any(not isinstance(o, Get) for o in (*self.success, *self.failure))


@dataclass(frozen=True, slots=True)
class TxnOutput:
    """What a :class:`Transaction` returned.

    Attributes:
        succeeded: the compares held (``success`` ran) or not (``failure``).
        results: one per operation of the branch that ran, as the
            single-key operations return them (a get: the value or ``None``;
            a delete: whether the key existed, or ``None`` if not said; a
            put: ignored), or ``None`` when the client did not learn them
            (raftdb's answer to a retried transaction gives the branch only).
    """

    succeeded: bool
    results: tuple[KVOutput, ...] | None = None


KVTxnInput: TypeAlias = KVInput | Transaction
KVTxnOutput: TypeAlias = KVOutput | TxnOutput
#: The state of one partition: its present keys and their values, in key order.
KVTxnState: TypeAlias = tuple[tuple[Key, Value], ...]
KVTxnOperation: TypeAlias = Operation[KVTxnInput, KVTxnOutput]

_KV: Final = KVModel()


def _key_order(item: tuple[Key, Value]) -> tuple[bool, Key]:
    # str and bytes keys never compare with each other: bytes sort after str.
    return (type(item[0]) is bytes, item[0])


def _state_of(values: dict[Key, Value]) -> KVTxnState:
    return tuple(sorted(values.items(), key=_key_order))


class KVTxnModel:
    """:class:`KVModel` with multi-key :class:`Transaction` s.

    Partitioning stays what makes long histories tractable: keys that some
    transaction uses together form one partition (the connected components
    of "used by the same transaction"), every other key its own. The state is
    the partition's present keys with their values, so a partition of one key
    costs little more than under :class:`KVModel`. Run it only through
    :func:`check_linearizability` (or on one partition's operations), as
    :class:`KVModel`.
    """

    def init(self) -> KVTxnState:
        """Every key starts absent."""
        return ()

    def step(
        self, state: KVTxnState, input: KVTxnInput, output: KVTxnOutput | Unknown
    ) -> tuple[bool, KVTxnState]:
        """Apply ``input`` to the partition's keys; see :meth:`Model.step`."""
        values = dict(state)
        if not isinstance(input, Transaction):
            if isinstance(output, TxnOutput):
                return False, state
            key = input.key
            before = values.get(key)
            ok, after = _KV.step(before, input, output)
            if not ok:
                return False, state
            if after is before:
                return True, state
            if after is None:
                del values[key]
            else:
                values[key] = after
            return True, _state_of(values)
        unknown = output is UNKNOWN
        if not unknown and not isinstance(output, TxnOutput):
            return False, state
        succeeded = all(_same(values.get(c.key), c.value) for c in input.compare)
        results: tuple[KVOutput, ...] | None = None
        if isinstance(output, TxnOutput):
            if output.succeeded is not succeeded:
                return False, state
            results = output.results
        branch = input.success if succeeded else input.failure
        if results is not None and len(results) != len(branch):
            return False, state
        changed = False
        for n, o in enumerate(branch):
            before = values.get(o.key)
            ok, after = _KV.step(before, o, UNKNOWN if results is None else results[n])
            if not ok:
                return False, state
            if after is not before:
                changed = True
                if after is None:
                    values.pop(o.key, None)
                else:
                    values[o.key] = after
        return True, _state_of(values) if changed else state

    def partition(
        self, history: Sequence[KVTxnOperation]
    ) -> Mapping[Hashable, Sequence[KVTxnOperation]]:
        """One sub-history per group of keys that transactions join, first-seen order.

        A group of one key is labelled by the key, a larger one by the tuple
        of its keys in first-seen order, transactions on no key by ``()``.
        Unknown-outcome reads (a get, or a
        transaction that writes nothing) are dropped, as :class:`KVModel`
        drops unknown gets.
        """
        parent: dict[Key, Key] = {}

        def find(k: Key) -> Key:
            root = k
            while parent[root] != root:
                root = parent[root]
            while parent[k] != root:
                parent[k], k = root, parent[k]
            return root

        kept: list[tuple[KVTxnOperation, Key]] = []
        keyless: list[KVTxnOperation] = []
        for op in history:
            inp = op.input
            keys = inp.keys if isinstance(inp, Transaction) else (inp.key,)
            if op.output is UNKNOWN and (
                isinstance(inp, Get) or (isinstance(inp, Transaction) and not inp.writes)
            ):
                continue
            if not keys:
                keyless.append(op)  # an empty transaction: only its output to check
                continue
            for k in keys:
                parent.setdefault(k, k)
            first = find(keys[0])
            for k in keys[1:]:
                root = find(k)
                if root != first:
                    parent[root] = first
            kept.append((op, keys[0]))
        members: dict[Key, list[Key]] = {}
        for k in parent:  # insertion order: first-seen
            members.setdefault(find(k), []).append(k)
        label: dict[Key, Hashable] = {
            root: ks[0] if len(ks) == 1 else tuple(ks) for root, ks in members.items()
        }
        parts: dict[Hashable, list[KVTxnOperation]] = {}
        for root, _ in members.items():
            parts[label[root]] = []
        for op, k in kept:
            parts[label[find(k)]].append(op)
        if keyless:
            parts[()] = keyless
        return parts


# -- Results ---------------------------------------------------------------------------


class CheckStatus(Enum):
    """The verdict on a history or one partition of it."""

    OK = "ok"
    ILLEGAL = "illegal"  # not linearizable
    UNKNOWN = "unknown"  # the step or time budget ran out first


@dataclass(frozen=True, slots=True)
class PartitionResult(Generic[In_co, Out_co]):
    """The verdict on one partition (one key).

    Attributes:
        key: the partition's label from :meth:`Model.partition`.
        status: the verdict.
        linearization: for OK, a witness order: every completed operation,
            plus the unknown-outcome ones that had to (or happened to) take
            effect; for ILLEGAL and UNKNOWN, the longest prefix of a
            linearization the search reached: the violation is usually
            among the operations just after it.
        operations: the partition's operations, as checked.
        steps: model steps spent on it.
    """

    key: Hashable
    status: CheckStatus
    linearization: tuple[Operation[In_co, Out_co], ...]
    operations: tuple[Operation[In_co, Out_co], ...]
    steps: int


@dataclass(frozen=True, slots=True)
class CheckResult(Generic[In_co, Out_co]):
    """The verdict on a whole history.

    ILLEGAL if any partition is; else UNKNOWN if the budget ran out on any;
    else OK. Partitions are checked smallest first, and checking stops at the
    first illegal one, so ``partitions`` then holds only those checked so far.

    Attributes:
        status: the verdict.
        partitions: per-partition results, in the order they were checked.
        steps: model steps over all partitions.
        elapsed: seconds spent, by the clock given to the checker.
    """

    status: CheckStatus
    partitions: tuple[PartitionResult[In_co, Out_co], ...]
    steps: int
    elapsed: float

    @property
    def ok(self) -> bool:
        """Whether the history is linearizable."""
        return self.status is CheckStatus.OK

    @property
    def failure(self) -> PartitionResult[In_co, Out_co] | None:
        """The illegal partition, else the first that ran out of budget, else None."""
        for status in (CheckStatus.ILLEGAL, CheckStatus.UNKNOWN):
            for part in self.partitions:
                if part.status is status:
                    return part
        return None

    def describe(self, limit: int = 20) -> str:
        """A human-readable report, for assertion messages.

        Names the failing key and shows the end of the longest partial
        linearization and the completed operations it could not place next.

        Args:
            limit: at most this many operations per list.
        """
        lines = [f"{self.status.value}: {len(self.partitions)} partition(s), {self.steps} steps"]
        part = self.failure
        if part is None:
            return lines[0]
        lines.append(f"key {part.key!r}: {part.status.value} after {part.steps} steps")
        lin = part.linearization
        lines.append(f"longest partial linearization ({len(lin)} of {len(part.operations)} ops):")
        if len(lin) > limit:
            lines.append(f"  ... {len(lin) - limit} earlier")
        lines.extend(f"  {op}" for op in lin[-limit:])
        placed = {id(op) for op in lin}
        rest = [op for op in part.operations if id(op) not in placed and not op.is_unknown]
        rest.sort(key=lambda op: op.call_time)
        lines.append("completed operations not placed, by call time:")
        lines.extend(f"  {op}" for op in rest[:limit])
        if len(rest) > limit:
            lines.append(f"  ... {len(rest) - limit} more")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.describe()


# -- The search ------------------------------------------------------------------------


class _Budget:
    """The steps and time left, shared by all partitions of one check."""

    def __init__(
        self, max_steps: int | None, timeout: float | None, clock: Callable[[], float]
    ) -> None:
        self.steps_left = math.inf if max_steps is None else max_steps
        self.clock = clock
        self.deadline = math.inf if timeout is None else clock() + timeout


#: How many model steps pass between two reads of the clock.
_CLOCK_EVERY = 1024


def _search(
    model: Model[S, In, Out], ops: Sequence[Operation[In, Out]], budget: _Budget
) -> tuple[CheckStatus, list[int], int]:
    """Search one partition. Returns (status, op indexes of the linearization, steps)."""
    inputs = [op.input for op in ops]
    outputs = [op.output for op in ops]

    # Main list: call/return entries of completed ops; entry 0 is the head
    # sentinel, -1 ends the list. Calls sort before returns at equal times, so
    # touching intervals overlap (see Operation).
    completed = [i for i, op in enumerate(ops) if not op.is_unknown]
    events = sorted(
        (t, kind, i)
        for i in completed
        for t, kind in ((ops[i].call_time, 0), (ops[i].return_time, 1))
    )
    size = len(events) + 1
    nxt = list(range(1, size + 1))
    nxt[-1] = -1
    prv = list(range(-1, size - 1))
    ent_op = [-1] + [i for _, _, i in events]
    ent_call = [False] + [kind == 0 for _, kind, _ in events]
    ent_time = [-math.inf] + [t for t, _, _ in events]
    ret_of = [0] * size  # call entry -> its return entry
    call_entry: dict[int, int] = {}
    for e in range(1, size):
        if ent_call[e]:
            call_entry[ent_op[e]] = e
        else:
            ret_of[call_entry[ent_op[e]]] = e
    cmask = [0] * len(ops)  # bit of each completed op in ``cbits``
    for rank, i in enumerate(completed):
        cmask[i] = 1 << rank

    # Unknown-outcome ops by call time; bit j of ``ubits`` is u_op[j].
    unknown = sorted((op.call_time, i) for i, op in enumerate(ops) if op.is_unknown)
    u_op = [i for _, i in unknown]
    u_time = [t for t, _ in unknown]
    u_placed = [False] * len(unknown)

    step = model.step
    state = model.init()
    cbits = ubits = 0
    # Memo: (completed ops placed, state) -> the sets of unknown ops placed
    # with them that were explored. A configuration is skipped if an explored
    # one has the same completed set and state and a subset of its unknown
    # ops: that one can do anything this one can, by never placing the extra
    # unknown ops (they are optional and constrain no one's real-time order).
    seen: dict[tuple[int, S], list[int]] = {}
    # Undo records: (entry, first return entry when an unknown op was placed
    # or 0 for a completed op, state before, cbits before, ubits before).
    stack: list[tuple[int, int, S, int, int]] = []
    best: list[int] = []
    remaining = len(completed)
    steps = 0
    steps_left = budget.steps_left
    next_clock = 0  # read the clock before the first step

    def order() -> list[int]:
        return [u_op[x] if r else ent_op[x] for x, r, _, _, _ in stack]

    in_unknown = False  # scanning the unknown ops rather than the main list
    e = nxt[0]
    first_ret = 0
    u = u_end = 0
    while True:
        if remaining == 0:
            budget.steps_left = steps_left - steps
            return CheckStatus.OK, order(), steps
        if steps >= steps_left or (steps >= next_clock and budget.clock() >= budget.deadline):
            budget.steps_left = steps_left - steps
            lin = order()
            return CheckStatus.UNKNOWN, lin if len(lin) > len(best) else best, steps
        if steps >= next_clock:
            next_clock = steps + _CLOCK_EVERY

        if not in_unknown:
            if ent_call[e]:
                i = ent_op[e]
                steps += 1
                ok, new_state = step(state, inputs[i], outputs[i])
                if ok:
                    new_cbits = cbits | cmask[i]
                    key = (new_cbits, new_state)
                    prior = seen.get(key)
                    if prior is None:
                        seen[key] = [ubits]
                    if prior is None or (u_op and _admit(prior, ubits)):
                        stack.append((e, 0, state, cbits, ubits))
                        state, cbits = new_state, new_cbits
                        # Lift the call entry and its return entry.
                        for x in (e, ret_of[e]):
                            p, n = prv[x], nxt[x]
                            nxt[p] = n
                            if n != -1:
                                prv[n] = p
                        remaining -= 1
                        e = nxt[0]
                        continue
                e = nxt[e]
                continue
            # e is the first return entry: completed candidates are exhausted;
            # try the unknown ops called before it.
            first_ret = e
            in_unknown = True
            u = 0
            u_end = bisect_right(u_time, ent_time[e])
            continue

        while u < u_end and u_placed[u]:
            u += 1
        if u < u_end:
            i = u_op[u]
            steps += 1
            ok, new_state = step(state, inputs[i], UNKNOWN)
            # An op that leaves the state as it is would only reach a
            # configuration the current one dominates; skip the memo lookup.
            if ok and new_state != state:
                new_ubits = ubits | (1 << u)
                key = (cbits, new_state)
                prior = seen.get(key)
                if prior is None:
                    seen[key] = [new_ubits]
                if prior is None or _admit(prior, new_ubits):
                    stack.append((u, first_ret, state, cbits, ubits))
                    state, ubits = new_state, new_ubits
                    u_placed[u] = True
                    in_unknown = False
                    e = nxt[0]
                    continue
            u += 1
            continue

        # No candidate works here: undo the last placement and try the next one.
        if not stack:
            budget.steps_left = steps_left - steps
            return CheckStatus.ILLEGAL, best, steps
        if len(stack) > len(best):
            best = order()
        x, first_ret, state, cbits, ubits = stack.pop()
        if first_ret == 0:
            # Reinsert in the reverse order of removal (dancing links).
            for y in (ret_of[x], x):
                p, n = prv[y], nxt[y]
                nxt[p] = y
                if n != -1:
                    prv[n] = y
            remaining += 1
            in_unknown = False
            e = nxt[x]
        else:
            u_placed[x] = False
            in_unknown = True
            u = x + 1
            u_end = bisect_right(u_time, ent_time[first_ret])


def _admit(prior: list[int], ubits: int) -> bool:
    """Record a configuration's unknown-op set ``ubits`` unless one in ``prior`` dominates it.

    ``prior`` holds the unknown-op sets explored with one (completed set,
    state). A subset of ``ubits`` dominates it (see the memo in _search). If
    ``ubits`` is admitted, the sets it dominates in turn are dropped, to keep
    the list short.

    Returns:
        Whether the configuration is new and must be explored.
    """
    for p in prior:
        if not p & ~ubits:
            return False
    prior[:] = [p for p in prior if ubits & ~p]
    prior.append(ubits)
    return True


def check_linearizability(
    model: Model[S, In, Out],
    history: Iterable[Operation[In, Out]],
    *,
    timeout: float | None = 60.0,
    max_steps: int | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> CheckResult[In, Out]:
    """Check whether ``history`` is linearizable with respect to ``model``.

    Args:
        model: the sequential specification, e.g. :class:`KVModel`.
        history: the operations, in any order. Unknown-outcome operations
            (``return_time=math.inf``) may be placed anywhere after their
            call, or left out.
        timeout: seconds of ``clock`` time for the whole check, or None for
            no limit. A wall-clock limit makes the verdict machine-dependent;
            deterministic tests should prefer ``max_steps``.
        max_steps: model steps for the whole check, or None for no limit.
        clock: the time source for ``timeout`` and ``elapsed``.

    Returns:
        A :class:`CheckResult`; ``result.ok`` is the verdict, and
        ``result.describe()`` explains a failure.
    """
    start = clock()
    budget = _Budget(max_steps, timeout, clock)
    parts: list[PartitionResult[In, Out]] = []
    status = CheckStatus.OK
    total = 0
    # Smallest first: a budget spent on one huge partition should not keep a
    # small, cheap-to-refute one from being checked.
    partitions = sorted(model.partition(list(history)).items(), key=lambda kv: len(kv[1]))
    for key, sub in partitions:
        ops = tuple(sub)
        verdict, lin, steps = _search(model, ops, budget)
        total += steps
        parts.append(PartitionResult(key, verdict, tuple(ops[i] for i in lin), ops, steps))
        if verdict is CheckStatus.ILLEGAL:
            status = verdict
            break
        if verdict is CheckStatus.UNKNOWN:
            status = verdict
    return CheckResult(status, tuple(parts), total, clock() - start)


# -- Recording -------------------------------------------------------------------------


class HistoryRecorder(Generic[In, Out]):
    """Builds a history as a test harness issues and completes operations.

    Example::

        rec: HistoryRecorder[KVInput, KVOutput] = HistoryRecorder(lambda: sim.now)
        h = rec.invoke(client_id=1, input=Put("x", "1"))
        ...
        rec.complete(h, None)        # acknowledged
        rec.fail(h)                  # definitely not applied: dropped
        rec.history()                # anything still open becomes unknown

    Args:
        clock: the time source for call and return times (a monotonic clock,
            or a simulation's step counter).
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._open: dict[int, tuple[Hashable, In, float]] = {}
        self._done: dict[int, Operation[In, Out]] = {}
        self._next = 0

    def invoke(self, client_id: Hashable, input: In) -> int:
        """Record a call now. Returns a handle for :meth:`complete` and friends."""
        handle = self._next
        self._next += 1
        self._open[handle] = (client_id, input, self._clock())
        return handle

    def complete(self, handle: int, output: Out) -> None:
        """Record that the call returned ``output`` now."""
        client_id, input, call = self._open.pop(handle)
        self._done[handle] = Operation(client_id, input, output, call, self._clock())

    def fail(self, handle: int) -> None:
        """Record a definite failure: the operation had no effect, so it is dropped."""
        del self._open[handle]

    def unknown(self, handle: int) -> None:
        """Record that the outcome is unknown (timeout, lost connection, crash)."""
        client_id, input, call = self._open.pop(handle)
        self._done[handle] = Operation.unknown(client_id, input, call)

    def history(self) -> list[Operation[In, Out]]:
        """The history so far, in call order; calls still open count as unknown."""
        ops = dict(self._done)
        for handle, (client_id, input, call) in self._open.items():
            ops[handle] = Operation.unknown(client_id, input, call)
        return [ops[h] for h in sorted(ops)]
