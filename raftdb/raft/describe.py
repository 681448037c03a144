"""Human-readable, deterministic text for the core's values: entries, messages, Readys.

The scenario tests (``tests/scenarios``) print every Ready, message and entry
through these functions, so their golden files read as traces; operators may
use them in logs too. Everything here is a pure function of its arguments: no
I/O, no clock, no global state.

Formats (an entry is always ``term/index``)::

    2/5 normal "put x"
    1/1 conf add-voter 1
    1->2 APP term=2 log=1/4 commit=4 entries=[2/5 normal "put x"]
    2->1 APP_RESP term=2 index=3 rejected hint=1/3
    1->2 HEARTBEAT term=2 commit=4 round=1
"""

from __future__ import annotations

from collections.abc import Iterable

from raftdb.raft.messages import (
    LOCAL_MESSAGES,
    ConfChange,
    ConfState,
    Entry,
    EntryType,
    HardState,
    Message,
    MessageType,
    Snapshot,
)
from raftdb.raft.rawnode import PeerProgress, Ready, SoftState, Status
from raftdb.raft.read_only import ReadState, decode_round

__all__ = [
    "describe_conf_change",
    "describe_conf_state",
    "describe_data",
    "describe_entries",
    "describe_entry",
    "describe_hard_state",
    "describe_message",
    "describe_peer_progress",
    "describe_read_state",
    "describe_ready",
    "describe_snapshot",
    "describe_soft_state",
    "describe_status",
]

MT = MessageType

_PRINTABLE = frozenset(range(0x20, 0x7F))


def describe_data(data: bytes) -> str:
    """Quote ``data``: printable ASCII as ``"text"``, anything else as ``0x<hex>``."""
    if all(b in _PRINTABLE for b in data):
        text = data.decode("ascii").replace("\\", "\\\\").replace('"', '\\"')
        return f'"{text}"'
    return "0x" + data.hex()


def _ids(ids: Iterable[int]) -> str:
    return "(" + ",".join(str(i) for i in ids) + ")"


def describe_conf_state(cs: ConfState) -> str:
    """``voters=(1,2,3)``, followed by ``learners=(4)`` when there are learners."""
    out = f"voters={_ids(cs.voters)}"
    if cs.learners:
        out += f" learners={_ids(cs.learners)}"
    return out


def describe_conf_change(cc: ConfChange) -> str:
    """``add-voter 4``, ``add-learner 4`` or ``remove-node 4`` (plus a quoted context)."""
    out = f"{cc.type.name.lower().replace('_', '-')} {cc.node_id}"
    if cc.context:
        out += f" ctx={describe_data(cc.context)}"
    return out


def describe_entry(e: Entry) -> str:
    """``term/index`` then the type and the data (a conf change is decoded)."""
    if e.type == EntryType.CONF_CHANGE:
        try:
            body = describe_conf_change(ConfChange.decode(e.data))
        except ValueError:
            body = f"<undecodable {describe_data(e.data)}>"
        return f"{e.term}/{e.index} conf {body}"
    return f"{e.term}/{e.index} normal {describe_data(e.data)}"


def describe_entries(entries: Iterable[Entry]) -> str:
    """``[e1, e2, ...]`` with :func:`describe_entry`."""
    return "[" + ", ".join(describe_entry(e) for e in entries) + "]"


def describe_hard_state(hs: HardState) -> str:
    """``term=2 vote=1 commit=5``."""
    return f"term={hs.term} vote={hs.vote} commit={hs.commit}"


def describe_soft_state(ss: SoftState) -> str:
    """``role=leader lead=1``."""
    return f"role={ss.role.value} lead={ss.lead}"


def describe_snapshot(s: Snapshot) -> str:
    """``index=5 term=2 voters=(1,2,3)``; the data is opaque and shown by size only."""
    meta = s.metadata
    out = f"index={meta.index} term={meta.term} {describe_conf_state(meta.conf_state)}"
    if s.data:
        out += f" data={len(s.data)}B"
    return out


def describe_read_state(rs: ReadState) -> str:
    """``index=5 ctx="a"``."""
    return f"index={rs.index} ctx={describe_data(rs.context)}"


def _describe_context(m: Message) -> str:
    if m.type in (MT.HEARTBEAT, MT.HEARTBEAT_RESP):
        round_no = decode_round(m.context)
        if round_no:
            return f"round={round_no}"
    return f"ctx={describe_data(m.context)}"


def describe_message(m: Message) -> str:
    """One line: ``from->to TYPE`` and the fields that type uses (see the module doc)."""
    t = m.type
    parts = [f"{m.frm}->{m.to} {t.name}"]
    if m.term or t not in LOCAL_MESSAGES | {MT.PROP, MT.READ_INDEX, MT.TRANSFER_LEADER}:
        parts.append(f"term={m.term}")
    if t in (MT.APP, MT.VOTE, MT.PRE_VOTE):
        parts.append(f"log={m.log_term}/{m.index}")
    elif t in (MT.APP_RESP, MT.READ_INDEX_RESP) or m.index:
        parts.append(f"index={m.index}")
    if t in (MT.APP, MT.HEARTBEAT) or m.commit:
        parts.append(f"commit={m.commit}")
    if m.reject:
        parts.append("rejected")
        if t == MT.APP_RESP:
            parts.append(f"hint={m.log_term}/{m.reject_hint}")
    if m.entries:
        parts.append(f"entries={describe_entries(m.entries)}")
    if m.snapshot is not None:
        parts.append(f"snapshot=[{describe_snapshot(m.snapshot)}]")
    if m.context:
        parts.append(_describe_context(m))
    return " ".join(parts)


def describe_ready(rd: Ready) -> str:
    """A multi-line description of a Ready, one section per non-empty field.

    The first line is ``Ready:`` or ``Ready (must sync):``; sections follow in
    the order a driver handles them, each indented by two spaces.
    """
    lines = ["Ready (must sync):" if rd.must_sync else "Ready:"]
    if rd.soft_state is not None:
        lines.append(f"  soft state: {describe_soft_state(rd.soft_state)}")
    if rd.hard_state is not None:
        lines.append(f"  hard state: {describe_hard_state(rd.hard_state)}")
    if rd.snapshot is not None:
        lines.append(f"  snapshot: {describe_snapshot(rd.snapshot)}")
    sections: list[tuple[str, list[str]]] = [
        ("entries", [describe_entry(e) for e in rd.entries]),
        ("messages", [describe_message(m) for m in rd.messages]),
        ("messages after save", [describe_message(m) for m in rd.messages_after_save]),
        ("committed entries", [describe_entry(e) for e in rd.committed_entries]),
        ("read states", [describe_read_state(r) for r in rd.read_states]),
    ]
    for title, items in sections:
        if items:
            lines.append(f"  {title}:")
            lines.extend(f"    {item}" for item in items)
    return "\n".join(lines)


def describe_peer_progress(node_id: int, pr: PeerProgress) -> str:
    """``2: replicate match=5 next=6`` plus ``learner`` and ``inactive`` flags."""
    out = f"{node_id}: {pr.state.value} match={pr.match} next={pr.next}"
    if pr.learner:
        out += " learner"
    if not pr.recent_active:
        out += " inactive"
    return out


def describe_status(st: Status) -> str:
    """The node's role, term, log positions and membership; a leader adds its progress."""
    kind = "learner" if st.is_learner else "voter"
    if st.id not in st.conf_state.ids():
        kind = "non-member"
    lines = [
        f"{st.id}: {st.role.value} ({kind}) term={st.term} vote={st.vote} lead={st.lead}",
        f"  log: first={st.first_index} last={st.last_index} "
        f"commit={st.commit} applied={st.applied}",
        f"  conf: {describe_conf_state(st.conf_state)}",
    ]
    if st.lead_transferee:
        lines.append(f"  transferring leadership to {st.lead_transferee}")
    if st.progress:
        lines.append("  progress:")
        lines.extend(
            f"    {describe_peer_progress(i, pr)}" for i, pr in sorted(st.progress.items())
        )
    return "\n".join(lines)
