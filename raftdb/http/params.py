"""Request parts: keys in the path, query strings, conditions, idempotency keys, bodies.

Each parser takes only what it reads (the ASGI scope, the headers, a header's
text) so that the Starlette handlers and the raw-ASGI fast path
(:mod:`raftdb.http.fast_path`) share them and refuse the same requests with
the same words. They raise :mod:`raftdb.node.errors` exceptions;
:func:`raftdb.http.errors.error_response` turns those into answers.

Bodies are read under two limits that a slow or hostile client cannot
stretch: a size (``Content-Length`` checked before reading, then the bytes
counted as they arrive, never buffered past the limit) and a time,
``body_timeout_s``, from the first wait for the body to its last byte
(:func:`receive_body`). Either answer closes the connection
(``raftdb.http.errors``): the rest of the body is never read.
"""

from __future__ import annotations

import asyncio
import json
import re
from asyncio import current_task, get_running_loop
from collections.abc import Awaitable
from time import monotonic
from typing import Any, Final, TypeVar
from urllib.parse import unquote_to_bytes

from starlette.convertors import Convertor, register_url_convertor
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request
from starlette.types import Message, Receive, Scope

from raftdb.node.errors import BadRequestError, RequestTimeoutError, TooLargeError
from raftdb.node.handle import Consistency

__all__ = [
    "DEFAULT_WAIT_S",
    "KEY_CONVERTOR",
    "MAX_ID",
    "MAX_IDEMPOTENCY_KEY_BYTES",
    "MAX_WAIT_S",
    "check_content_length",
    "check_key",
    "parse_blocking",
    "parse_bool",
    "parse_conditions",
    "parse_consistency",
    "parse_id",
    "parse_idempotency_key",
    "parse_index",
    "parse_query",
    "parse_wait",
    "path_key",
    "raw_path_key",
    "read_body",
    "read_json_object",
    "receive_body",
    "route_path",
    "show_key",
    "until_disconnected",
]

_T = TypeVar("_T")

#: Longest ``Idempotency-Key`` header (it becomes the client id of a session, see raftdb.kv).
MAX_IDEMPOTENCY_KEY_BYTES: Final = 128

#: Longest ``wait`` of a blocking read or a lock: Consul's bound (a longer one is cut to it).
MAX_WAIT_S: Final = 600.0
#: The ``wait`` of a blocking read or a lock that gives none: Consul's default.
DEFAULT_WAIT_S: Final = 300.0
#: Largest index or id accepted (a log index is a 64-bit count).
MAX_ID: Final = 2**63 - 1
_DURATION: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m)?")
_UNIT_S: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}

#: Longest pause between two checks of the body deadlines (see :class:`_BodyWatch`).
_SWEEP_MAX_S: Final = 1.0
#: The deadline value of a read the sweeper has cancelled.
_TIMED_OUT: Final = -1.0


class _KeyConvertor(Convertor[str]):
    """``{key:anykey}``: the rest of the path, whatever it holds.

    Starlette's ``path`` convertor (``.*``) stops at a newline, so a key holding
    byte 0x0A (``%0A``) matched no route at all (a 404 "no endpoint"). Keys may
    be any bytes; :func:`path_key` reads them from the raw path.
    """

    regex = "[\\s\\S]*"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


#: The name of the route convertor for keys (``{key:anykey}``), registered at import.
KEY_CONVERTOR: Final = "anykey"
register_url_convertor(KEY_CONVERTOR, _KeyConvertor())


def show_key(key: bytes) -> str:
    """A key for an error message: quoted text, undecodable bytes escaped, long keys cut."""
    text = key[:64].decode("utf-8", "backslashreplace")
    return repr(text) + ("…" if len(key) > 64 else "")


def route_path(scope: Scope) -> str:
    """The path as Starlette's router matches it: ``path`` without the ``root_path``.

    The ``root_path`` is cut only where it ends a segment (``/api`` from
    ``/api/k`` or ``/api``, not from ``/apix``); a path outside it is matched
    whole. This is what Starlette does (its private ``get_route_path``),
    written out so that the fast path, which must route exactly as it does,
    does not depend on a private name; ``tests/http/test_params.py`` pins it.
    """
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if not root or not path.startswith(root):
        return path
    if len(path) == len(root):
        return ""
    return path[len(root) :] if path[len(root)] == "/" else path


def raw_path_key(scope: Scope, prefix: bytes) -> bytes | None:
    """The percent-decoded bytes after ``prefix`` in the raw path, unchecked.

    The raw path is decoded here (not the server's UTF-8 ``path``) so that a
    key may be any bytes (``%FF``) and may contain ``/`` (``%2F`` or plain).
    A ``root_path`` in front of ``prefix`` is skipped.

    Returns:
        ``None`` when the raw path does not start with ``prefix`` (or the
        server gave none): the router matched the decoded path only.
    """
    raw: bytes | None = scope.get("raw_path")
    if raw is None:
        return None
    root = scope.get("root_path", "")
    if root and raw.startswith(root.encode("latin-1") + prefix):
        raw = raw[len(root) :]
    if not raw.startswith(prefix):
        return None
    return unquote_to_bytes(raw[len(prefix) :])


def check_key(key: bytes, max_key_bytes: int) -> bytes:
    """``key``, once it is known to be neither empty nor over ``max_key_bytes``.

    Raises:
        BadRequestError: the key is empty.
        TooLargeError: the key is over ``max_key_bytes``.
    """
    if not key:
        raise BadRequestError("the key is empty: give it in the path, as /v1/kv/<key>")
    if len(key) > max_key_bytes:
        raise TooLargeError(
            f"the key is {len(key)} bytes, over the limit of {max_key_bytes} (max_key_bytes)"
        )
    return key


def path_key(scope: Scope, prefix: bytes, max_key_bytes: int) -> bytes:
    """The key after ``prefix`` in the request path: percent-decoded bytes.

    From the raw path (:func:`raw_path_key`), else from the route's
    ``{key}`` parameter; then :func:`check_key`.

    Raises:
        BadRequestError: the key is empty.
        TooLargeError: the key is over ``max_key_bytes``.
    """
    key = raw_path_key(scope, prefix)
    if key is None:
        key = scope["path_params"]["key"].encode("utf-8", "surrogateescape")
    return check_key(key, max_key_bytes)


def parse_query(scope: Scope, allowed: frozenset[str]) -> dict[str, bytes]:
    """The query string's parameters (percent-decoded bytes), each at most once.

    Raises:
        BadRequestError: a parameter not in ``allowed``, or one given twice.
    """
    query: bytes = scope.get("query_string", b"")
    if not query:
        return {}
    found: dict[str, bytes] = {}
    for part in query.split(b"&"):
        if not part:
            continue
        raw_name, _, raw_value = part.partition(b"=")
        name = unquote_to_bytes(raw_name.replace(b"+", b" ")).decode("utf-8", "replace")
        if name not in allowed:
            known = ", ".join(sorted(allowed)) or "none"
            raise BadRequestError(f"unknown query parameter {name!r} (accepted here: {known})")
        if name in found:
            raise BadRequestError(f"query parameter {name!r} is given more than once")
        found[name] = unquote_to_bytes(raw_value.replace(b"+", b" "))
    return found


def parse_consistency(value: bytes | None) -> Consistency:
    """``linearizable`` (default) or ``stale``.

    Raises:
        BadRequestError: any other value.
    """
    if value is None or value == b"linearizable":
        return "linearizable"
    if value == b"stale":
        return "stale"
    shown = value.decode("utf-8", "replace")
    raise BadRequestError(f"consistency must be 'linearizable' or 'stale' (got {shown!r})")


def parse_bool(name: str, value: bytes | None) -> bool:
    """A boolean query parameter: absent, ``false`` or ``0``; or ``true``, ``1`` or empty.

    Raises:
        BadRequestError: any other value.
    """
    if value is None or value in (b"false", b"0"):
        return False
    if value in (b"true", b"1", b""):
        return True
    shown = value.decode("utf-8", "replace")
    raise BadRequestError(f"{name} must be 'true' or 'false' (got {shown!r})")


def parse_index(name: str, value: bytes | str) -> int:
    """A log index given as decimal digits (a query parameter or a header): 0 or more.

    Raises:
        BadRequestError: not decimal digits, or beyond a 64-bit index.
    """
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    text = text.strip()
    if not text.isascii() or not text.isdigit() or int(text) > MAX_ID:
        raise BadRequestError(f"{name} must be a log index, an integer ≥ 0 (got {text!r})")
    return int(text)


def parse_id(name: str, value: object) -> int:
    """A lease id: decimal digits in a string (as the API writes ids) or a JSON integer, ≥ 1.

    Raises:
        BadRequestError: anything else (a bool, a float, a negative or zero id, not digits).
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if 1 <= value <= MAX_ID:
            return value
    elif isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit() and 1 <= int(text) <= MAX_ID:
            return int(text)
    raise BadRequestError(
        f'{name} must be a lease id, decimal digits such as "7" (ids are ≥ 1; got {value!r})'
    )


def parse_wait(value: bytes | None) -> float:
    """``wait`` as Consul spells it: ``30s``, ``500ms``, ``5m`` or a number of seconds.

    Absent: :data:`DEFAULT_WAIT_S`; beyond :data:`MAX_WAIT_S`, cut to it (as
    Consul does: a blocking read may always answer before its wait ends).

    Raises:
        BadRequestError: not a duration.
    """
    if value is None:
        return DEFAULT_WAIT_S
    text = value.decode("utf-8", "replace")
    match = _DURATION.fullmatch(text)
    if match is None or not text.isascii():
        raise BadRequestError(
            f"wait must be a duration such as 30s, 500ms or 5m (at most 10m; got {text!r})"
        )
    return min(float(match[1]) * _UNIT_S[match[2]], MAX_WAIT_S)


def parse_blocking(query: dict[str, bytes]) -> tuple[int, float] | None:
    """``(wait_index, wait)`` of a blocking read, or ``None`` when it is not one.

    Raises:
        BadRequestError: a bad ``wait_index`` or ``wait``, or ``wait`` without ``wait_index``.
    """
    raw_index = query.get("wait_index")
    if raw_index is None:
        if "wait" in query:
            raise BadRequestError(
                "wait needs wait_index: a blocking read waits for a change after that index"
            )
        return None
    return parse_index("wait_index", raw_index), parse_wait(query.get("wait"))


async def _disconnect(receive: Receive) -> None:
    """Return when the client has gone away (what is left of a body is dropped)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def until_disconnected(receive: Receive, waiting: Awaitable[_T]) -> _T:
    """``await waiting``, unless the client goes away first: then it is cancelled.

    For the requests that wait long (blocking reads, locks): a client that
    gives up frees what its request held at once, not when its wait would end.
    ``waiting`` has finished (its clean-up included) when this returns or raises.
    Call it once the request's body, if any, has been read.

    Raises:
        ClientDisconnect: the client went away first.
    """
    task = asyncio.ensure_future(waiting)
    gone = asyncio.ensure_future(_disconnect(receive))
    try:
        await asyncio.wait((task, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not task.done():
            task.cancel()
            # Let it clean up (a lock deletes the key it made) before going on.
            await asyncio.gather(task, return_exceptions=True)
    if task.cancelled():
        raise ClientDisconnect()
    return task.result()


def _parse_etag(text: str, header: str) -> int:
    tag = text.strip()
    if tag.startswith('"') and tag.endswith('"') and len(tag) >= 2:
        tag = tag[1:-1]
    if not tag.isdigit() or not tag.isascii():
        raise BadRequestError(
            f'{header} must be one ETag as the API gives them, "<index>" (got {text!r})'
        )
    index = int(tag)
    if index < 1:
        raise BadRequestError(
            f'{header}: "0" matches nothing; use If-None-Match: * to create a key only if absent'
        )
    return index


def parse_conditions(headers: Headers, *, allow_none_match: bool) -> tuple[int | None, bool]:
    """``(if_match, if_none_match)`` from the conditional request headers.

    ``If-Match: "<index>"`` (quotes optional) is a compare-and-set on the key's
    ``mod_index``; ``If-None-Match: *`` makes a put create-only.

    Raises:
        BadRequestError: a malformed header, both headers, or an unsupported form.
    """
    match = headers.get("if-match")
    none_match = headers.get("if-none-match")
    if match is None and none_match is None:
        return None, False
    if match is not None and none_match is not None:
        raise BadRequestError("give If-Match or If-None-Match, not both")
    if match is not None:
        if match.strip() == "*":
            raise BadRequestError(
                'If-Match: * is not supported; give the key\'s ETag, If-Match: "<index>"'
            )
        return _parse_etag(match, "If-Match"), False
    assert none_match is not None
    if not allow_none_match:
        raise BadRequestError("If-None-Match applies to PUT only (If-None-Match: *)")
    if none_match.strip() != "*":
        raise BadRequestError(
            f"If-None-Match supports only '*' (create the key only if absent), got {none_match!r}"
        )
    return None, True


def parse_idempotency_key(headers: Headers) -> bytes | None:
    """The ``Idempotency-Key`` header as bytes, or ``None``.

    Raises:
        BadRequestError: empty or longer than :data:`MAX_IDEMPOTENCY_KEY_BYTES`.
    """
    value = headers.get("idempotency-key")
    if value is None:
        return None
    key = value.strip().encode("latin-1")
    if not key or len(key) > MAX_IDEMPOTENCY_KEY_BYTES:
        raise BadRequestError(
            f"Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} bytes (got {len(key)})"
        )
    return key


def check_content_length(length: str | None, limit: int, what: str, setting: str) -> None:
    """Refuse a body whose ``Content-Length`` is over ``limit``, before reading it.

    Args:
        length: the ``Content-Length`` header (``None``: not given).
        limit, what, setting: as for :func:`read_body`.

    Raises:
        BadRequestError: a malformed ``Content-Length``.
        TooLargeError: over ``limit``.
    """
    if length is not None:
        if not (length.isascii() and length.isdigit()):
            raise BadRequestError(f"Content-Length must be a number of bytes (got {length!r})")
        if int(length) > limit:
            raise TooLargeError(
                f"the {what} is {length} bytes, over the limit of {limit} ({setting})"
            )


class _BodyWatch:
    """The body reads in progress on one event loop, and their deadlines.

    A timer per request (``asyncio.timeout``, ``loop.call_at``) cost a few
    microseconds per ``PUT``, about as much as the fast path's own work. Here
    a read costs a dictionary insert and pop; one task per loop, alive while
    reads are in progress, wakes every tenth of the shortest body timeout (at
    most every :data:`_SWEEP_MAX_S`) and cancels the reads past their deadline,
    which :func:`receive_body` turns into ``408``. A sweep walks the reads in
    progress, at most one per open connection; a late read is refused at most
    one sweep interval after its deadline.
    """

    __slots__ = ("interval", "loop", "reading", "sweeper")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        # task -> deadline (monotonic()), or _TIMED_OUT once cancelled for being late
        self.reading: dict[asyncio.Task[Any], float] = {}
        self.interval = _SWEEP_MAX_S
        self.sweeper: asyncio.Task[None] | None = None

    def watch(self, time_limit: float) -> None:
        """Sweep often enough for ``time_limit``, and start sweeping if idle."""
        self.interval = min(self.interval, time_limit / 10)
        if self.sweeper is None:
            self.sweeper = self.loop.create_task(self._sweep(), name="raftdb body deadlines")

    async def _sweep(self) -> None:
        reading = self.reading
        try:
            while reading:
                await asyncio.sleep(self.interval)
                now = monotonic()
                late = [t for t, deadline in reading.items() if 0 <= deadline <= now]
                for task in late:
                    reading[task] = _TIMED_OUT
                    task.cancel()
        finally:
            self.sweeper = None
            if _WATCHES.get(self.loop) is self:
                del _WATCHES[self.loop]  # idle (or the loop is closing): made again on use


#: The body watch of each loop that is reading bodies (a server has one loop).
_WATCHES: dict[asyncio.AbstractEventLoop, _BodyWatch] = {}


async def receive_body(
    receive: Receive, limit: int, what: str, setting: str, *, time_limit: float
) -> bytes:
    """The body's bytes from ``receive``, counted as they arrive (see :func:`read_body`),
    all within ``time_limit`` seconds.

    The time counts from this call, the first wait for the body, to its last
    byte: a client trickling a byte at a time cannot hold the request (and its
    connection) open for longer.

    Raises:
        TooLargeError: over ``limit``.
        RequestTimeoutError: the body took longer than ``time_limit`` (``body_timeout_s``).
        ClientDisconnect: the client went away.
    """
    # (Names imported, not looked up in their modules: this runs for every PUT.)
    loop = get_running_loop()
    watch = _WATCHES.get(loop)
    if watch is None:
        watch = _WATCHES[loop] = _BodyWatch(loop)
    task = current_task(loop)
    assert task is not None
    reading = watch.reading
    reading[task] = monotonic() + time_limit
    if watch.sweeper is None or time_limit < 10 * watch.interval:
        watch.watch(time_limit)
    chunks: list[bytes] = []
    size = 0
    try:
        while True:
            message: Message = await receive()
            if message["type"] != "http.request":
                raise ClientDisconnect()
            chunk: bytes = message.get("body", b"")
            if chunk:
                size += len(chunk)
                if size > limit:
                    raise TooLargeError(
                        f"the {what} is over the limit of {limit} bytes ({setting}); "
                        f"{size} bytes were sent before the server stopped reading"
                    )
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
    except asyncio.CancelledError:
        if reading.get(task) != _TIMED_OUT or task.uncancel() > 0:
            raise  # cancelled by someone else (too)
        raise RequestTimeoutError(
            f"the {what} did not arrive within {time_limit:g}s (body_timeout_s)"
        ) from None
    finally:
        del reading[task]
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def read_body(
    request: Request, limit: int, what: str, setting: str, *, time_limit: float
) -> bytes:
    """The request body, refusing more than ``limit`` bytes without buffering it.

    ``Content-Length`` is checked before reading (:func:`check_content_length`);
    the bytes are counted as they arrive too (:func:`receive_body`), so a
    chunked body cannot get past the limit either.

    Args:
        request: the request.
        limit: the most bytes accepted.
        what: what the body is, for the message ("value", "request body").
        setting: the config key behind ``limit``, for the message.
        time_limit: the most seconds the body may take (``body_timeout_s``);
            required, so that no route reads a body without one.

    Raises:
        BadRequestError: a malformed ``Content-Length``.
        TooLargeError: over ``limit``.
        RequestTimeoutError: the body took longer than ``time_limit``.
        ClientDisconnect: the client went away.
    """
    check_content_length(request.headers.get("content-length"), limit, what, setting)
    return await receive_body(request.receive, limit, what, setting, time_limit=time_limit)


async def read_json_object(request: Request, limit: int, *, time_limit: float) -> dict[str, Any]:
    """The body as a JSON object (read as :func:`read_body` reads it).

    Raises:
        BadRequestError: not UTF-8 JSON, or not an object.
        TooLargeError: over ``limit`` bytes (``max_request_bytes``).
        RequestTimeoutError: over ``time_limit`` seconds (``body_timeout_s``).
    """
    what, setting = "request body", "max_request_bytes"
    body = await read_body(request, limit, what, setting, time_limit=time_limit)
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise BadRequestError(f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequestError(f"the body must be a JSON object, not {type(data).__name__}")
    return data
