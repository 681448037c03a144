"""The chaos checks themselves, on made-up histories: each must catch what it claims.

No cluster here (milliseconds): the watcher's resume logic against a mock
event stream, and the stream, history, bank and lease checks against
histories with one fault planted each — a gap, a duplicate, a reordering, a
broken total, a stale read, a lease key deleted too early.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import threading
from typing import Any

import httpx
import pytest

from tests.chaos.attempts import Attempt, Sent
from tests.chaos.bank import ACCOUNTS, BALANCE, Bank, TxnRecord, account, check_bank
from tests.chaos.leases import LeaseClients, LeaseRecord, check_leases
from tests.chaos.watch import (
    KeyState,
    Segment,
    SSEParser,
    Watcher,
    WatchEvent,
    check_streams,
    replay,
)


class History:
    """Builds a consistent history (create/mod/prev fields as the server sends them)."""

    def __init__(self) -> None:
        self.events: list[WatchEvent] = []
        self.state: dict[str, tuple[str, int, int]] = {}

    def put(self, index: int, key: str, value: str) -> WatchEvent:
        old = self.state.get(key)
        data: dict[str, Any] = {
            "key": key,
            "value": value,
            "value_b64": base64.b64encode(value.encode()).decode(),
            "create_index": old[1] if old else index,
            "mod_index": index,
        }
        if old:
            data |= {"prev_value": old[0], "prev_value_b64": _b64(old[0]), "prev_mod_index": old[2]}
        self.state[key] = (value, data["create_index"], index)
        return self._add(index, "put", data)

    def delete(self, index: int, key: str) -> WatchEvent:
        old = self.state.pop(key)
        data = {"key": key, "value_b64": "", "create_index": 0, "mod_index": index}
        data |= {"prev_value": old[0], "prev_value_b64": _b64(old[0]), "prev_mod_index": old[2]}
        return self._add(index, "delete", data)

    def _add(self, index: int, kind: str, data: dict[str, Any]) -> WatchEvent:
        ev = WatchEvent(index, kind, json.dumps(data, sort_keys=True))
        self.events.append(ev)
        return ev


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _sse(ev: WatchEvent) -> str:
    return f"id: {ev.index}\nevent: {ev.kind}\ndata: {ev.data}\n\n"


# -- server-sent events and the watcher ------------------------------------------------


def test_sse_parser_dispatches_on_blank_lines_and_skips_comments() -> None:
    parser = SSEParser()
    lines = [": keep-alive", "id: 4", "event: put", 'data: {"a":', "data: 1}", ""]
    out = [parser.feed(line) for line in lines]
    assert out[:-1] == [None] * 5
    assert out[-1] == ("put", "4", '{"a":\n1}')
    assert parser.feed("") is None  # a blank line alone dispatches nothing


def _watch_server(halt: threading.Event, seen: list[httpx.Request], h: History) -> Any:
    a, b, c, d, e = h.events
    first = _sse(a) + _sse(b) + _sse(c) + 'id: 8\nevent: progress\ndata: {"applied_index": 8}\n\n'
    first += _sse(d)  # the stream is cut after the first of index 9's two events
    second = (
        _sse(d) + _sse(e) + 'event: closed\ndata: {"error": "watcher_too_slow", "since": 9}\n\n'
    )

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if len(seen) == 1:
            return httpx.Response(200, content=first.encode())
        if len(seen) == 2:
            return httpx.Response(200, content=second.encode())
        halt.set()
        return httpx.Response(503, json={"error": "unavailable", "message": "no leader"})

    return handler


def _resume_point(request: httpx.Request) -> int:
    since = request.url.params.get("since")
    return int(since if since is not None else request.headers["last-event-id"])


def test_watcher_resumes_after_the_last_complete_index_and_records_segments() -> None:
    h = History()
    for index, key, value in [
        (5, "a", "x"),
        (7, "b", "y"),
        (7, "c", "z"),
        (9, "d", "u"),
        (9, "e", "v"),
    ]:
        h.put(index, key, value)
    halt, seen = threading.Event(), list[httpx.Request]()
    w = Watcher(
        "t",
        "",
        0,
        lambda: ["http://n1", "http://n2"],
        random.Random(3),
        halt,
        transport=httpx.MockTransport(_watch_server(halt, seen, h)),
    )
    asyncio.run(w.run())
    assert [_resume_point(r) for r in seen] == [0, 8, 9]  # after progress 8, then closed's 9
    first, second, third = w.segments
    assert (first.since, first.end, first.ended_by) == (0, 8, "eof")
    assert first.events == h.events[:3]
    assert first.partial == h.events[3:4]
    assert (second.since, second.end, second.ended_by) == (8, 9, "closed_watcher_too_slow")
    assert second.events == h.events[3:]
    assert not second.partial
    assert third.ended_by == "busy"
    assert not w.errors
    counts, problems = check_streams([w], h.events)
    assert problems == []
    assert counts["events"] == 6
    assert counts["segments"] == 3


# -- the stream check -----------------------------------------------------------------


def _history() -> History:
    h = History()
    h.put(3, "p/a", "1")
    h.put(4, "q/x", "1")
    h.put(5, "p/a", "2")
    h.put(5, "p/b", "1")  # one transaction: two events with id 5
    h.delete(6, "p/a")
    h.put(8, "p/c", "1")
    return h


def _watcher(prefix: str, *segments: Segment) -> Watcher:
    w = Watcher("t", prefix, 0, lambda: [], random.Random(0), threading.Event())
    w.segments = list(segments)
    return w


def test_streams_equal_to_the_history_of_their_prefix_pass() -> None:
    ref = _history().events
    p = [e for e in ref if e.key.startswith(b"p/")]
    w = _watcher(
        "p/", Segment(0, 0, "since", end=5, events=p[:3]), Segment(1, 5, "since", 8, p[3:])
    )
    everything = _watcher("", Segment(0, 4, "since", end=6, events=ref[2:5]))
    counts, problems = check_streams([w, everything], ref)
    assert problems == []
    assert counts["events"] == 8


@pytest.mark.parametrize(
    ("events", "kind"),
    [
        ([0, 2, 3, 4], "gap"),  # the first event of the transaction at 5 is missing
        ([0, 1, 1, 2, 3, 4], "duplicate"),
        ([0, 2, 1, 3, 4], "reordered"),
        ([0, 1, 2, 3], "missing at the end"),
    ],
)
def test_a_gap_a_duplicate_or_a_reordering_is_caught(events: list[int], kind: str) -> None:
    ref = _history().events
    p = [e for e in ref if e.key.startswith(b"p/")]
    w = _watcher("p/", Segment(0, 0, "since", end=8, events=[p[i] for i in events]))
    _, problems = check_streams([w], ref)
    assert len(problems) == 1, problems
    assert kind in problems[0], problems


def test_a_progress_claim_past_an_undelivered_event_is_a_gap() -> None:
    ref = _history().events
    p = [e for e in ref if e.key.startswith(b"p/")]
    # The segment says it saw everything up to 8 but has nothing after index 5.
    w = _watcher("p/", Segment(0, 0, "since", end=8, events=p[:3]))
    _, problems = check_streams([w], ref)
    assert len(problems) == 1
    assert "gap" in problems[0]


def test_a_cut_index_must_be_the_start_of_that_index() -> None:
    ref = _history().events
    p = [e for e in ref if e.key.startswith(b"p/")]
    good = _watcher("p/", Segment(0, 3, "since", end=3, partial=[p[1]]))
    bad = _watcher("p/", Segment(0, 3, "since", end=3, partial=[p[2]]))
    assert check_streams([good], ref)[1] == []
    assert "cut index 5" in check_streams([bad], ref)[1][0]


# -- the history replay -----------------------------------------------------------------


def test_replay_gives_the_state_after_each_index() -> None:
    problems: list[str] = []
    states = [(i, dict(s)) for i, s in replay(_history().events, problems)]
    assert problems == []
    assert [i for i, _ in states] == [3, 4, 5, 6, 8]
    assert states[2][1][b"p/a"] == KeyState(b"2", 3, 5)
    assert states[-1][1] == {
        b"q/x": KeyState(b"1", 4, 4),
        b"p/b": KeyState(b"1", 5, 5),
        b"p/c": KeyState(b"1", 8, 8),
    }


@pytest.mark.parametrize(
    ("field", "value", "finding"),
    [
        ("create_index", 5, "create_index should be 3"),
        ("mod_index", 4, "not its id"),
        ("prev_mod_index", 4, "prev_mod_index should be 3"),
        ("prev_value_b64", _b64("9"), "previous value should be"),
    ],
)
def test_replay_catches_fields_that_do_not_follow_from_the_history(
    field: str, value: Any, finding: str
) -> None:
    events = _history().events
    data = json.loads(events[2].data) | {field: value}  # the second put of p/a at 5
    events[2] = WatchEvent(5, "put", json.dumps(data, sort_keys=True))
    problems: list[str] = []
    list(replay(events, problems))
    assert any(finding in p for p in problems), problems


def test_replay_catches_a_delete_of_a_missing_key_and_going_back() -> None:
    events = _history().events
    events.insert(1, WatchEvent(2, "delete", json.dumps({"key": "z", "mod_index": 2})))
    problems: list[str] = []
    list(replay(events, problems))
    assert any("goes back from index 3" in p for p in problems)
    assert any("deletes a key that does not exist" in p for p in problems)


# -- the bank -------------------------------------------------------------------------------


def _answer(body: dict[str, Any]) -> Sent:
    return Sent("ok", httpx.Response(200, json=body), 1.0, 1.0, 1.1)


def _get_result(h: History, key: str) -> dict[str, Any]:
    value, create, mod = h.state[key]
    return {"op": "get", "found": True, "value": value, "value_b64": _b64(value),
            "create_index": create, "mod_index": mod}  # fmt: skip


def _bank_run() -> tuple[Bank, History]:
    """Creation at 3, an audit at 4, a transfer at 6 (60 from 0 to 1), a conflict at 7."""
    bank = Bank(lambda: [], 1, "r", threading.Event())
    h = History()
    keys = [account(i) for i in range(ACCOUNTS)]
    init = {"compare": [{"key": k, "target": "exists", "op": "==", "value": False} for k in keys],
            "success": [{"op": "put", "key": k, "value": str(BALANCE)} for k in keys]}  # fmt: skip
    for k in keys:
        h.put(3, k, str(BALANCE))
    h.put(3, "other", "x")  # outside bank/: ignored by the bank check
    bank.records.append(
        TxnRecord("init", init, _answer({"succeeded": True, "index": 3, "results": []}))
    )
    audit = {"success": [{"op": "get", "key": k} for k in keys]}
    results = [_get_result(h, k) for k in keys]
    bank.records.append(
        TxnRecord("audit", audit, _answer({"succeeded": True, "index": 4, "results": results}))
    )
    transfer = {
        "compare": [{"key": keys[0], "target": "mod_index", "op": "==", "value": 3},
                    {"key": keys[1], "target": "mod_index", "op": "==", "value": 3}],
        "success": [{"op": "put", "key": keys[0], "value": "40"},
                    {"op": "put", "key": keys[1], "value": "160"}],
        "failure": [{"op": "get", "key": keys[0]}, {"op": "get", "key": keys[1]}],
    }  # fmt: skip
    h.put(6, keys[0], "40")
    h.put(6, keys[1], "160")
    bank.records.append(
        TxnRecord("transfer", transfer, _answer({"succeeded": True, "index": 6, "results": []}))
    )
    conflict = {**transfer}  # the same compares again: they fail now
    failure = [_get_result(h, keys[0]), _get_result(h, keys[1])]
    bank.records.append(
        TxnRecord(
            "transfer", conflict, _answer({"succeeded": False, "index": 7, "results": failure})
        )
    )
    return bank, h


def _listings(h: History) -> dict[int, list[dict[str, Any]]]:
    entries = [
        {"key": k, "value": v, "create_index": c, "mod_index": m}
        for k, (v, c, m) in h.state.items()
    ]
    return {1: entries, 2: entries}


def test_a_consistent_bank_passes() -> None:
    bank, h = _bank_run()
    counts, problems = check_bank(bank, h.events, _listings(h))
    assert problems == []
    assert counts["answers"] == 4
    assert counts["indexes"] == 2


def test_a_transaction_that_breaks_the_total_is_caught() -> None:
    bank, h = _bank_run()
    h.put(9, account(2), "0")  # a lone put: 100 vanish
    _, problems = check_bank(bank, h.events, _listings(h))
    assert any("after index 9 the accounts sum to 400" in p for p in problems)
    assert any("node 1 ends with accounts" in p for p in problems)


def test_an_audit_that_read_a_stale_balance_is_caught() -> None:
    bank, h = _bank_run()
    record = bank.records[1]
    body = record.sent.json()
    body["index"] = 6  # the audit claims index 6, but read the balances of before it
    bank.records[1] = TxnRecord("audit", record.body, _answer(body))
    _, problems = check_bank(bank, h.events, _listings(h))
    assert any("get bank/0 gave (100, 3), the history (40, 6)" in p for p in problems), problems


def test_a_transfer_whose_writes_are_not_at_its_index_is_caught() -> None:
    bank, h = _bank_run()
    record = bank.records[2]
    bank.records[2] = TxnRecord(
        "transfer", record.body, _answer({"succeeded": True, "index": 5, "results": []})
    )
    _, problems = check_bank(bank, h.events, _listings(h))
    assert any("transfer txn at index 5 (succeeded): the history has []" in p for p in problems)


# -- leases ---------------------------------------------------------------------------------


def _lease_run(
    deleted_at: float, revoke_sent: float | None = None
) -> tuple[LeaseClients, Watcher, History]:
    clients = LeaseClients(lambda: [], 1, "r", threading.Event(), ttl=3)
    rec = LeaseRecord("0/1", Sent(), id=11)
    rec.keys = {"lease/0/1/0": ("v0", "ok"), "lease/0/1/1": ("v1", "ok")}
    rec.renewals = [(10.0, 10.1), (11.0, 11.2)]  # grant, one keep-alive sent at 11.0
    rec.revoke_sent = revoke_sent
    clients.records.append(rec)
    h = History()
    h.put(20, "lease/0/1/0", "v0")
    h.put(21, "lease/0/1/1", "v1")
    h.delete(30, "lease/0/1/0")
    h.delete(30, "lease/0/1/1")
    w = _watcher(
        "lease/",
        Segment(
            0, 0, "since", end=30, events=h.events, received=[12.0, 12.0, deleted_at, deleted_at]
        ),
    )
    return clients, w, h


def test_a_lease_key_deleted_after_its_lease_could_end_passes() -> None:
    clients, w, h = _lease_run(deleted_at=14.5)  # last renewal sent at 11.0, ttl 3
    assert check_leases(clients, [w], h.events) == []
    clients, w, h = _lease_run(deleted_at=12.5, revoke_sent=12.4)  # revoked
    assert check_leases(clients, [w], h.events) == []


def test_a_lease_key_deleted_while_the_lease_was_kept_is_caught() -> None:
    clients, w, h = _lease_run(deleted_at=13.5)
    problems = check_leases(clients, [w], h.events)
    assert len(problems) == 2
    assert "ended early" in problems[0]
    assert "0.500s" in problems[0]


def test_a_404_answer_before_the_lease_could_end_is_caught() -> None:
    clients, w, h = _lease_run(deleted_at=15.0)
    clients.records[0].gone.append((12.0, "keep-alive answered 404"))
    problems = check_leases(clients, [w], h.events)
    assert len(problems) == 1
    assert "keep-alive answered 404 2.000s before" in problems[0]


def test_the_keys_of_a_lease_deleted_in_two_entries_are_caught() -> None:
    clients, w, h = _lease_run(deleted_at=15.0)
    second = h.events[3]
    events = h.events[:3] + [WatchEvent(31, "delete", second.data.replace(": 30", ": 31"))]
    problems = check_leases(clients, [w], events)
    assert problems == ["the keys of lease lease/0/1 were deleted at [30, 31]"]


def _revoke_answer(status: int, kinds: list[Attempt], call: float) -> Sent:
    body = {"error": "lease_not_found", "message": "lease 11 does not exist"}
    response = httpx.Response(status, json=body) if status == 404 else httpx.Response(status)
    return Sent("ok", response, call=call, acked_call=call + 2.0, ret=call + 2.1, kinds=kinds)


def test_a_404_to_a_retried_revoke_counts_the_first_attempt_as_the_revoke() -> None:
    """The first attempt timed out, yet revoked the lease; the retry found it gone."""
    clients, w, h = _lease_run(deleted_at=12.5)
    rec = clients.records[0]
    clients.revoked(rec, _revoke_answer(404, ["unknown", "definite"], call=12.4))
    assert (rec.end, rec.revoke_sent, rec.gone) == ("revoke_unknown", 12.4, [])
    assert check_leases(clients, [w], h.events) == []


def test_a_404_to_a_revoke_that_was_never_applied_before_is_evidence() -> None:
    clients, w, h = _lease_run(deleted_at=15.0)
    rec = clients.records[0]
    clients.revoked(rec, _revoke_answer(404, ["refused", "definite"], call=11.5))
    assert rec.end == "lapsed"
    assert rec.revoke_sent is None
    problems = check_leases(clients, [w], h.events)
    assert len(problems) == 1
    assert "revoke answered 404 0.400s before" in problems[0]
