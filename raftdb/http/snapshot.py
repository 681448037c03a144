"""``GET /v1/snapshot``: a consistent snapshot of the whole state, streamed, for backups.

The answer's body is the node's snapshot stream, byte for byte (the format of
:mod:`raftdb.kv.snapshot`: magic, a header with index, term, conf state and
members, CRC-32-checked frames, counts at the end), so that a backup file is
exactly the body and needs nothing added to be checked or restored. It is
taken after a linearizable read point (:meth:`NodeHandle.snapshot`): every
write acknowledged before the request is in it. The header's facts are also
in the answer's headers, for whoever does not parse the stream::

    Content-Type: application/octet-stream
    X-Raftdb-Snapshot-Index: 1042
    X-Raftdb-Snapshot-Term: 3
    X-Raftdb-Snapshot-Members: 1=http://127.0.0.1:12379,2=http://127.0.0.1:22379,...
    X-Raftdb-Snapshot-Learners: 4          (only when there are learners)

The length is not known in advance (the state is read as it is sent), so the
body is chunked; a stream cut short (the node failed or stopped, its state
was replaced by a leader's snapshot while it was read) ends without its last
chunk, which an HTTP client reports, and the stream's own END frame is
missing, which a check reports. Everything that can fail before the stream
starts is an ordinary JSON error: ``503`` (no leader to confirm the read
point), ``429`` (the node streams as many backups as it may), ``507``.

The answer is a :class:`~raftdb.http.streaming.StreamAnswer`, as the watch's is: it listens
for the client's disconnect while the next chunk is read, and closes the
node's stream however it ends, releasing the state machine's view at once.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Send

from raftdb.config import NodeConfig
from raftdb.http.params import parse_query
from raftdb.http.spec import INT, PathItem, error, errors, header
from raftdb.http.streaming import StreamAnswer
from raftdb.kv.snapshot import SnapshotInfo
from raftdb.node.handle import Backup, NodeHandle

__all__ = [
    "OPENAPI_PATHS",
    "SNAPSHOT_TYPE",
    "SnapshotAnswer",
    "snapshot_headers",
    "snapshot_routes",
]

#: The content type of a snapshot.
SNAPSHOT_TYPE: Final = "application/octet-stream"
_NO_PARAMS: Final = frozenset[str]()


def _url(url: str) -> str:
    """A peer URL as a header may carry it (``,`` and ``=`` separate members)."""
    return quote(url, safe=":/?#[]@!$&'()*+;%-._~")


def snapshot_headers(info: SnapshotInfo) -> dict[str, str]:
    """The answer's headers for a snapshot with header ``info``."""
    members = ",".join(f"{node_id}={_url(url)}" for node_id, url in sorted(info.members.items()))
    headers = {
        "content-type": SNAPSHOT_TYPE,
        "cache-control": "no-store",
        "content-disposition": f'attachment; filename="raftdb-{info.index}.snap"',
        "x-raftdb-snapshot-index": str(info.index),
        "x-raftdb-snapshot-term": str(info.term),
        "x-raftdb-snapshot-members": members,
    }
    if info.conf_state.learners:
        headers["x-raftdb-snapshot-learners"] = ",".join(map(str, info.conf_state.learners))
    return headers


class SnapshotAnswer(StreamAnswer):
    """The answer to ``GET /v1/snapshot``: the node's stream, until it ends or the client goes.

    In every case the stream is closed before the answer returns. A stream
    that fails once the answer has started raises on (the app's guard logs
    it), so that the server cuts the connection: the client sees a truncated
    body, never a complete-looking one.
    """

    def __init__(self, backup: Backup, *, head: bool = False) -> None:
        super().__init__(headers=snapshot_headers(backup.info), head=head)
        self.backup = backup

    async def stream(self, send: Send) -> None:
        async for chunk in self.backup:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

    async def close(self) -> None:
        await self.backup.aclose()


# -- OpenAPI: what this route answers (raftdb.http.openapi gathers it) ----------------

#: The OpenAPI path items of :func:`snapshot_routes`.
OPENAPI_PATHS: Final[dict[str, PathItem]] = {
    "/v1/snapshot": {
        "get": {
            "summary": "A consistent snapshot of the whole state, for a backup (admin)",
            "description": "Taken after a linearizable read point: every write acknowledged "
            "before the request is in it. The body is the snapshot stream (docs/api.md, "
            "`raftdb.kv.snapshot`): save it as it is; `raftdb snapshot status FILE` checks "
            "it, `raftdb snapshot restore` builds members from it. Chunked: a body cut "
            "short means the snapshot failed (its END frame is missing). Needs the admin "
            "role when the node has a tokens_file.",
            "operationId": "snapshot",
            "tags": ["backup"],
            "responses": {
                "200": {
                    "description": "The snapshot stream.",
                    "headers": {
                        "X-Raftdb-Snapshot-Index": header(
                            "The last log index applied into the snapshot.", INT
                        ),
                        "X-Raftdb-Snapshot-Term": header("The term of that entry.", INT),
                        "X-Raftdb-Snapshot-Members": header(
                            "The membership at that index: `id=peer URL` pairs, "
                            "comma-separated, by id (URLs percent-encoded)."
                        ),
                        "X-Raftdb-Snapshot-Learners": header(
                            "The ids of the members that are learners, comma-separated "
                            "(absent when there are none)."
                        ),
                        "Content-Disposition": header(
                            '`attachment; filename="raftdb-<index>.snap"`.'
                        ),
                    },
                    "content": {SNAPSHOT_TYPE: {"schema": {"type": "string", "format": "binary"}}},
                },
                "429": error(
                    "429",
                    "This node streams as many backups as it may (`too_many_requests`): "
                    "retry later, or from another member.",
                ),
                **errors("400", "503"),
            },
        },
    },
}


def snapshot_routes(node: NodeHandle, config: NodeConfig) -> list[BaseRoute]:
    """The ``/v1/snapshot`` route."""

    async def snapshot(request: Request) -> Response:
        parse_query(request.scope, _NO_PARAMS)  # refuses any parameter
        backup = await node.snapshot()
        return SnapshotAnswer(backup, head=request.method == "HEAD")

    return [Route("/v1/snapshot", snapshot, methods=["GET"], name="snapshot")]
