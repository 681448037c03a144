"""Each API call as an :class:`Op`: how its request is built and its answer read.
Pure functions, shared by :class:`~raftdb.client.Client` and
:class:`~raftdb.client.AsyncClient`."""

from __future__ import annotations

import math
import re
from typing import Any, Literal

from raftdb.client._core import (
    Answer,
    Op,
    Request,
    json_body,
    new_idempotency_key,
    path_key,
    query,
)
from raftdb.client.errors import error_for
from raftdb.client.txn import Txn
from raftdb.client.types import (
    DeleteResult,
    GetResult,
    KeyValue,
    Lease,
    LeaseInfo,
    LockHold,
    Member,
    Status,
    TxnResult,
    WriteResult,
    key_of,
    to_bytes,
)

Consistency = Literal["linearizable", "stale"]

_LINK_NEXT = re.compile(r'<([^>]*)>\s*;\s*rel="?next"?')


def _index(answer: Answer) -> int:
    return int(answer.headers.get("x-raftdb-index", "0"))


def _duplicate(answer: Answer) -> bool:
    return answer.headers.get("x-raftdb-duplicate", "") == "true"


def _etag(answer: Answer) -> int:
    return int(answer.headers.get("etag", '"0"').strip('W/"') or 0)


def _seconds(value: float) -> str:
    """A ``wait`` parameter in whole milliseconds (``1500ms``)."""
    return f"{max(1, math.ceil(value * 1000))}ms"


def get(
    key: bytes | str,
    consistency: Consistency,
    *,
    wait_index: int | None = None,
    wait: float | None = None,
) -> Op[GetResult | None]:
    """``GET /v1/kv/{key}``: the value, or ``None`` for a missing key (404). With
    ``wait_index``, a blocking read: answered once the key changes after that index,
    or when ``wait`` seconds have passed."""
    raw = to_bytes(key)
    params: list[tuple[str, bytes | str | int | None]] = [
        ("consistency", None if consistency == "linearizable" else consistency)
    ]
    if wait_index is not None:
        params += [("wait_index", wait_index), ("wait", None if wait is None else _seconds(wait))]
    target = f"/v1/kv/{path_key(raw)}" + query(params)

    def parse(a: Answer) -> GetResult | None:
        if a.status == 404:
            if a.error_body().get("error") not in (None, "not_found"):
                raise error_for(404, a.error_body())
            return None
        return GetResult(raw, a.content, _etag(a), _index(a))

    return Op(Request("GET", target), parse, frozenset({404}))


def put(
    key: bytes | str,
    value: bytes | str,
    *,
    if_match: int | None,
    create_only: bool,
    lease: int | None,
    idempotency_key: str | None,
) -> Op[WriteResult]:
    """``PUT /v1/kv/{key}`` with its conditions and an ``Idempotency-Key``."""
    if if_match is not None and create_only:
        raise ValueError("if_match and create_only exclude each other")
    headers = {"content-type": "application/octet-stream"}
    if if_match is not None:
        headers["if-match"] = f'"{if_match}"'
    if create_only:
        headers["if-none-match"] = "*"
    target = f"/v1/kv/{path_key(to_bytes(key))}" + query([("lease", lease)])
    request = Request(
        "PUT",
        target,
        to_bytes(value),
        headers,
        write=True,
        idempotency_key=idempotency_key or new_idempotency_key(),
    )
    return Op(request, lambda a: WriteResult(_etag(a) or _index(a), _duplicate(a)))


def delete(
    key: bytes | str, *, if_match: int | None, idempotency_key: str | None
) -> Op[DeleteResult]:
    """``DELETE /v1/kv/{key}`` (deleting a missing key is not an error: ``existed``)."""
    headers = {} if if_match is None else {"if-match": f'"{if_match}"'}
    request = Request(
        "DELETE",
        f"/v1/kv/{path_key(to_bytes(key))}",
        None,
        headers,
        write=True,
        idempotency_key=idempotency_key or new_idempotency_key(),
    )
    return Op(
        request,
        lambda a: DeleteResult(
            _etag(a) or _index(a), a.headers.get("x-raftdb-existed") == "true", _duplicate(a)
        ),
    )


def list_first(
    prefix: bytes | str,
    *,
    start: bytes | str | None,
    page_size: int,
    consistency: Consistency,
    wait_index: int | None = None,
    wait: float | None = None,
) -> str:
    """The target of a listing's first page (later ones come from ``Link``). With
    ``wait_index``, a blocking listing: the page is answered once a key under the
    prefix changes after that index, or when ``wait`` seconds have passed."""
    params: list[tuple[str, bytes | str | int | None]] = [
        ("prefix", to_bytes(prefix)),
        ("start", None if start is None else to_bytes(start)),
        ("limit", page_size),
        ("values", "true"),
        ("consistency", None if consistency == "linearizable" else consistency),
    ]
    if wait_index is not None:
        params += [("wait_index", wait_index), ("wait", None if wait is None else _seconds(wait))]
    return "/v1/kv" + query(params)


def list_page(target: str) -> Op[tuple[list[KeyValue], str | None, int]]:
    """One page of ``GET /v1/kv``: its entries, the next page's target (``Link``) and
    the index the page was read at (``X-Raftdb-Index``)."""

    def parse(a: Answer) -> tuple[list[KeyValue], str | None, int]:
        entries = [KeyValue.from_listing(e) for e in a.json()]
        m = _LINK_NEXT.search(a.headers.get("link", ""))
        return entries, (m.group(1) if m else None), _index(a)

    return Op(Request("GET", target), parse)


def txn(t: Txn, *, idempotency_key: str | None) -> Op[TxnResult]:
    """``POST /v1/txn``."""
    request = Request(
        "POST",
        "/v1/txn",
        json_body(t.to_json()),
        {"content-type": "application/json"},
        write=True,
        idempotency_key=idempotency_key or new_idempotency_key(),
    )
    return Op(request, lambda a: TxnResult.from_json(a.json()))


def _lease(body: dict[str, Any]) -> Lease:
    return Lease(int(body["id"]), int(body["ttl"]))


def lease_grant(ttl: int, *, idempotency_key: str | None) -> Op[Lease]:
    """``POST /v1/leases``."""
    request = Request(
        "POST",
        "/v1/leases",
        json_body({"ttl": ttl}),
        {"content-type": "application/json"},
        write=True,
        idempotency_key=idempotency_key or new_idempotency_key(),
    )
    return Op(request, lambda a: _lease(a.json()))


def lease_keepalive(lease_id: int) -> Op[Lease]:
    """``POST /v1/leases/{id}/keepalive``: renewing twice is harmless, so it is retried
    like a read."""
    return Op(Request("POST", f"/v1/leases/{lease_id}/keepalive"), lambda a: _lease(a.json()))


def lease_revoke(lease_id: int) -> Op[None]:
    """``DELETE /v1/leases/{id}``: no idempotency key, so not retried once it may have
    been sent."""
    return Op(Request("DELETE", f"/v1/leases/{lease_id}", write=True), lambda a: None)


def lease_info(lease_id: int, consistency: Consistency) -> Op[LeaseInfo]:
    """``GET /v1/leases/{id}``."""
    target = f"/v1/leases/{lease_id}"
    if consistency != "linearizable":
        target += query([("consistency", consistency)])
    return Op(Request("GET", target), lambda a: LeaseInfo.from_json(a.json()))


def leases() -> Op[list[LeaseInfo]]:
    """``GET /v1/leases`` (admin): every lease, without keys."""
    return Op(
        Request("GET", "/v1/leases"),
        lambda a: [LeaseInfo.from_json(x) for x in a.json()["leases"]],
    )


def lock(name: bytes | str, lease_id: int, wait: float) -> Op[LockHold]:
    """``POST /v1/lock/{name}?wait=``: answers once held (``408`` after ``wait``)."""
    raw = to_bytes(name)
    request = Request(
        "POST",
        f"/v1/lock/{path_key(raw)}" + query([("wait", _seconds(wait))]),
        json_body({"lease": str(lease_id)}),
        {"content-type": "application/json"},
        write=True,
    )

    def parse(a: Answer) -> LockHold:
        body = a.json()
        return LockHold(raw, key_of(body), int(body["fence"]), lease_id)

    return Op(request, parse)


def unlock(name: bytes | str, lease_id: int) -> Op[None]:
    """``DELETE /v1/lock/{name}?lease=``."""
    target = f"/v1/lock/{path_key(to_bytes(name))}" + query([("lease", lease_id)])
    return Op(Request("DELETE", target, write=True), lambda a: None)


def _member(m: dict[str, Any]) -> Member:
    return Member(int(m["id"]), str(m["peer_url"]), bool(m.get("learner", False)))


def members() -> Op[list[Member]]:
    """``GET /v1/cluster/members``."""
    return Op(Request("GET", "/v1/cluster/members"), lambda a: [_member(m) for m in a.json()])


def add_member(member_id: int, peer_url: str, learner: bool) -> Op[Member]:
    """``POST /v1/cluster/members`` (also promotes a learner: same id, ``learner=False``)."""
    body = json_body({"id": member_id, "peer_url": peer_url, "learner": learner})
    request = Request(
        "POST", "/v1/cluster/members", body, {"content-type": "application/json"}, write=True
    )
    return Op(request, lambda a: _member(a.json()))


def remove_member(member_id: int) -> Op[None]:
    """``DELETE /v1/cluster/members/{id}``."""
    return Op(Request("DELETE", f"/v1/cluster/members/{member_id}", write=True), lambda a: None)


def transfer_leader(member_id: int) -> Op[int]:
    """``POST /v1/cluster/leader``: the new leader's id once it leads."""
    request = Request(
        "POST",
        "/v1/cluster/leader",
        json_body({"id": member_id}),
        {"content-type": "application/json"},
        write=True,
    )
    return Op(request, lambda a: int(a.json()["leader"]))


def status() -> Op[Status]:
    """``GET /v1/status`` of the member asked."""
    return Op(Request("GET", "/v1/status"), lambda a: Status.from_json(a.json()))


def fenced(
    hold: LockHold,
    *,
    put: tuple[bytes | str, bytes | str] | None = None,
    delete: bytes | str | None = None,
) -> Txn:
    """A transaction that runs only while ``hold``'s key still has its fence as its
    ``create_index`` (the holder still holds the lock): an election's publication."""
    t = Txn().compare(hold.key, "create_index", "==", hold.fence)
    if put is not None:
        t.success.put(*put)
    if delete is not None:
        t.success.delete(delete)
    return t
