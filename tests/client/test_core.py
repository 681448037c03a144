"""The client's retry policy and watch cursor without I/O: scripted outcomes."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any

import httpx
import pytest

from raftdb.client import (
    CompactedError,
    ConditionFailedError,
    EndpointsUnavailableError,
    NoSpaceError,
    OutcomeUnknownError,
    UnavailableError,
    WatchEvent,
    _ops,
)
from raftdb.client._core import (
    Answer,
    ClusterView,
    Failure,
    Op,
    Outcome,
    Send,
    Sleep,
    Step,
    run_call,
)
from raftdb.client._watch import RawEvent, SSEParser, StreamClosed, WatchCursor

A, B = "http://a", "http://b"


class Clock:
    """The calls' clock in these tests: it moves only when a call sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


CLOCK = Clock()


@pytest.fixture(autouse=True)
def _fake_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("raftdb.client._core.time", CLOCK)


def drive(gen: Generator[Step, Outcome, Any], outcomes: list[Outcome]) -> tuple[Any, list[Step]]:
    """Run a call against scripted outcomes; returns its result and the steps it took."""
    steps: list[Step] = []
    try:
        step = next(gen)
        while True:
            steps.append(step)
            if isinstance(step, Sleep):
                CLOCK.now += step.seconds
                step = gen.send(None)
            else:
                step = gen.send(outcomes.pop(0))
    except StopIteration as stop:
        return stop.value, steps


def ok(status: int = 204, **headers: str) -> Answer:
    return Answer(status, headers, b"")


def error(status: int, body: bytes, **headers: str) -> Answer:
    return Answer(status, headers, body)


def sends(steps: list[Step]) -> list[str]:
    return [s.endpoint for s in steps if isinstance(s, Send)]


def put_op() -> Op[Any]:
    return _ops.put("k", "v", if_match=None, create_only=False, lease=None, idempotency_key=None)


def view() -> ClusterView:
    v = ClusterView([A, B])
    v.discovered = True  # no /v1/status round in these scripts
    return v


def test_write_retried_with_its_key_after_a_lost_connection_and_504() -> None:
    op = put_op()
    key = op.request.idempotency_key
    assert key
    lost = Failure(httpx.ReadError("reset"), maybe_sent=True)
    res, steps = drive(
        run_call(view(), op, 5.0),
        [lost, error(504, b'{"error":"outcome_unknown"}'), ok(etag='"7"')],
    )
    assert res.index == 7
    sent = [s for s in steps if isinstance(s, Send)]
    assert len(sent) == 3
    assert {s.request.idempotency_key for s in sent} == {key}
    assert sends(steps)[:2] == [A, B]  # failed over after the lost connection


def test_unkeyed_write_is_never_resent_after_it_may_have_been_sent() -> None:
    op = _ops.remove_member(3)
    with pytest.raises(OutcomeUnknownError):
        drive(run_call(view(), op, 5.0), [Failure(httpx.ReadError("x"), maybe_sent=True)])
    with pytest.raises(OutcomeUnknownError):
        drive(run_call(view(), op, 5.0), [error(504, b"{}")])
    # Not sent at all: retried elsewhere.
    res, steps = drive(
        run_call(view(), op, 5.0), [Failure(httpx.ConnectError("no"), maybe_sent=False), ok()]
    )
    assert res is None
    assert sends(steps) == [A, B]


def test_503_fails_over_and_respects_retry_after() -> None:
    body = b'{"error":"unavailable","message":"no leader"}'
    res, steps = drive(
        run_call(view(), put_op(), 5.0),
        [error(503, body, **{"retry-after": "1"}), error(503, body, **{"retry-after": "1"}), ok()],
    )
    assert sends(steps) == [A, B, A]
    pause = [s for s in steps if isinstance(s, Sleep)]
    assert len(pause) == 1
    assert 0.5 < pause[0].seconds <= 1.0


def test_gives_up_at_the_timeout_with_the_last_error() -> None:
    body = b'{"error":"unavailable","message":"no leader"}'
    with pytest.raises(UnavailableError):
        drive(
            run_call(view(), put_op(), 0.5),
            [error(503, body, **{"retry-after": "1"})] * 2,
        )
    with pytest.raises(OutcomeUnknownError) as e:
        drive(run_call(view(), put_op(), 0.3), [error(504, b"{}")] * 1000)
    assert e.value.idempotency_key
    with pytest.raises(EndpointsUnavailableError):
        drive(
            run_call(view(), _ops.status(), 0.3),
            [Failure(httpx.ConnectError("no"), maybe_sent=False)] * 1000,
        )


def test_other_errors_raise_at_once_and_get_404_is_none() -> None:
    body = b'{"error":"condition_failed","message":"m","mod_index":4}'
    with pytest.raises(ConditionFailedError) as e:
        drive(run_call(view(), put_op(), 5.0), [error(412, body)])
    assert e.value.mod_index == 4
    res, _ = drive(run_call(view(), _ops.get("k", "linearizable"), 5.0), [error(404, b"{}")])
    assert res is None


def test_writes_go_to_the_leader_found_by_status() -> None:
    v = ClusterView([A, B])
    status_a = Answer(200, {}, b'{"id":1,"role":"follower","leader":2}')
    status_b = Answer(200, {}, b'{"id":2,"role":"leader","leader":2}')
    _, steps = drive(run_call(v, put_op(), 5.0), [status_a, status_b, ok()])
    assert sends(steps) == [A, B, B]
    assert v.leader_endpoint() == B
    _, steps = drive(run_call(v, _ops.get("k", "linearizable"), 5.0), [ok(200)])
    assert sends(steps) == [B]  # reads stay on the member that answered last


def test_sse_parser() -> None:
    p = SSEParser()
    lines = ["id: 5", "event: put", 'data: {"a":', "data: 1}", "", ": comment", ""]
    out = [e for e in (p.line(x) for x in lines) if e is not None]
    assert out == [RawEvent("5", "put", '{"a":\n1}')]


def _put(index: int, key: str) -> RawEvent:
    return RawEvent(str(index), "put", f'{{"key":"{key}","value_b64":"","mod_index":{index}}}')


def test_cursor_never_splits_a_transaction_on_resume() -> None:
    c = WatchCursor(prefix=b"p", key=None, since=4, prev=False)
    assert "since=4" in c.stream_request().target
    first = [c.on_event(e) for e in (_put(5, "a"), _put(7, "t1"), _put(7, "t2"))]
    assert all(isinstance(e, WatchEvent) for e in first)
    # The stream breaks inside index 7: resume after 5, dropping the two delivered.
    assert "since=5" in c.stream_request().target
    again = [c.on_event(e) for e in (_put(7, "t1"), _put(7, "t2"), _put(7, "t3"), _put(9, "b"))]
    assert again[:2] == [None, None]
    assert [e.key for e in again[2:] if isinstance(e, WatchEvent)] == [b"t3", b"b"]
    assert "since=7" in c.stream_request().target
    with pytest.raises(StreamClosed):
        c.on_event(RawEvent(None, "closed", '{"error":"watcher_too_slow","since":9}'))
    with pytest.raises(CompactedError) as e:
        c.on_event(RawEvent(None, "closed", '{"error":"compacted","oldest_index":50}'))
    assert e.value.oldest_index == 50
    c.on_event(RawEvent("12", "progress", '{"applied_index":12}'))
    assert "since=12" in c.stream_request().target


def test_429_waits_for_that_member_and_507_fails_over() -> None:
    busy = error(429, b'{"error":"too_many_requests"}', **{"retry-after": "2"})
    full = error(507, b'{"error":"nospace"}', **{"retry-after": "5"})
    res, steps = drive(run_call(view(), put_op(), 10.0), [busy, full, ok(etag='"3"')])
    assert res.index == 3
    # A busy; B's disk is full; then A again once its Retry-After has passed.
    assert sends(steps) == [A, B, A]
    with pytest.raises(NoSpaceError):
        drive(run_call(view(), put_op(), 0.5), [full, full])
