"""The Raft process of the evaluation: a real raftdb node, plus the local socket.

``python -m benchmarks.multicore.node_process --port P --socket S`` runs what
``raftdb serve`` runs (the node from ``RAFTDB_*``, its REST API under uvicorn
with the same settings), and, once the node has started, an
:class:`~benchmarks.multicore.ingest.IngestServer` on the Unix socket ``S`` in
the same event loop. Its own port serves the single-process case; the HTTP
workers (:mod:`benchmarks.multicore.front`) reach the same node through ``S``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import uvicorn

from benchmarks.multicore.ingest import IngestServer
from raftdb.app import RaftdbApp
from raftdb.config import NodeConfig, load_config
from raftdb.http.protocols import header_deadline_protocol


class _AppWithIngest(RaftdbApp):
    def __init__(self, config: NodeConfig, socket: Path) -> None:
        super().__init__(config, tune_gc=True)
        self.socket = socket
        self.ingest: IngestServer | None = None

    async def startup(self) -> None:
        await super().startup()
        assert self.node is not None
        self.ingest = IngestServer(self.node, self.socket)
        await self.ingest.start()

    async def shutdown(self) -> None:
        if self.ingest is not None:
            await self.ingest.stop()
        await super().shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--socket", type=Path, required=True)
    args = parser.parse_args()
    config = load_config(environ=os.environ)
    app = _AppWithIngest(config, args.socket)
    uvicorn.Server(
        uvicorn.Config(
            app,
            host="127.0.0.1",
            port=args.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            http=header_deadline_protocol(config.header_timeout_s),
            limit_concurrency=config.max_connections,
        )
    ).run()


if __name__ == "__main__":
    main()
