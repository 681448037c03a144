"""PySyncObj behind a Starlette API with raftdb's REST shape, for the comparison.

One process is one node: a :class:`KVStore` (a ``pysyncobj.SyncObj`` holding
a dict, replicated by PySyncObj's Raft, in memory: PySyncObj has no fsync) and
a Starlette app on uvicorn, as raftdb's node is.

- ``PUT /v1/kv/{key}``: a replicated ``put``; ``204`` once PySyncObj has
  committed and applied it (its callback), as raftdb answers after commit.
  On a follower PySyncObj forwards the command to the leader itself.
- ``GET /v1/kv/{key}``: linearizable, as raftdb's default: PySyncObj has no
  ReadIndex, so the read is a replicated ``get`` that goes through the log.
  ``200`` and the value, or ``404``.
- ``GET /v1/kv/{key}?consistency=stale``: the local dict, no round trip.
- ``GET /v1/status``: ``{"role", "leader", "ready", "has_quorum"}``.

Batching, tuned to PySyncObj's best (``--tune-pysyncobj`` of the runner
sweeps it): ``appendEntriesUseBatch`` on, ``appendEntriesPeriod`` 3 ms and
the ticker's poll period; PySyncObj's callbacks run on its ticker thread, and
are handed to the event loop in batches (one loop wake-up per batch of
callbacks, not one per request).

Run: ``python -m benchmarks.cluster.pysyncobj_server --self 127.0.0.1:7001
--partners 127.0.0.1:7002,127.0.0.1:7003 --port 8001``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import importlib
import json
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

if TYPE_CHECKING:
    # The few names of pysyncobj (untyped, and only in the bench extra) used here.

    class SyncObjConf:
        def __init__(self, **kwargs: Any) -> None: ...

    class SyncObj:
        def __init__(self, selfNode: str, otherNodes: Sequence[str], conf: SyncObjConf) -> None: ...

        def getStatus(self) -> dict[str, Any]: ...

        def isReady(self) -> bool: ...

        def destroy(self) -> None: ...

    def replicated(func: Callable[..., Any]) -> Callable[..., Any]: ...

else:
    _pysyncobj = importlib.import_module("pysyncobj")
    SyncObj = _pysyncobj.SyncObj
    SyncObjConf = _pysyncobj.SyncObjConf
    replicated = _pysyncobj.replicated

__all__ = ["KVStore", "build_app", "main"]

#: PySyncObj's FAIL_REASON.SUCCESS.
_SUCCESS: Final = 0
#: PySyncObj's _RAFT_STATE values, as raftdb's role names.
_ROLES: Final = {0: "follower", 1: "candidate", 2: "leader"}
_OCTETS: Final = "application/octet-stream"
_TIMEOUT_S: Final = 5.0


class KVStore(SyncObj):
    """A dict replicated by PySyncObj: ``put`` and ``get`` go through its log."""

    def __init__(self, self_addr: str, partners: Sequence[str], conf: SyncObjConf) -> None:
        self.data: dict[bytes, bytes] = {}  # before SyncObj starts its ticker thread
        super().__init__(self_addr, list(partners), conf)

    @replicated
    def put(self, key: bytes, value: bytes) -> None:
        self.data[key] = value

    @replicated
    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)


class _Bridge:
    """Hands PySyncObj's callbacks (its ticker thread) to futures on the event loop.

    Results queue up in a deque; one ``call_soon_threadsafe`` drains all that
    arrived since the last drain, so a tick that applies many commands wakes
    the loop once.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.done: collections.deque[tuple[asyncio.Future[Any], Any, int]] = collections.deque()
        self.scheduled = False
        self.lock = threading.Lock()

    def callback(self, future: asyncio.Future[Any]) -> Callable[[Any, int], None]:
        def settle(result: Any, error: int) -> None:  # on PySyncObj's thread
            self.done.append((future, result, error))
            with self.lock:
                if self.scheduled:
                    return
                self.scheduled = True
            self.loop.call_soon_threadsafe(self.drain)

        return settle

    def drain(self) -> None:
        with self.lock:
            self.scheduled = False
        done = self.done
        while done:
            future, result, error = done.popleft()
            if future.done():
                continue
            if error == _SUCCESS:
                future.set_result(result)
            else:
                future.set_exception(_Unavailable(error))


class _Unavailable(Exception):
    def __init__(self, reason: int) -> None:
        super().__init__(f"PySyncObj refused the command (FAIL_REASON {reason})")


def _error(status: int, code: str, message: str) -> Response:
    body = json.dumps({"error": code, "message": message}).encode()
    return Response(body, status_code=status, media_type="application/json")


def build_app(self_addr: str, partners: Sequence[str], conf_kwargs: dict[str, Any]) -> Starlette:
    """The node's ASGI app; the :class:`KVStore` starts with the app's lifespan.

    Args:
        self_addr: this node's PySyncObj address, ``host:port``.
        partners: the other nodes' addresses.
        conf_kwargs: ``SyncObjConf`` settings.
    """
    state: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state["bridge"] = _Bridge(asyncio.get_running_loop())
        store = KVStore(self_addr, partners, SyncObjConf(**conf_kwargs))
        state["store"] = store
        try:
            yield
        finally:
            store.destroy()

    async def replicate(method: Callable[..., Any], *args: bytes) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        method(*args, callback=state["bridge"].callback(future))
        return await asyncio.wait_for(future, _TIMEOUT_S)

    async def kv(request: Request) -> Response:
        key = request.path_params["key"].encode()
        store: KVStore = state["store"]
        try:
            if request.method == "PUT":
                await replicate(store.put, key, await request.body())
                return Response(status_code=204)
            if request.query_params.get("consistency") == "stale":
                value = store.data.get(key)
            else:
                value = await replicate(store.get, key)
        except _Unavailable as exc:
            return _error(503, "unavailable", str(exc))
        except TimeoutError:
            return _error(504, "timeout", "no commit within 5 s")
        if value is None:
            return _error(404, "not_found", "no such key")
        return Response(value, media_type=_OCTETS)

    def status_of() -> dict[str, Any]:
        store: KVStore | None = state.get("store")
        if store is None:
            return {"role": "starting", "leader": None, "ready": False, "has_quorum": False}
        status = store.getStatus()
        leader = status.get("leader")
        return {
            "role": _ROLES.get(status.get("state", -1), "unknown"),
            "leader": None if leader is None else str(leader),
            "ready": bool(store.isReady()),
            "has_quorum": bool(status.get("has_quorum")),
        }

    async def status(request: Request) -> Response:
        return Response(json.dumps(status_of()), media_type="application/json")

    async def readyz(request: Request) -> Response:
        info = status_of()
        ready = info["ready"] and info["leader"] is not None
        return Response(status_code=200 if ready else 503)

    return Starlette(
        routes=[
            Route("/v1/kv/{key:path}", kv, methods=["GET", "PUT"]),
            Route("/v1/status", status, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Run one node until ``SIGTERM``/``SIGINT``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--self", dest="self_addr", required=True, help="host:port for Raft")
    parser.add_argument("--partners", required=True, help="the other nodes, comma-separated")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True, help="the REST API's port")
    parser.add_argument("--append-period", type=float, default=0.003, help="seconds")
    parser.add_argument("--tick-period", type=float, default=0.003, help="seconds")
    parser.add_argument(
        "--no-batch", action="store_true", help="send AppendEntries per command (no batching)"
    )
    args = parser.parse_args(argv)
    conf = {
        "appendEntriesUseBatch": not args.no_batch,
        "appendEntriesPeriod": args.append_period,
        "autoTickPeriod": args.tick_period,
        "commandsWaitLeader": True,
        "dynamicMembershipChange": False,
    }
    partners = [p for p in args.partners.split(",") if p]
    app = build_app(args.self_addr, partners, conf)
    uvicorn.Server(
        uvicorn.Config(app, host=args.host, port=args.port, log_level="warning", access_log=False)
    ).run()


if __name__ == "__main__":
    main()
