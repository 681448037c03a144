"""The client over HTTPS with a client certificate, and with bearer tokens (one node)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trustme

from raftdb.client import Client, EndpointsUnavailableError, ForbiddenError, UnauthorizedError
from raftdb.http.tokens import hash_token
from tests.client.conftest import ClusterFactory
from tests.integration.harness import START_TIMEOUT, wait_until


@pytest.mark.deadline(40)
def test_tls_client_certificate_and_tokens(cluster_factory: ClusterFactory, tmp_path: Path) -> None:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    server.cert_chain_pems[0].write_to_path(tmp_path / "server.pem")
    server.private_key_pem.write_to_path(tmp_path / "server.key")
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    ca.issue_cert("client.example").private_key_and_cert_chain_pem.write_to_path(
        tmp_path / "client.pem"
    )
    tokens = tmp_path / "tokens.toml"
    entry = '[[token]]\nname = "{name}"\nsha256 = "{digest}"\nrole = "{role}"\n'
    tokens.write_text(
        entry.format(name="ops", digest=hash_token("admin-token"), role="admin")
        + entry.format(name="dash", digest=hash_token("read-token"), role="read")
    )
    cluster = cluster_factory(1)
    cluster.start(
        1,
        wait=False,
        tls_cert_file=str(tmp_path / "server.pem"),
        tls_key_file=str(tmp_path / "server.key"),
        tls_client_ca_file=str(tmp_path / "ca.pem"),
        tokens_file=str(tokens),
    )
    url = f"https://127.0.0.1:{cluster.nodes[1].api_port}"
    ca_file, cert_file = str(tmp_path / "ca.pem"), str(tmp_path / "client.pem")
    with Client(
        url, token="admin-token", timeout=5.0, ca_file=ca_file, cert_file=cert_file
    ) as admin:
        wait_until("the node to lead", lambda: admin.status().role == "leader", START_TIMEOUT)
        admin.put("sec/k", "v")
        got = admin.get("sec/k")
        assert got is not None
        assert got.value == b"v"
        assert admin.leases() == []
    with Client(
        url, token="read-token", timeout=5.0, ca_file=ca_file, cert_file=cert_file
    ) as reader:
        got = reader.get("sec/k")
        assert got is not None
        assert got.value == b"v"
        with pytest.raises(ForbiddenError):
            reader.put("sec/k", "w")
    with (
        Client(url, timeout=5.0, ca_file=ca_file, cert_file=cert_file) as anonymous,
        pytest.raises(UnauthorizedError),
    ):
        anonymous.get("sec/k")
    # Without the client certificate the handshake fails: no member can be reached.
    with (
        Client(url, token="admin-token", timeout=1.0, ca_file=str(tmp_path / "ca.pem")) as bare,
        pytest.raises(EndpointsUnavailableError),
    ):
        bare.get("sec/k")
