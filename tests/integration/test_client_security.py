"""Client-side security against real one-node servers: HTTPS, client certificates, tokens,
rotation, and 10,000 connections at once.

Each test starts its node with :class:`ProcessCluster` (``raftdb serve``, or
plain uvicorn with its ``--ssl-*`` flags) and polls it with its own client,
since an HTTPS node does not answer the harness's plain-HTTP probe.
"""

from __future__ import annotations

import asyncio
import datetime
import resource
import ssl
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from raftdb.http.tokens import hash_token
from tests.integration.conftest import ClusterFactory
from tests.integration.harness import HTTP_TIMEOUT, START_TIMEOUT, ProcessCluster, wait_until


def _wait_ready(cluster: ProcessCluster, client: httpx.Client, base: str) -> None:
    node = cluster.nodes[1]

    def ready() -> bool:
        if not node.running:
            raise AssertionError(f"the node exited:\n{cluster.log_tail(1)}")
        return client.get(f"{base}/readyz").status_code == 200

    wait_until("the node to be ready", ready, START_TIMEOUT, on_timeout=lambda: cluster.log_tail(1))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A CA, the server's certificate, and client certificates: good, expired, other CA."""
    root = tmp_path_factory.mktemp("pki")
    ca, other_ca = trustme.CA(), trustme.CA()
    files: dict[str, Any] = {"ca": ca, "dir": root}
    server = ca.issue_cert("127.0.0.1", "localhost")
    server.cert_chain_pems[0].write_to_path(root / "server.pem")
    server.private_key_pem.write_to_path(root / "server.key")
    ca.cert_pem.write_to_path(root / "ca.pem")
    past = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
    clients = {
        "good": ca.issue_cert("client.example"),
        "expired": ca.issue_cert(
            "client.example", not_before=past, not_after=past.replace(month=2)
        ),
        "other-ca": other_ca.issue_cert("client.example"),
    }
    for name, cert in clients.items():
        cert.private_key_and_cert_chain_pem.write_to_path(root / f"client-{name}.pem")
    return files


def _tls_settings(pki: dict[str, Any], client_ca: bool) -> dict[str, Any]:
    root: Path = pki["dir"]
    settings: dict[str, Any] = {
        "tls_cert_file": str(root / "server.pem"),
        "tls_key_file": str(root / "server.key"),
    }
    if client_ca:
        settings["tls_client_ca_file"] = str(root / "ca.pem")
    return settings


def _https_client(pki: dict[str, Any], cert: str | None = None) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(pki["dir"] / "ca.pem"))
    if cert is not None:
        context.load_cert_chain(str(pki["dir"] / f"client-{cert}.pem"))
    return httpx.Client(verify=context, timeout=HTTP_TIMEOUT)


def _base(cluster: ProcessCluster, scheme: str = "https") -> str:
    return f"{scheme}://127.0.0.1:{cluster.nodes[1].api_port}"


@pytest.mark.deadline(90)
def test_https_from_raftdb_serve(cluster_factory: ClusterFactory, pki: dict[str, Any]) -> None:
    cluster = cluster_factory(1)
    cluster.start(1, wait=False, **_tls_settings(pki, client_ca=False))
    with _https_client(pki) as client:
        _wait_ready(cluster, client, _base(cluster))
        assert client.put(f"{_base(cluster)}/v1/kv/k", content=b"v").status_code == 204
        assert client.get(f"{_base(cluster)}/k").content == b"v"
    with httpx.Client(timeout=HTTP_TIMEOUT) as plain, pytest.raises(httpx.TransportError):
        plain.get(f"{_base(cluster, 'http')}/healthz")  # plain HTTP to a TLS port
    with httpx.Client(timeout=HTTP_TIMEOUT) as unverified, pytest.raises(httpx.ConnectError):
        unverified.get(f"{_base(cluster)}/healthz")  # the system CAs do not know this server


@pytest.mark.deadline(90)
def test_client_certificates(cluster_factory: ClusterFactory, pki: dict[str, Any]) -> None:
    cluster = cluster_factory(1)
    cluster.start(1, wait=False, **_tls_settings(pki, client_ca=True))
    base = _base(cluster)
    with _https_client(pki, "good") as client:
        _wait_ready(cluster, client, base)
        assert client.put(f"{base}/v1/kv/k", content=b"v").status_code == 204
    for cert in (None, "expired", "other-ca"):
        with _https_client(pki, cert) as client, pytest.raises(httpx.TransportError):
            client.get(f"{base}/v1/kv/k")
    with _https_client(pki, "good") as client:  # the refusals did not hurt the node
        assert client.get(f"{base}/v1/kv/k").content == b"v"


@pytest.mark.deadline(90)
def test_plain_uvicorn_takes_its_own_ssl_flags(
    cluster_factory: ClusterFactory, pki: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``uvicorn raftdb.app:app --ssl-certfile … --ssl-keyfile …`` serves HTTPS; with the
    config's tls_* keys but without the flags, every plain request is refused."""
    cluster = cluster_factory(1, launcher="toml")
    node = cluster.nodes[1]
    root: Path = pki["dir"]
    original = cluster.command

    def with_ssl(*args: Any, **kwargs: Any) -> tuple[list[str], dict[str, str]]:
        argv, env = original(*args, **kwargs)
        return [
            *argv,
            "--ssl-certfile",
            str(root / "server.pem"),
            "--ssl-keyfile",
            str(root / "server.key"),
        ], env

    monkeypatch.setattr(cluster, "command", with_ssl)
    cluster.start(1, wait=False, **_tls_settings(pki, client_ca=False))
    with _https_client(pki) as client:
        _wait_ready(cluster, client, _base(cluster))
        assert client.get(f"{_base(cluster)}/v1/status").json()["id"] == 1
    cluster.stop(1)
    monkeypatch.setattr(cluster, "command", original)
    cluster.start(1, wait=False, **_tls_settings(pki, client_ca=False))
    with httpx.Client(timeout=HTTP_TIMEOUT) as plain:

        def refused() -> bool:
            response = plain.get(f"{_base(cluster, 'http')}/v1/kv/k")
            return response.status_code == 400 and response.json()["error"] == "https_required"

        wait_until("plain HTTP to be refused", refused, START_TIMEOUT)
    assert "only raftdb serve gives it to the server" in node.log_path.read_text()


@pytest.mark.deadline(90)
def test_tokens_and_rotation_on_a_real_node(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(1)
    tokens = cluster.root / "tokens.toml"
    entry = '[[token]]\nname = "{name}"\nsha256 = "{digest}"\nrole = "{role}"\n'
    tokens.write_text(entry.format(name="ops", digest=hash_token("old-token"), role="admin"))
    cluster.start(1, wait=True, tokens_file=str(tokens))  # /readyz is open
    url = cluster.url(1, "/v1/kv/k")
    old, new = {"authorization": "Bearer old-token"}, {"authorization": "Bearer new-token"}
    with httpx.Client(timeout=HTTP_TIMEOUT) as client:
        assert client.put(url, content=b"v").status_code == 401
        assert client.put(url, content=b"v", headers=old).status_code == 204
        assert client.get(cluster.url(1, "/k"), headers=old).content == b"v"
        rotated = cluster.root / "tokens.new"
        rotated.write_text(entry.format(name="ops", digest=hash_token("new-token"), role="read"))
        rotated.replace(tokens)  # atomically, as the docs advise
        wait_until("the new token", lambda: client.get(url, headers=new).status_code == 200, 15)
        assert client.get(url, headers=old).status_code == 401
        assert client.put(url, content=b"w", headers=new).status_code == 403
    log = cluster.nodes[1].log_path.read_text()
    assert "old-token" not in log
    assert "new-token" not in log
    assert "tokens_file" in log
    assert "re-read" in log


CONNECTIONS = 10_000


def _raise_nofile(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= needed:
        return
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"needs {needed} open files; the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


async def _storm(port: int, count: int) -> Counter[str]:
    """Open ``count`` connections, all at once, then send a request on each; tally the answers."""
    outcomes: Counter[str] = Counter()
    limit = asyncio.Semaphore(1000)  # connects in flight (the listen backlog is finite)

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        async with limit:
            try:
                return await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 30)
            except (TimeoutError, OSError):
                outcomes["connect failed"] += 1
                return None

    opened = await asyncio.gather(*(connect() for _ in range(count)))
    outcomes["open at once"] = sum(1 for c in opened if c is not None)

    async def ask(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            answer = await asyncio.wait_for(reader.read(), 60)
            outcomes[answer[:12].decode("latin-1") or "closed"] += 1
        except (TimeoutError, OSError) as exc:
            outcomes[f"closed ({type(exc).__name__})"] += 1
        finally:
            writer.close()

    await asyncio.gather(*(ask(*c) for c in opened if c is not None))
    return outcomes


@pytest.mark.deadline(240)
def test_ten_thousand_connections(cluster_factory: ClusterFactory) -> None:
    _raise_nofile(CONNECTIONS + 500)
    cluster = cluster_factory(1)
    # The default max_connections (1000) and a header deadline that outlasts the opening.
    cluster.start(1, header_timeout_s=120)
    outcomes = asyncio.run(_storm(cluster.nodes[1].api_port, CONNECTIONS))
    print(dict(outcomes), file=sys.stderr)
    answered = {k: v for k, v in outcomes.items() if k != "open at once"}
    assert sum(answered.values()) == CONNECTIONS
    allowed = {"HTTP/1.1 200", "HTTP/1.1 503", "closed", "connect failed"}
    assert set(answered) <= allowed | {k for k in answered if k.startswith("closed (")}
    assert outcomes["HTTP/1.1 503"] > 0  # the limit answered, rather than the node falling over
    assert cluster.nodes[1].running
    with httpx.Client(timeout=HTTP_TIMEOUT) as client:
        assert client.get(cluster.url(1, "/healthz")).status_code == 200
        assert client.put(cluster.url(1, "/v1/kv/after"), content=b"ok").status_code == 204
