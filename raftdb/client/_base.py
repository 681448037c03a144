"""What the sync and async clients share besides the calls: settings, TLS, the view."""

from __future__ import annotations

import ssl
from collections.abc import Sequence

import httpx

from raftdb.client._core import Answer, ClusterView, Failure, Outcome

#: Default timeout of one call (every attempt and wait of it together), seconds.
DEFAULT_TIMEOUT = 10.0
#: Default timeout of one connection attempt: short, so a dead member is passed quickly.
DEFAULT_CONNECT_TIMEOUT = 2.0


class ClientBase:
    """Settings of a client: endpoints, timeouts, bearer token and TLS files."""

    def __init__(
        self,
        endpoints: str | Sequence[str] = "http://127.0.0.1:12380",
        *,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        token: str | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = [e.strip() for e in endpoints.split(",") if e.strip()]
        if timeout <= 0 or connect_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if key_file is not None and cert_file is None:
            raise ValueError("key_file needs cert_file")
        self.view = ClusterView(endpoints)
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.token = token
        self._verify: ssl.SSLContext | bool = True
        if ca_file is not None or cert_file is not None:
            ctx = ssl.create_default_context(cafile=ca_file)
            if cert_file is not None:
                ctx.load_cert_chain(cert_file, key_file)
            self._verify = ctx
        self._open()

    def _open(self) -> None:
        """Make the HTTP connection pool (each client's own kind)."""
        raise NotImplementedError

    @property
    def endpoints(self) -> list[str]:
        """The endpoints, as given (without a trailing ``/``)."""
        return list(self.view.endpoints)

    def _timeout(self, timeout: float | None) -> float:
        return self.timeout if timeout is None else timeout

    def _attempt_timeout(self, seconds: float) -> httpx.Timeout:
        return httpx.Timeout(seconds, connect=min(seconds, self.connect_timeout))


def failure(error: httpx.TransportError) -> Outcome:
    """A transport error as an outcome: connect errors are never sent."""
    sent = not isinstance(error, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    return Failure(error, sent)


def answer(r: httpx.Response) -> Answer:
    """An httpx response (read) as an outcome."""
    return Answer(r.status_code, r.headers, r.content)
