"""Watch clients for ``benchmarks/test_watch_bench.py``, in a process of their own.

``python benchmarks/watch_clients.py PORT WATCHERS PREFIX SINCE EVENTS``

Opens ``WATCHERS`` connections to ``GET /v1/watch?prefix=PREFIX&since=SINCE``
on 127.0.0.1:``PORT``, prints ``{"ready": WATCHERS}`` once every one has its
``200`` headers (the node has subscribed them all), then reads each stream
until it has seen ``EVENTS`` ``put`` events, or a ``closed`` event (the node
ended it, e.g. ``watcher_too_slow``). Then prints
``{"events": [...], "dropped": n, "last": t}``: the events each watcher got,
how many were ended by the node, and the ``time.monotonic()`` at which the
last watcher got its last event (system-wide on Linux, so the benchmark
compares it with its own clock).

The events are counted, not parsed: the benchmark measures the server's
stream, and a client that decoded JSON here would share the machine's two
cores with it for nothing.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from urllib.parse import quote

_PUT = b"\nevent: put\n"
_CLOSED = b"\nevent: closed\n"
# Bytes kept from the previous read, so that a marker split by a read is found,
# and fewer than a marker, so that none is counted twice. (A ``closed`` marker
# split so that this misses it still ends the stream: the server closes it.)
_KEEP = len(_PUT) - 1
_HEADERS_WITHIN = 30.0


async def _open(
    port: int, prefix: str, since: int
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    path = f"/v1/watch?prefix={quote(prefix, safe='')}&since={since}"
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _HEADERS_WITHIN)
    status = head.split(b"\r\n", 1)[0]
    if b" 200 " not in status + b" ":
        raise SystemExit(f"watch answered {status.decode(errors='replace')}")
    return reader, writer


async def _follow(reader: asyncio.StreamReader, wanted: int) -> tuple[int, bool, float]:
    """Count put events until ``wanted`` (or a closed event): (count, closed, when)."""
    got = 0
    tail = b"\n"  # the headers' end: an event's first line follows a newline
    while got < wanted:
        chunk = await reader.read(65536)
        if not chunk:
            return got, True, time.monotonic()
        data = tail + chunk
        got += data.count(_PUT)
        if _CLOSED in data:
            return got, True, time.monotonic()
        tail = data[-_KEEP:]
    return got, False, time.monotonic()


async def main(port: int, watchers: int, prefix: str, since: int, wanted: int) -> None:
    streams = await asyncio.gather(*(_open(port, prefix, since) for _ in range(watchers)))
    print(json.dumps({"ready": watchers}), flush=True)
    results = await asyncio.gather(*(_follow(reader, wanted) for reader, _ in streams))
    for _, writer in streams:
        writer.close()
    print(
        json.dumps(
            {
                "events": [got for got, _, _ in results],
                "dropped": sum(1 for _, closed, _ in results if closed),
                "last": max(when for _, _, when in results),
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    if len(sys.argv) != 6:
        raise SystemExit(__doc__)
    port, count, prefix, since, wanted = sys.argv[1:]
    asyncio.run(main(int(port), int(count), prefix, int(since), int(wanted)))
