"""Fixtures: a FakeNode, a config with small limits, and a TestClient over the API."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from raftdb.config import NodeConfig
from raftdb.http.app import create_api
from tests.http.fake_node import FakeNode
from tests.http.helpers import TestClient

CLUSTER = ("http://127.0.0.1:12379", "http://127.0.0.1:22379", "http://127.0.0.1:32379")


@pytest.fixture
def config() -> NodeConfig:
    """Small limits, so the tests can cross them cheaply."""
    return NodeConfig(
        id=1,
        cluster=CLUSTER,
        max_key_bytes=64,
        max_value_bytes=1000,
        max_request_bytes=2000,
    )


@pytest.fixture
def node() -> FakeNode:
    return FakeNode()


@pytest.fixture
def client(node: FakeNode, config: NodeConfig) -> Iterator[TestClient]:
    with TestClient(create_api(node, config)) as test_client:
        yield test_client
