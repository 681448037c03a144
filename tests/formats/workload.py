"""What the format fixtures hold, and how a node's data is read back to compare with it.

:func:`write_workload` is the history the generator (:mod:`tests.formats.make_fixture`)
writes into a one-member cluster: enough entries for a snapshot and a compacted log,
overwrites, deletes, conditional writes, writes with an ``Idempotency-Key`` (client
session records), a lease with keys, and a transaction. :func:`read_state` reads
what a node serves (every key with its indexes, the leases, the status, the watch
history's tail) in the JSON shape of the committed ``manifest.json``, so that the
test of the fixture compares the two as they are.
"""

from __future__ import annotations

import json
from typing import Any, Final

import httpx

__all__ = [
    "LEASE_TTL",
    "SNAPSHOT_ENTRIES",
    "SNAPSHOT_KEEP_ENTRIES",
    "WATCH_TAIL",
    "read_state",
    "read_watch",
    "write_workload",
]

#: The generator's node settings: a snapshot every 100 entries, 20 kept behind it.
SNAPSHOT_ENTRIES: Final = 100
SNAPSHOT_KEEP_ENTRIES: Final = 20
#: A lease long enough to outlive any test (whole seconds).
LEASE_TTL: Final = 10 * 365 * 24 * 3600
#: How many of the latest indexes the manifest's watch history covers.
WATCH_TAIL: Final = 40
#: A value that is not UTF-8 (listed as base64).
BINARY: Final = bytes(range(256))


def _ok(r: httpx.Response, *statuses: int) -> httpx.Response:
    if r.status_code not in (statuses or (200, 201, 204)):
        raise AssertionError(f"{r.request.method} {r.request.url}: {r.status_code} {r.text}")
    return r


def write_workload(client: httpx.Client, api: str) -> None:
    """Write the fixture's history through the node at ``api`` (every write acknowledged)."""

    def put(key: str, value: bytes, **headers: str) -> httpx.Response:
        return _ok(client.put(f"{api}/v1/kv/{key}", content=value, headers=headers), 204)

    for i in range(260):  # plain puts: format-1 commands
        put(f"k/{i:03d}", f"value {i}".encode())
    for i in range(0, 40, 2):  # overwrites: create_index != mod_index
        put(f"k/{i:03d}", f"value {i}, second".encode())
    for i in range(200, 230):  # deletes
        _ok(client.delete(f"{api}/v1/kv/k/{i:03d}"), 204)
    put("bin/all-bytes", BINARY)
    put("utf8/ключ", "значение".encode())
    # Conditional writes (still format 1): create-only, then compare-and-set.
    put("cas/a", b"first", **{"If-None-Match": "*"})
    etag = client.get(f"{api}/v1/kv/cas/a").headers["etag"]
    put("cas/a", b"second", **{"If-Match": etag})
    # Client sessions: an Idempotency-Key, and the same write retried.
    for n in range(3):
        put(f"idem/{n}", f"once {n}".encode(), **{"Idempotency-Key": f"fixture-{n}"})
    put("idem/0", b"once 0", **{"Idempotency-Key": "fixture-0"})
    # A lease and its keys (format-2 commands).
    grant = _ok(client.post(f"{api}/v1/leases", json={"ttl": LEASE_TTL}), 201).json()
    lease = grant["id"]
    for n in range(3):
        r = client.put(f"{api}/v1/kv/leased/{n}", params={"lease": lease}, content=b"held")
        _ok(r, 204)
    # A transaction: one entry, several writes.
    txn = {
        "compare": [{"key": "k/001", "target": "value", "op": "==", "value": "value 1"}],
        "success": [
            {"op": "put", "key": "txn/x", "value": "from a txn"},
            {"op": "delete", "key": "k/001"},
            {"op": "put", "key": "k/002", "value": "value 2, by txn"},
        ],
        "failure": [],
    }
    body = _ok(client.post(f"{api}/v1/txn", json=txn), 200).json()
    if not body["succeeded"]:
        raise AssertionError(f"the fixture's transaction failed: {body}")
    for i in range(30):  # after the snapshot: a log tail to replay
        put(f"tail/{i:02d}", f"tail {i}".encode())


def read_watch(client: httpx.Client, api: str, since: int, until: int) -> list[dict[str, Any]]:
    """The watch events of every key after ``since`` up to index ``until``, as
    ``{"id", "event", "data"}`` dicts (progress events left out)."""
    events: list[dict[str, Any]] = []
    fields: dict[str, str] = {}
    with client.stream("GET", f"{api}/v1/watch", params={"since": since}, timeout=15.0) as r:
        _ok(r, 200)
        for line in r.iter_lines():
            if line:
                name, _, value = line.partition(":")
                fields[name] = value.removeprefix(" ")
                continue
            if not fields:
                continue
            event, fields = fields, {}
            if "id" not in event:
                continue
            index = int(event["id"])
            if event.get("event") != "progress":
                events.append(
                    {"id": index, "event": event["event"], "data": json.loads(event["data"])}
                )
            if index >= until:
                break
    return events


def read_state(
    client: httpx.Client, api: str, watch: tuple[int, int] | None = None
) -> dict[str, Any]:
    """What the node at ``api`` serves, in the manifest's shape (linearizable reads).

    ``watch`` is the ``(since, until)`` range of the watch events to read;
    by default the last :data:`WATCH_TAIL` indexes.
    """
    status = _ok(client.get(f"{api}/v1/status"), 200).json()
    keys = _ok(client.get(f"{api}/v1/kv", params={"values": "true", "limit": 10000}), 200).json()
    members = _ok(client.get(f"{api}/v1/cluster/members"), 200).json()
    leases = []
    for lease in _ok(client.get(f"{api}/v1/leases"), 200).json()["leases"]:
        info = _ok(client.get(f"{api}/v1/leases/{lease['id']}"), 200).json()
        leases.append({"id": info["id"], "ttl": info["ttl"], "keys": sorted(info["keys"])})
    applied = int(status["applied_index"])
    since, until = watch if watch is not None else (applied - WATCH_TAIL, applied)
    return {
        "applied_index": applied,
        "members": sorted(
            ({"id": m["id"], "learner": m.get("learner", False)} for m in members),
            key=lambda m: m["id"],
        ),
        "keys": keys,
        "leases": leases,
        "watch_since": since,
        "watch": read_watch(client, api, since, until),
    }
