"""``POST /v1/txn``: compares, then one of two branches of operations, in one log entry.

The JSON shapes are ``docs/api.md``'s (and ``DESIGN.md``'s). Parsing is
strict, as the rest of the API: a field a compare or an operation does not
take, a wrong type or a value outside its range is a ``400`` naming where
it is (``success[3]``); more than :data:`~raftdb.kv.txn.MAX_TXN_OPS` compares,
or operations in a branch, is a ``413 too_many_operations`` naming the bound
(etcd's ``--max-txn-ops`` and Consul's bound, checked before any entry is
parsed). Keys and values are bounded as on ``PUT`` (``max_key_bytes``,
``max_value_bytes``), and the body as a whole by ``max_request_bytes``.

The node evaluates the compares and runs the branch when the entry is
applied (:class:`raftdb.kv.txn.Txn`); this module only turns JSON into a
``Txn`` and the answer back into JSON. With a tokens file, the keys in the
body are checked here (:func:`raftdb.http.auth.check_keys`): ``read`` for
the keys compared, read or listed, ``write`` for those written by either branch.
"""

from __future__ import annotations

from typing import Any, Final

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from raftdb.config import NodeConfig
from raftdb.http.auth import check_keys
from raftdb.http.bodies import (
    check_fields,
    int_field,
    key_json,
    list_field,
    object_of,
    text_or_b64,
    value_json,
)
from raftdb.http.errors import TooManyOperationsError, json_response
from raftdb.http.params import (
    MAX_IDEMPOTENCY_KEY_BYTES,
    parse_id,
    parse_idempotency_key,
    parse_query,
    read_json_object,
)
from raftdb.http.spec import INT, PathItem, Schema, error, errors, header, json_body, ref
from raftdb.kv.commands import InvalidCommandError, KeyValue
from raftdb.kv.txn import (
    DEFAULT_LIST_LIMIT,
    MAX_LIST_LIMIT,
    MAX_TXN_OPS,
    CmpOp,
    Compare,
    Target,
    Txn,
    TxnOp,
    TxnOpKind,
    TxnOpResult,
)
from raftdb.node.errors import BadRequestError
from raftdb.node.handle import NodeHandle, TxnAnswer

__all__ = [
    "OPENAPI_PATHS",
    "SCHEMAS",
    "TxnParser",
    "txn_json",
    "txn_routes",
]

_BRANCHES: Final = ("compare", "success", "failure")
_TXN_FIELDS: Final = frozenset(_BRANCHES)
_TARGETS: Final = {
    "value": Target.VALUE,
    "mod_index": Target.MOD_INDEX,
    "create_index": Target.CREATE_INDEX,
    "exists": Target.EXISTS,
}
_CMP_OPS: Final = {"==": CmpOp.EQ, "!=": CmpOp.NE, "<": CmpOp.LT, ">": CmpOp.GT}
_COMPARE_FIELDS: Final = frozenset({"key", "key_b64", "target", "op", "value", "value_b64"})
_KEY: Final = frozenset({"op", "key", "key_b64"})
_OP_FIELDS: Final = {
    "put": _KEY | {"value", "value_b64", "lease"},
    "delete": _KEY,
    "get": _KEY,
    "list": frozenset({"op", "prefix", "prefix_b64", "limit"}),
}
_OP_KINDS: Final = {
    "put": TxnOpKind.PUT,
    "delete": TxnOpKind.DELETE,
    "get": TxnOpKind.GET,
    "list": TxnOpKind.LIST,
}
_NO_QUERY: Final = frozenset[str]()


class TxnParser:
    """Turns a transaction's JSON into a :class:`~raftdb.kv.txn.Txn`, under the node's limits.

    It also gathers the keys the transaction reads (compares, gets, list
    prefixes) and writes (puts, deletes), for the token check.
    """

    def __init__(self, max_key_bytes: int, max_value_bytes: int) -> None:
        self.max_key_bytes = max_key_bytes
        self.max_value_bytes = max_value_bytes
        self.reads: list[bytes] = []
        self.writes: list[bytes] = []

    def parse(self, data: dict[str, Any]) -> Txn:
        """The transaction ``data`` describes.

        Raises:
            BadRequestError: a malformed transaction (the message says where).
            TooManyOperationsError: a list over :data:`~raftdb.kv.txn.MAX_TXN_OPS`.
            TooLargeError: a key or value over its limit.
        """
        check_fields(data, _TXN_FIELDS, "the transaction")
        lists = {name: list_field(data, name, "the transaction") for name in _BRANCHES}
        for name, items in lists.items():
            if len(items) > MAX_TXN_OPS:
                raise TooManyOperationsError(
                    f"{name!r} has {len(items)} entries: a transaction takes at most "
                    f"{MAX_TXN_OPS} compares and {MAX_TXN_OPS} operations in each branch"
                )
        compares = tuple(
            self._compare(object_of(item, f"compare[{i}]"), f"compare[{i}]")
            for i, item in enumerate(lists["compare"])
        )
        success = self._branch(lists["success"], "success")
        failure = self._branch(lists["failure"], "failure")
        try:
            return Txn(compares, success, failure)
        except InvalidCommandError as exc:  # a last guard: the checks above should catch it
            raise BadRequestError(f"not a valid transaction: {exc}") from None

    def _key(self, data: dict[str, Any], where: str) -> bytes:
        key = text_or_b64(
            data, "key", where, limit=self.max_key_bytes, setting="max_key_bytes", empty=False
        )
        assert key is not None  # required
        return key

    def _compare(self, data: dict[str, Any], where: str) -> Compare:
        check_fields(data, _COMPARE_FIELDS, where)
        key = self._key(data, where)
        target = _choice(data, "target", _TARGETS, where)
        op = _choice(data, "op", _CMP_OPS, where)
        value: bytes | int | bool
        if target is Target.VALUE:
            found = text_or_b64(
                data, "value", where, limit=self.max_value_bytes, setting="max_value_bytes"
            )
            assert found is not None  # required
            value = found
        else:
            if "value_b64" in data:
                raise BadRequestError(f"{where}: only a value compare takes 'value_b64'")
            if "value" not in data:
                raise BadRequestError(f"{where}: field 'value' is required")
            value = data["value"]
            if target is Target.EXISTS:
                if not isinstance(value, bool):
                    raise BadRequestError(
                        f"{where}: an exists compare takes 'value' true or false (got {value!r})"
                    )
                if op not in (CmpOp.EQ, CmpOp.NE):
                    raise BadRequestError(f"{where}: an exists compare takes op == or != only")
            elif isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise BadRequestError(
                    f"{where}: a {data['target']} compare takes 'value' an index, "
                    f"an integer ≥ 0 (got {value!r})"
                )
        self.reads.append(key)
        return Compare(key, target, op, value)

    def _branch(self, items: list[Any], name: str) -> tuple[TxnOp, ...]:
        return tuple(
            self._op(object_of(item, f"{name}[{i}]"), f"{name}[{i}]")
            for i, item in enumerate(items)
        )

    def _op(self, data: dict[str, Any], where: str) -> TxnOp:
        kind = _choice(data, "op", _OP_KINDS, where)
        name = data["op"]
        check_fields(data, _OP_FIELDS[name], f"{where} (a {name})")
        if kind is TxnOpKind.LIST:
            prefix = text_or_b64(
                data,
                "prefix",
                where,
                limit=self.max_key_bytes,
                setting="max_key_bytes",
                required=False,
            )
            limit = int_field(
                data, "limit", where, default=DEFAULT_LIST_LIMIT, low=1, high=MAX_LIST_LIMIT
            )
            self.reads.append(prefix or b"")
            return TxnOp.list(prefix or b"", limit)
        key = self._key(data, where)
        if kind is TxnOpKind.GET:
            self.reads.append(key)
            return TxnOp.get(key)
        self.writes.append(key)
        if kind is TxnOpKind.DELETE:
            return TxnOp.delete(key)
        value = text_or_b64(
            data, "value", where, limit=self.max_value_bytes, setting="max_value_bytes"
        )
        assert value is not None  # required
        lease = parse_id(f"{where}: field 'lease'", data["lease"]) if "lease" in data else 0
        return TxnOp.put(key, value, lease=lease)


def _choice(data: dict[str, Any], name: str, choices: dict[str, Any], where: str) -> Any:
    """``choices[data[name]]``: a required field that takes one of a few strings."""
    if name not in data:
        raise BadRequestError(f"{where}: field {name!r} is required")
    value = data[name]
    if not isinstance(value, str) or value not in choices:
        shown = ", ".join(choices)
        raise BadRequestError(f"{where}: field {name!r} must be one of {shown} (got {value!r})")
    return choices[value]


def _kv_json(kv: KeyValue) -> dict[str, Any]:
    """A key read by a ``list``: key, value, indexes."""
    return {
        **key_json(kv.key),
        **value_json(kv.value),
        "create_index": kv.create_index,
        "mod_index": kv.mod_index,
    }


def _result_json(result: TxnOpResult) -> dict[str, Any]:
    """One operation's result (``docs/api.md``)."""
    kind = result.kind
    if kind is TxnOpKind.PUT:
        return {
            "op": "put",
            "mod_index": result.mod_index,
            "create_index": result.create_index,
            "prev_mod_index": result.prev_mod_index,
        }
    if kind is TxnOpKind.DELETE:
        return {"op": "delete", "deleted": result.found, "prev_mod_index": result.prev_mod_index}
    if kind is TxnOpKind.GET:
        if not result.found or result.kv is None:
            return {"op": "get", "found": False}
        kv = result.kv
        return {
            "op": "get",
            "found": True,
            **value_json(kv.value),
            "create_index": kv.create_index,
            "mod_index": kv.mod_index,
        }
    return {"op": "list", "keys": [_kv_json(kv) for kv in result.kvs], "more": result.more}


def txn_json(answer: TxnAnswer) -> dict[str, Any]:
    """The answer to ``POST /v1/txn``."""
    results = None if answer.results is None else [_result_json(r) for r in answer.results]
    return {
        "succeeded": answer.succeeded,
        "index": answer.index,
        "results": results,
        "duplicate": answer.duplicate,
    }


# -- OpenAPI: what this route answers (raftdb.http.openapi gathers it) ----------------

_TEXT: Final[Schema] = {"type": "string", "description": "UTF-8 text."}
_B64: Final[Schema] = {"type": "string", "contentEncoding": "base64", "description": "Base64."}
_LEASE_ID: Final[Schema] = {
    "description": "A lease id: decimal digits (a JSON integer is accepted too).",
    "oneOf": [
        {"type": "string", "pattern": "^[1-9][0-9]{0,18}$"},
        {"type": "integer", "minimum": 1},
    ],
}
_COMPARE_SCHEMA: Final[Schema] = {
    "type": "object",
    "description": "A condition on a key: `key` or `key_b64`; `value` (text, an index or a "
    "boolean, by `target`) or, for a value compare, `value_b64`.",
    "required": ["target", "op"],
    "additionalProperties": False,
    "properties": {
        "key": {**_TEXT, "minLength": 1},
        "key_b64": _B64,
        "target": {"type": "string", "enum": list(_TARGETS)},
        "op": {
            "type": "string",
            "enum": list(_CMP_OPS),
            "description": "`exists` takes `==` and `!=` only.",
        },
        "value": {
            "description": "`value`: text; `mod_index`, `create_index`: an index; `exists`: "
            "a boolean. An absent key has indexes 0, and only `!=` holds for its value.",
            "oneOf": [{"type": "string"}, INT, {"type": "boolean"}],
        },
        "value_b64": _B64,
    },
}
_OP_SCHEMA: Final[Schema] = {
    "type": "object",
    "description": "An operation: `put` (`key`/`key_b64`, `value`/`value_b64`, `lease`), "
    "`delete` and `get` (`key`/`key_b64`), `list` (`prefix`/`prefix_b64`, `limit`).",
    "required": ["op"],
    "additionalProperties": False,
    "properties": {
        "op": {"type": "string", "enum": list(_OP_KINDS)},
        "key": {**_TEXT, "minLength": 1},
        "key_b64": _B64,
        "value": _TEXT,
        "value_b64": _B64,
        "lease": _LEASE_ID,
        "prefix": _TEXT,
        "prefix_b64": _B64,
        "limit": {
            "type": "integer",
            "minimum": 1,
            "maximum": MAX_LIST_LIMIT,
            "default": DEFAULT_LIST_LIMIT,
        },
    },
}
_LIST: Final = {"type": "array", "maxItems": MAX_TXN_OPS}
_TXN_SCHEMA: Final[Schema] = {
    "type": "object",
    "additionalProperties": False,
    "description": f"At most {MAX_TXN_OPS} compares, and {MAX_TXN_OPS} operations in each "
    "branch; an omitted list is `[]`.",
    "properties": {
        "compare": {**_LIST, "items": ref("TxnCompare")},
        "success": {**_LIST, "items": ref("TxnOp")},
        "failure": {**_LIST, "items": ref("TxnOp")},
    },
}
#: A key with its value, as answers give them (``key``/``key_b64``, ``value_b64``/``value``).
KV_SCHEMA: Final[Schema] = {
    "type": "object",
    "required": ["value_b64", "create_index", "mod_index"],
    "properties": {
        "key": {**_TEXT, "description": "The key, when it is UTF-8."},
        "key_b64": {**_B64, "description": "The key in base64, when it is not UTF-8."},
        "value_b64": _B64,
        "value": {**_TEXT, "description": "The value, when it is UTF-8."},
        "create_index": INT,
        "mod_index": INT,
    },
}
_RESULT_SCHEMA: Final[Schema] = {
    "type": "object",
    "description": "One per operation of the branch that ran: put `{op, mod_index, "
    "create_index, prev_mod_index}`, delete `{op, deleted, prev_mod_index}`, get `{op, found, "
    "value_b64, value, create_index, mod_index}`, list `{op, keys, more}`.",
    "required": ["op"],
    "properties": {
        "op": {"type": "string", "enum": list(_OP_KINDS)},
        "mod_index": INT,
        "create_index": INT,
        "prev_mod_index": {**INT, "description": "The key's mod_index before (0: absent)."},
        "deleted": {"type": "boolean"},
        "found": {"type": "boolean"},
        "value_b64": _B64,
        "value": _TEXT,
        "keys": {"type": "array", "items": ref("KeyValue")},
        "more": {"type": "boolean", "description": "More keys under the prefix than `limit`."},
    },
}
_ANSWER_SCHEMA: Final[Schema] = {
    "type": "object",
    "required": ["succeeded", "index", "results", "duplicate"],
    "properties": {
        "succeeded": {"type": "boolean", "description": "The compares held: `success` ran."},
        "index": {**INT, "description": "The transaction's log index (its writes' mod_index)."},
        "results": {
            "type": ["array", "null"],
            "items": ref("TxnResult"),
            "description": "`null` for a duplicate (an `Idempotency-Key` retry).",
        },
        "duplicate": {"type": "boolean"},
    },
}
#: The component schemas of this module.
SCHEMAS: Final[dict[str, Schema]] = {
    "Txn": _TXN_SCHEMA,
    "TxnCompare": _COMPARE_SCHEMA,
    "TxnOp": _OP_SCHEMA,
    "TxnResult": _RESULT_SCHEMA,
    "TxnAnswer": _ANSWER_SCHEMA,
    "KeyValue": KV_SCHEMA,
}
#: The OpenAPI path item of :func:`txn_routes`.
OPENAPI_PATHS: Final[dict[str, PathItem]] = {
    "/v1/txn": {
        "post": {
            "summary": "A multi-key transaction: compares, then one branch, in one log entry",
            "operationId": "txn",
            "tags": ["txn"],
            "parameters": [
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "description": f"1-{MAX_IDEMPOTENCY_KEY_BYTES} bytes naming this "
                    "transaction: a retry is applied at most once (`duplicate: true`).",
                    "schema": {"type": "string", "maxLength": MAX_IDEMPOTENCY_KEY_BYTES},
                }
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": ref("Txn")}},
            },
            "responses": {
                "200": {
                    **json_body(ref("TxnAnswer"), "Committed and applied."),
                    "headers": {
                        "X-Raftdb-Index": header("The transaction's index.", INT),
                        "X-Raftdb-Duplicate": header("`true` for an `Idempotency-Key` retry."),
                    },
                },
                "404": error(
                    "404",
                    "A put names a lease that does not exist "
                    "(`lease_not_found`); nothing was applied.",
                ),
                "413": error(
                    "413",
                    f"More than {MAX_TXN_OPS} compares or operations in a branch "
                    "(`too_many_operations`), or a key, value or body over its limit "
                    "(`too_large`).",
                ),
                **errors("400", "408", "429", "503", "504"),
            },
        },
    },
}


def txn_routes(node: NodeHandle, config: NodeConfig) -> list[BaseRoute]:
    """The ``/v1/txn`` route."""
    limit = config.max_request_bytes
    body_timeout = config.body_timeout_s
    max_key_bytes = config.max_key_bytes
    max_value_bytes = config.max_value_bytes

    async def txn(request: Request) -> Response:
        if request.scope["query_string"]:
            parse_query(request.scope, _NO_QUERY)
        idempotency_key = parse_idempotency_key(request.headers)
        data = await read_json_object(request, limit, time_limit=body_timeout)
        parser = TxnParser(max_key_bytes, max_value_bytes)
        parsed = parser.parse(data)
        check_keys(request.scope, "the transaction", writes=parser.writes, reads=parser.reads)
        answer = await node.txn(parsed, idempotency_key=idempotency_key)
        headers = {"x-raftdb-index": str(answer.index)}
        if answer.duplicate:
            headers["x-raftdb-duplicate"] = "true"
        return json_response(txn_json(answer), 200, headers)

    return [Route("/v1/txn", txn, methods=["POST"], name="txn")]
