"""``POST /v1/txn``: the JSON shapes, every refusal, the results, idempotency."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from raftdb.config import NodeConfig
from raftdb.http.app import create_api
from raftdb.kv.txn import CmpOp, Compare, Target, Txn, TxnOp, TxnOpKind
from raftdb.node.errors import OutcomeUnknownError
from tests.http.conftest import CLUSTER
from tests.http.fake_node import FakeNode, fail_with, seed_changes
from tests.http.helpers import TestClient, error_of


def txn(client: TestClient, body: Any, **headers: str) -> Any:
    return client.post("/v1/txn", json=body, headers=headers)


class TestAnswers:
    def test_success_branch_results(self, client: TestClient, node: FakeNode) -> None:
        seed_changes(node, [(b"a", b"1"), (b"b", b"x"), (b"p/1", b"one"), (b"p/2", b"two")])
        response = txn(
            client,
            {
                "compare": [
                    {"key": "a", "target": "value", "op": "==", "value": "1"},
                    {"key": "b", "target": "mod_index", "op": "<", "value": 40},
                    {"key": "c", "target": "exists", "op": "==", "value": False},
                    {"key": "a", "target": "create_index", "op": ">", "value": 0},
                ],
                "success": [
                    {"op": "put", "key": "a", "value": "2"},
                    {"op": "delete", "key": "b"},
                    {"op": "get", "key": "a"},
                    {"op": "list", "prefix": "p/", "limit": 1},
                    {"op": "delete", "key": "never"},
                ],
                "failure": [{"op": "get", "key": "a"}],
            },
        )
        assert response.status_code == 200, response.text
        assert response.headers["x-raftdb-index"] == "5"
        assert response.json() == {
            "succeeded": True,
            "index": 5,
            "duplicate": False,
            "results": [
                {"op": "put", "mod_index": 5, "create_index": 1, "prev_mod_index": 1},
                {"op": "delete", "deleted": True, "prev_mod_index": 2},
                {
                    "op": "get",
                    "found": True,
                    "value_b64": "Mg==",
                    "value": "2",
                    "create_index": 1,
                    "mod_index": 5,
                },
                {
                    "op": "list",
                    "keys": [
                        {
                            "key": "p/1",
                            "value_b64": "b25l",
                            "value": "one",
                            "create_index": 3,
                            "mod_index": 3,
                        }
                    ],
                    "more": True,
                },
                {"op": "delete", "deleted": False, "prev_mod_index": 0},
            ],
        }
        assert node.data[b"a"].value == b"2"
        assert b"b" not in node.data

    def test_failure_branch(self, client: TestClient, node: FakeNode) -> None:
        response = txn(
            client,
            {
                "compare": [{"key": "a", "target": "exists", "op": "==", "value": True}],
                "success": [{"op": "put", "key": "a", "value": "no"}],
                "failure": [{"op": "get", "key": "a"}, {"op": "put", "key": "a", "value": "yes"}],
            },
        )
        assert response.json()["succeeded"] is False
        assert response.json()["results"][0] == {"op": "get", "found": False}
        assert node.data[b"a"].value == b"yes"

    def test_omitted_lists_are_empty(self, client: TestClient, node: FakeNode) -> None:
        response = txn(client, {})
        assert response.json() == {"succeeded": True, "index": 1, "results": [], "duplicate": False}
        assert node.last() == ("txn", Txn(), None)

    def test_the_parsed_transaction_is_what_the_node_gets(
        self, client: TestClient, node: FakeNode
    ) -> None:
        lease = client.post("/v1/leases", json={"ttl": 10}).json()["id"]
        body = {
            "compare": [
                {"key_b64": "/w==", "target": "value", "op": "!=", "value_b64": "AAE="},
                {"key": "é", "target": "exists", "op": "!=", "value": True},
            ],
            "success": [
                {"op": "put", "key_b64": "AP8=", "value_b64": "/w==", "lease": lease},
                {"op": "put", "key": "n", "value": "v", "lease": int(lease)},
                {"op": "list", "prefix_b64": "/w=="},
                {"op": "list"},
            ],
        }
        assert txn(client, body).status_code == 200
        assert node.calls[-1] == (
            "txn",
            Txn(
                (
                    Compare(b"\xff", Target.VALUE, CmpOp.NE, b"\x00\x01"),
                    Compare("é".encode(), Target.EXISTS, CmpOp.NE, True),
                ),
                (
                    TxnOp.put(b"\x00\xff", b"\xff", lease=int(lease)),
                    TxnOp.put(b"n", b"v", lease=int(lease)),
                    TxnOp.list(b"\xff"),
                    TxnOp(TxnOpKind.LIST),
                ),
            ),
            None,
        )

    def test_binary_keys_and_values_in_results(self, client: TestClient, node: FakeNode) -> None:
        seed_changes(node, [(b"\xff", b"\x00\xff")])
        results = txn(client, {"success": [{"op": "list"}, {"op": "get", "key_b64": "/w=="}]})
        listed, got = results.json()["results"]
        assert listed["keys"] == [
            {"key_b64": "/w==", "value_b64": "AP8=", "create_index": 1, "mod_index": 1}
        ]
        assert "value" not in got
        assert base64.b64decode(got["value_b64"]) == b"\x00\xff"

    def test_idempotency_key_retry_is_a_duplicate(self, client: TestClient, node: FakeNode) -> None:
        body = {"success": [{"op": "put", "key": "a", "value": "1"}]}
        first = txn(client, body, **{"Idempotency-Key": "t-1"})
        again = txn(client, body, **{"Idempotency-Key": "t-1"})
        assert first.json()["duplicate"] is False
        assert again.status_code == 200
        assert again.json() == {
            "succeeded": True,
            "index": first.json()["index"],
            "results": None,
            "duplicate": True,
        }
        assert again.headers["x-raftdb-duplicate"] == "true"
        assert node.index == 1  # applied once
        assert node.last()[2] == b"t-1"

    def test_an_unknown_lease_is_404_and_nothing_is_applied(
        self, client: TestClient, node: FakeNode
    ) -> None:
        body = {
            "success": [
                {"op": "put", "key": "a", "value": "1"},
                {"op": "put", "key": "b", "value": "2", "lease": "77"},
            ]
        }
        response = txn(client, body)
        assert error_of(response, 404) == "lease_not_found"
        assert node.data == {}

    def test_node_errors_pass_through(self, client: TestClient, node: FakeNode) -> None:
        fail_with(node, OutcomeUnknownError("timed out"))
        assert error_of(txn(client, {}), 504) == "outcome_unknown"


_PUT = {"op": "put", "key": "a", "value": "1"}
_CMP = {"key": "a", "target": "value", "op": "==", "value": "1"}


class TestRefusals:
    @pytest.mark.parametrize(
        ("body", "words"),
        [
            ({"compares": []}, "unknown field 'compares'"),
            ({"success": {}}, "'success' must be a list"),
            ({"success": None}, "'success' must be a list"),
            ({"success": [1]}, "success[0] must be a JSON object"),
            (
                {"failure": [_PUT, {"op": "put", "key": "a", "vaule": "1"}]},
                "failure[1] (a put): unknown field 'vaule'",
            ),
            ({"success": [{"key": "a"}]}, "success[0]: field 'op' is required"),
            ({"success": [{"op": "range"}]}, "field 'op' must be one of put, delete, get, list"),
            ({"success": [{"op": "put", "value": "1"}]}, "field 'key' (or 'key_b64') is required"),
            (
                {"success": [{"op": "put", "key": "a"}]},
                "field 'value' (or 'value_b64') is required",
            ),
            ({"success": [{"op": "put", "key": "a", "key_b64": "YQ==", "value": ""}]}, "not both"),
            ({"success": [{"op": "put", "key": "", "value": ""}]}, "the key is empty"),
            ({"success": [{"op": "put", "key": 5, "value": ""}]}, "'key' must be a string"),
            ({"success": [{"op": "put", "key": "a", "value": None}]}, "'value' must be a string"),
            (
                {"success": [{"op": "put", "key_b64": "not base64!", "value": ""}]},
                "not valid base64",
            ),
            (
                {"success": [{"op": "put", "key": "a", "value": "1", "lease": "x"}]},
                "must be a lease id",
            ),
            (
                {"success": [{"op": "put", "key": "a", "value": "1", "lease": 0}]},
                "must be a lease id",
            ),
            (
                {"success": [{"op": "put", "key": "a", "value": "1", "lease": True}]},
                "must be a lease id",
            ),
            (
                {"success": [{"op": "delete", "key": "a", "value": "1"}]},
                "(a delete): unknown field 'value'",
            ),
            (
                {"success": [{"op": "get", "key": "a", "lease": "1"}]},
                "(a get): unknown field 'lease'",
            ),
            ({"success": [{"op": "list", "key": "a"}]}, "(a list): unknown field 'key'"),
            (
                {"success": [{"op": "list", "limit": 0}]},
                "'limit' must be an integer from 1 to 1000",
            ),
            ({"success": [{"op": "list", "limit": 1001}]}, "from 1 to 1000"),
            ({"success": [{"op": "list", "limit": "5"}]}, "from 1 to 1000"),
            ({"compare": [{**_CMP, "extra": 1}]}, "compare[0]: unknown field 'extra'"),
            ({"compare": [{**_CMP, "target": "version"}]}, "'target' must be one of value"),
            ({"compare": [{**_CMP, "op": "<="}]}, "'op' must be one of ==, !=, <, >"),
            ({"compare": [{"key": "a", "op": "==", "value": "1"}]}, "field 'target' is required"),
            (
                {"compare": [{"key": "a", "target": "value", "value": "1"}]},
                "field 'op' is required",
            ),
            (
                {"compare": [{"key": "a", "target": "value", "op": "=="}]},
                "'value' (or 'value_b64') is required",
            ),
            ({"compare": [{**_CMP, "value": 1}]}, "'value' must be a string"),
            (
                {"compare": [{"key": "a", "target": "mod_index", "op": "==", "value": "4"}]},
                "an integer ≥ 0",
            ),
            (
                {"compare": [{"key": "a", "target": "mod_index", "op": "==", "value": -1}]},
                "an integer ≥ 0",
            ),
            (
                {"compare": [{"key": "a", "target": "create_index", "op": "==", "value": True}]},
                "an integer ≥ 0",
            ),
            (
                {"compare": [{"key": "a", "target": "mod_index", "op": "=="}]},
                "field 'value' is required",
            ),
            (
                {"compare": [{"key": "a", "target": "mod_index", "op": "==", "value_b64": "MQ=="}]},
                "only a value compare",
            ),
            (
                {"compare": [{"key": "a", "target": "exists", "op": "==", "value": 1}]},
                "true or false",
            ),
            (
                {"compare": [{"key": "a", "target": "exists", "op": "<", "value": True}]},
                "== or != only",
            ),
        ],
    )
    def test_bad_transaction_is_400(
        self, client: TestClient, node: FakeNode, body: Any, words: str
    ) -> None:
        response = txn(client, body)
        assert error_of(response, 400) == "bad_request"
        assert words in response.json()["message"]
        assert node.calls == []

    @pytest.mark.parametrize(
        ("content", "words"),
        [
            (b'{"success": [{"op": "get", "key": "\\ud800"}]}', "not valid Unicode"),
            (b"{", "not valid JSON"),
            (b"", "not valid JSON"),
            (b"\xff", "not valid JSON"),
            (b"[]", "must be a JSON object, not list"),
            (b'"x"', "must be a JSON object, not str"),
        ],
    )
    def test_bad_json_is_400(
        self, client: TestClient, node: FakeNode, content: bytes, words: str
    ) -> None:
        response = client.post("/v1/txn", content=content)
        assert error_of(response, 400) == "bad_request"
        assert words in response.json()["message"]
        assert node.calls == []

    @pytest.mark.parametrize("name", ["compare", "success", "failure"])
    def test_more_than_128_is_413_naming_128(self, node: FakeNode, name: str) -> None:
        config = NodeConfig(id=1, cluster=CLUSTER, max_value_bytes=1000, max_request_bytes=100_000)
        client = TestClient(create_api(node, config))
        item = _CMP if name == "compare" else {"op": "get", "key": "a"}
        assert txn(client, {name: [item] * 128}).status_code == 200
        response = txn(client, {name: [item] * 129})
        assert error_of(response, 413) == "too_many_operations"
        assert "128" in response.json()["message"]
        assert name in response.json()["message"]
        assert "connection" not in response.headers  # the body was read: keep the connection
        assert len(node.calls) == 1

    def test_the_bound_is_checked_before_the_entries(self, client: TestClient) -> None:
        """A long list of broken entries is refused for its length, not its first error."""
        assert error_of(txn(client, {"success": [1] * 129}), 413) == "too_many_operations"

    def test_keys_and_values_over_the_limits_are_413(self, client: TestClient) -> None:
        # conftest: max_key_bytes 64, max_value_bytes 1000, max_request_bytes 2000
        long_key = {"success": [{"op": "put", "key": "k" * 65, "value": ""}]}
        response = txn(client, long_key)
        assert error_of(response, 413) == "too_large"
        assert "max_key_bytes" in response.json()["message"]
        long_value = {"success": [{"op": "put", "key": "k", "value": "v" * 1001}]}
        assert "max_value_bytes" in txn(client, long_value).json()["message"]
        assert (
            txn(
                client, {"success": [{"op": "put", "key": "k" * 64, "value": "v" * 1000}]}
            ).status_code
            == 200
        )

    def test_a_body_over_max_request_bytes_is_413(self, client: TestClient) -> None:
        response = client.post("/v1/txn", content=b"{" + b" " * 2000 + b"}")
        assert error_of(response, 413) == "too_large"
        assert "max_request_bytes" in response.json()["message"]

    def test_query_parameters_and_bad_idempotency_keys_are_400(self, client: TestClient) -> None:
        assert error_of(client.post("/v1/txn?x=1", json={}), 400) == "bad_request"
        assert error_of(txn(client, {}, **{"Idempotency-Key": ""}), 400) == "bad_request"

    def test_other_methods_say_what_the_path_answers(self, client: TestClient) -> None:
        response = client.get("/v1/txn")  # a reserved path, not a raftexample key
        assert error_of(response, 400) == "reserved_path"
        assert "answers POST" in response.json()["message"]
