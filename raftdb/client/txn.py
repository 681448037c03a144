"""A small builder for ``POST /v1/txn`` (etcd's Txn): compares, then a ``success`` and a
``failure`` branch of put/delete/get/list operations.

::

    t = Txn()
    t.compare("a", "value", "==", "1").compare("b", "exists", "==", False)
    t.success.put("a", "2").delete("c").get("a")
    t.failure.get("a")
    result = client.txn(t)
"""

from __future__ import annotations

import base64
from typing import Any, Literal

from raftdb.client.types import to_bytes

__all__ = ["Branch", "CompareOp", "CompareTarget", "Txn"]

CompareTarget = Literal["value", "mod_index", "create_index", "exists"]
CompareOp = Literal["==", "!=", "<", ">"]

#: The node's bound on compares, and on operations in a branch.
MAX_OPERATIONS = 128


def _key_field(name: str, data: bytes | str) -> dict[str, str]:
    """``{name: text}`` for UTF-8 bytes, else ``{name_b64: base64}``: exact either way."""
    raw = to_bytes(data)
    try:
        return {name: raw.decode()}
    except UnicodeDecodeError:
        return {f"{name}_b64": base64.b64encode(raw).decode()}


class Branch:
    """The operations of one branch, run in order; each method returns the branch."""

    def __init__(self) -> None:
        self.ops: list[dict[str, Any]] = []

    def put(self, key: bytes | str, value: bytes | str, *, lease: int | None = None) -> Branch:
        """Write ``value`` (on ``lease``, else the key leaves any lease)."""
        op: dict[str, Any] = {"op": "put", **_key_field("key", key)}
        op["value_b64"] = base64.b64encode(to_bytes(value)).decode()
        if lease is not None:
            op["lease"] = str(lease)
        self.ops.append(op)
        return self

    def delete(self, key: bytes | str) -> Branch:
        """Delete the key (an absent key is no change)."""
        self.ops.append({"op": "delete", **_key_field("key", key)})
        return self

    def get(self, key: bytes | str) -> Branch:
        """Read the key, seeing this branch's earlier writes."""
        self.ops.append({"op": "get", **_key_field("key", key)})
        return self

    def list(self, prefix: bytes | str = b"", *, limit: int = 100) -> Branch:
        """List up to ``limit`` (1 to 1000) keys under ``prefix``, with values."""
        self.ops.append({"op": "list", **_key_field("prefix", prefix), "limit": limit})
        return self


class Txn:
    """A transaction: if every compare holds, ``success`` runs, else ``failure``; all of
    it is one log entry. Build it, then pass it to ``Client.txn``."""

    def __init__(self) -> None:
        self.compares: list[dict[str, Any]] = []
        self.success = Branch()
        self.failure = Branch()

    def compare(
        self,
        key: bytes | str,
        target: CompareTarget,
        op: CompareOp,
        value: bytes | str | int | bool,
    ) -> Txn:
        """Add a compare: ``target`` of ``key`` ``op`` ``value``. ``value`` is bytes or str
        for ``"value"``, an int for the indexes (an absent key has 0), a bool for
        ``"exists"`` (with ``==``/``!=`` only). Raises ``ValueError`` for a wrong type."""
        c: dict[str, Any] = {**_key_field("key", key), "target": target, "op": op}
        if target == "value":
            if not isinstance(value, bytes | str):
                raise ValueError("a value compare takes bytes or str")
            c["value_b64"] = base64.b64encode(to_bytes(value)).decode()
        elif target == "exists":
            if not isinstance(value, bool):
                raise ValueError("an exists compare takes a bool")
            c["value"] = value
        else:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"a {target} compare takes an int")
            c["value"] = value
        self.compares.append(c)
        return self

    def to_json(self) -> dict[str, Any]:
        """The request body."""
        return {
            "compare": self.compares,
            "success": self.success.ops,
            "failure": self.failure.ops,
        }
