"""The client's key-value, transaction, lease, cluster and error calls on a real cluster."""

from __future__ import annotations

import threading

import pytest

from raftdb.client import (
    BadRequestError,
    Client,
    ConditionFailedError,
    EndpointsUnavailableError,
    GetResult,
    KeyValue,
    LeaseNotFoundError,
    Listing,
    RaftdbError,
    TooLargeError,
    TooManyOperationsError,
    Txn,
    TxnDelete,
    TxnGet,
    TxnList,
    TxnPut,
    WatchEvent,
)
from raftdb.client import errors as client_errors
from raftdb.testing.ports import free_ports
from tests.client.conftest import endpoints
from tests.integration.harness import ProcessCluster, wait_until


def test_put_get_delete(client: Client) -> None:
    w = client.put("kv/a", "1")
    got = client.get("kv/a")
    assert got is not None
    assert (got.key, got.value, got.text, got.mod_index) == (b"kv/a", b"1", "1", w.index)
    assert got.read_index >= w.index
    stale = client.get(b"kv/a", consistency="stale")
    assert stale is None or stale.value == b"1"  # a member may lag, never differ
    d = client.delete("kv/a")
    assert d.existed
    assert d.index > w.index
    assert client.get("kv/a") is None
    assert client.delete("kv/a").existed is False


def test_binary_and_awkward_keys(client: Client) -> None:
    for key in (b"kv/\xff\x00bin", b"kv/a/../b", b"kv/.", b"kv/sp ace?&=#%"):
        client.put(key, b"\x80\x81" + key)
        got = client.get(key)
        assert got is not None, key
        assert got.value == b"\x80\x81" + key, key
    listed = {kv.key: kv.value for kv in client.list(b"kv/")}
    assert listed[b"kv/\xff\x00bin"] == b"\x80\x81kv/\xff\x00bin"
    assert listed[b"kv/a/../b"] == b"\x80\x81kv/a/../b"


def test_conditions(client: Client) -> None:
    first = client.put("cond/k", "v1", create_only=True)
    with pytest.raises(ConditionFailedError) as e:
        client.put("cond/k", "v2", create_only=True)
    assert e.value.mod_index == first.index
    assert e.value.status == 412
    second = client.put("cond/k", "v2", if_match=first.index)
    with pytest.raises(ConditionFailedError) as e:
        client.put("cond/k", "v3", if_match=first.index)
    assert e.value.mod_index == second.index
    with pytest.raises(ConditionFailedError):
        client.delete("cond/k", if_match=first.index)
    assert client.delete("cond/k", if_match=second.index).existed
    with pytest.raises(ValueError, match="exclude"):
        client.put("cond/k", "x", if_match=1, create_only=True)


def test_idempotency_key_applies_once(client: Client) -> None:
    first = client.put("idem/k", "once", idempotency_key="test-idem-1")
    again = client.put("idem/k", "once", idempotency_key="test-idem-1")
    assert again.index == first.index
    assert again.duplicate
    assert not first.duplicate
    d1 = client.delete("idem/k", idempotency_key="test-idem-2")
    d2 = client.delete("idem/k", idempotency_key="test-idem-2")
    # A retried delete answers the first attempt's outcome and index, as a duplicate.
    assert (d1.existed, d1.duplicate, d2.existed, d2.duplicate) == (True, False, True, True)
    assert d2.index == d1.index


def test_list_follows_pages(client: Client) -> None:
    keys = [f"page/{i:02d}".encode() for i in range(7)]
    for k in keys:
        client.put(k, k[::-1])
    client.put("pagf/outside", "x")
    listed = list(client.list("page/", page_size=2))
    assert [kv.key for kv in listed] == keys
    assert all(isinstance(kv, KeyValue) and kv.value == kv.key[::-1] for kv in listed)
    assert [kv.key for kv in client.list("page/", start="page/05", page_size=1)] == keys[5:]
    assert len(list(client.list("page/", consistency="stale"))) <= 7


def test_txn_builder(client: Client) -> None:
    a = client.put("txn/a", "1")
    client.put("txn/b", "x")
    t = Txn()
    t.compare("txn/a", "value", "==", "1").compare("txn/a", "mod_index", "==", a.index)
    t.compare("txn/c", "exists", "==", False).compare("txn/a", "create_index", ">", 0)
    t.success.put("txn/a", "2").delete("txn/b").get("txn/a").list("txn/", limit=1)
    t.failure.get("txn/a")
    r = client.txn(t)
    assert r.succeeded
    assert r.results is not None
    assert not r.duplicate
    put, delete, get, listing = r.results
    assert put == TxnPut(r.index, a.index, a.index)
    assert isinstance(delete, TxnDelete)
    assert delete.deleted
    assert get == TxnGet(True, b"2", a.index, r.index)
    assert isinstance(listing, TxnList)
    assert listing.more is False
    assert [kv.key for kv in listing.keys] == [b"txn/a"]
    # The same compares fail now: the failure branch runs.
    failed = client.txn(t)
    assert not failed.succeeded
    assert failed.results == (TxnGet(True, b"2", a.index, r.index),)
    keyed = Txn()
    keyed.success.put(b"txn/\xfe", b"\x00")
    one = client.txn(keyed, idempotency_key="txn-idem-1")
    two = client.txn(keyed, idempotency_key="txn-idem-1")
    assert two.duplicate
    assert two.index == one.index
    assert two.results is None
    with pytest.raises(ValueError, match="int"):
        Txn().compare("k", "mod_index", "==", "1")


def test_errors_per_code(client: Client, shared: ProcessCluster) -> None:
    with pytest.raises(TooLargeError) as too_large:
        client.put("k" * 5000, "v")
    assert too_large.value.status == 413
    big = Txn()
    for i in range(129):
        big.compare(f"c{i}", "exists", "==", True)
    with pytest.raises(TooManyOperationsError):
        client.txn(big)
    with pytest.raises(LeaseNotFoundError):
        client.put("err/k", "v", lease=987654321)
    with pytest.raises(BadRequestError):
        client.lease_grant(0)
    with pytest.raises(client_errors.MemberNotFoundError):
        client.member_remove(99)
    lease = client.lease_grant(10)
    with pytest.raises(client_errors.LockNotHeldError):
        client.lock_release("locks/none", lease.id)
    # Every class is a RaftdbError with its code.
    assert issubclass(client_errors.CompactedError, RaftdbError)
    assert client_errors.error_for(503, {"error": "unavailable"}).code == "unavailable"
    assert type(client_errors.error_for(418, {})) is RaftdbError


def test_leases(client: Client) -> None:
    lease = client.lease_grant(30)
    assert lease.ttl == 30
    client.put("lease/k", "v", lease=lease.id)
    info = client.lease_info(lease.id)
    assert info.id == lease.id
    assert info.keys == (b"lease/k",)
    assert 0 < info.remaining <= 30
    assert client.lease_keepalive(lease.id) == lease
    assert lease.id in [x.id for x in client.leases()]
    client.lease_revoke(lease.id)
    assert client.get("lease/k") is None
    with pytest.raises(LeaseNotFoundError):
        client.lease_info(lease.id)
    with client.lease(10) as kept:
        client.put("lease/kept", "v", lease=kept.id)
    assert client.get("lease/kept") is None  # revoked when the block ended
    assert kept.lost is None


def test_cluster_calls(client: Client, shared: ProcessCluster) -> None:
    members = client.members()
    assert sorted(m.id for m in members) == [1, 2, 3]
    assert all(not m.learner for m in members)
    leader = shared.wait_leader()
    st = client.status(shared.nodes[leader].api_url)
    assert st.id == leader
    assert st.role == "leader"
    assert st.leader == leader
    target = next(i for i in (1, 2, 3) if i != leader)
    assert client.leader_transfer(target) == target
    assert client.status(shared.nodes[target].api_url).role == "leader"
    # A write right after goes through (to the new leader or via a follower).
    client.put("cluster/after-transfer", "ok")


def test_unreachable_endpoints_and_failover(shared: ProcessCluster) -> None:
    dead = [f"http://127.0.0.1:{p}" for p in free_ports(2)]
    with Client(dead, timeout=0.5, connect_timeout=0.2) as c:
        with pytest.raises(EndpointsUnavailableError):
            c.get("x")
        # A write that never connected is not "unknown": nothing was sent.
        with pytest.raises(EndpointsUnavailableError):
            c.put("x", "y")
    with Client([*dead, *endpoints(shared)], timeout=10.0, connect_timeout=0.5) as c:
        c.put("failover/k", "v")
        got = c.get("failover/k")
        assert got is not None
        assert got.value == b"v"


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="endpoint"):
        Client([])
    with pytest.raises(ValueError, match="positive"):
        Client("http://127.0.0.1:1", timeout=0)
    with pytest.raises(ValueError, match="cert_file"):
        Client("http://127.0.0.1:1", key_file="k.pem")


def test_watch_from_now_with_progress_and_prev(client: Client) -> None:
    before = client.put("watchnow/a", "old")
    with client.watch("watchnow/", prev=True) as events:
        # Written after watch() returned: delivered; the earlier write is not.
        w = client.put("watchnow/a", "new")
        d = client.delete("watchnow/a")
        it = iter(events)
        put, gone = next(it), next(it)
    assert isinstance(put, WatchEvent)
    assert isinstance(gone, WatchEvent)
    assert (put.type, put.key, put.value, put.index) == ("put", b"watchnow/a", b"new", w.index)
    assert put.prev_mod_index == before.index
    assert put.prev_value == b"old"
    assert (gone.type, gone.index) == ("delete", d.index)
    with client.watch(key="watchnow/b", since=d.index) as one:
        client.put("watchnow/c", "not this key")
        b = client.put("watchnow/b", "1")
        ev = next(iter(one))
        assert isinstance(ev, WatchEvent)
        assert (ev.key, ev.index) == (b"watchnow/b", b.index)
    with pytest.raises(ValueError, match="not both"):
        client.watch("p", key="k")


def test_watch_closed_from_another_thread(client: Client) -> None:
    events = client.watch("closing/")
    got: list[object] = []
    done = threading.Event()

    def consume() -> None:
        got.extend(events)  # ends when the watch is closed
        done.set()

    t = threading.Thread(target=consume)
    t.start()
    w = client.put("closing/a", "1")
    wait_until("the event", lambda: bool(got) or None, 10.0)
    events.close()
    t.join(10.0)
    assert done.is_set(), "the consuming thread still waits after close()"
    assert [e.index for e in got if isinstance(e, WatchEvent)] == [w.index]


def test_blocking_get(client: Client) -> None:
    first = client.put("block/k", "v0")
    answers: list[GetResult | None] = []
    t = threading.Thread(
        target=lambda: answers.append(client.get("block/k", wait_index=first.index, wait=20))
    )
    t.start()
    second = client.put("block/k", "v1")
    t.join(15)
    assert len(answers) == 1
    got = answers[0]
    assert got is not None
    assert (got.value, got.mod_index) == (b"v1", second.index)
    # A wait that ends with nothing changed answers the value as it is.
    same = client.get("block/k", wait_index=second.index, wait=0.2)
    assert same is not None
    assert same.mod_index == second.index


def test_blocking_list_waits_for_a_change_under_its_prefix(client: Client) -> None:
    first = client.put("blist/a", "1")
    answers: list[Listing] = []
    t = threading.Thread(
        target=lambda: answers.append(client.list_wait("blist/", first.index, wait=20))
    )
    t.start()
    client.put("blist-other/x", "not under the prefix")
    second = client.put("blist/b", "2")
    t.join(15)
    (got,) = answers
    # Woken by the second put, not the first (which is outside the prefix): the
    # listing read after it holds blist/b.
    assert [(e.key, e.value) for e in got.entries] == [(b"blist/a", b"1"), (b"blist/b", b"2")]
    assert got.index >= second.index
    # A wait that ends with nothing changed answers the listing as it is.
    same = client.list_wait("blist/", got.index, wait=0.2)
    assert [e.key for e in same.entries] == [b"blist/a", b"blist/b"]
    assert same.index >= got.index
    # A change made before the call answers at once; pages follow Link.
    third = client.put("blist/c", "3")
    paged = client.list_wait("blist/", second.index, page_size=1)
    assert [e.key for e in paged.entries] == [b"blist/a", b"blist/b", b"blist/c"]
    assert paged.index >= third.index
