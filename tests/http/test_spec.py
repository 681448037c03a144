"""The OpenAPI schemas generated from typed dataclasses (raftdb.http.spec)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import pytest
import schemathesis
from schemathesis.core.result import Ok

from raftdb.http.openapi import openapi_schema
from raftdb.http.spec import DATACLASS_COMPONENTS, dataclass_schema, type_schema
from raftdb.node.handle import Member, NodeStatus


@dataclass
class _Inner:
    n: int


@dataclass
class _Outer:
    flag: bool = field(metadata={"description": "A flag."})
    count: int = field(default=0, metadata={"minimum": 0})
    ratio: float = 0.5
    name: str | None = None
    kind: Literal["a", "b"] = "a"
    inners: list[_Inner] = field(default_factory=list)
    maybe: _Inner | None = None


def test_a_dataclass_maps_field_by_field() -> None:
    schema = dataclass_schema(_Outer, {_Inner: "Inner"})
    assert schema == {
        "type": "object",
        "required": ["flag", "count", "ratio", "name", "kind", "inners", "maybe"],
        "properties": {
            "flag": {"type": "boolean", "description": "A flag."},
            "count": {"type": "integer", "minimum": 0},
            "ratio": {"type": "number"},
            "name": {"type": ["string", "null"]},
            "kind": {"type": "string", "enum": ["a", "b"]},
            "inners": {"type": "array", "items": {"$ref": "#/components/schemas/Inner"}},
            "maybe": {"anyOf": [{"$ref": "#/components/schemas/Inner"}, {"type": "null"}]},
        },
    }


@pytest.mark.parametrize("hint", [bytes, dict[str, int], Literal["a", 1], int | str, _Inner])
def test_a_type_it_cannot_map_is_refused(hint: object) -> None:
    with pytest.raises(TypeError):
        type_schema(hint, {})


@pytest.mark.parametrize(("cls", "name"), [(NodeStatus, "Status"), (Member, "Member")])
def test_the_document_describes_every_field_of_the_answers(cls: type, name: str) -> None:
    """What /v1/status and /v1/cluster/members write (asdict) is what the document says."""
    component = openapi_schema()["components"]["schemas"][name]
    assert component == dataclass_schema(cls, DATACLASS_COMPONENTS)
    names = [f.name for f in dataclasses.fields(cls)]
    assert list(component["properties"]) == names
    assert component["required"] == names
    for prop in component["properties"].values():
        assert prop["description"]


def test_schemathesis_reads_every_operation() -> None:
    """What tests/chaos/test_api_schema.py loads at import: every operation must parse."""
    loaded = schemathesis.openapi.from_dict(openapi_schema())
    labels = []
    for result in loaded.get_all_operations():
        assert isinstance(result, Ok), result
        labels.append(result.ok().label)
    for label in (
        "GET /v1/watch",
        "POST /v1/txn",
        "POST /v1/leases",
        "GET /v1/leases",
        "GET /v1/leases/{id}",
        "DELETE /v1/leases/{id}",
        "POST /v1/leases/{id}/keepalive",
        "POST /v1/lock/{name}",
        "DELETE /v1/lock/{name}",
    ):
        assert label in labels


def test_the_new_parameters_are_described() -> None:
    paths = openapi_schema()["paths"]

    def names(path: str, method: str) -> set[str]:
        return {p["name"] for p in paths[path][method].get("parameters", [])}

    assert {"wait_index", "wait"} <= names("/v1/kv/{key}", "get")
    assert {"wait_index", "wait"} <= names("/v1/kv", "get")
    assert {"wait_index", "wait"} <= names("/{key}", "get")
    assert "lease" in names("/v1/kv/{key}", "put")
    assert {"prefix", "key", "since", "prev", "Last-Event-ID"} <= names("/v1/watch", "get")
    assert "wait" in names("/v1/lock/{name}", "post")
    assert "lease" in names("/v1/lock/{name}", "delete")
    watch = paths["/v1/watch"]["get"]["responses"]
    assert "text/event-stream" in watch["200"]["content"]
    assert {"400", "410", "429", "503"} <= set(watch)
    assert "413" in paths["/v1/txn"]["post"]["responses"]
    error = openapi_schema()["components"]["schemas"]["Error"]
    assert "oldest_index" in error["properties"]
