"""JSON bodies and answers: fields checked strictly, keys and values as text or base64.

The JSON routes (transactions, leases, locks) take keys as ``key`` (UTF-8
text) or ``key_b64`` (any bytes, base64) and values as ``value`` or
``value_b64``, exactly one of each pair; they answer keys as ``key`` when the
bytes are UTF-8 and ``key_b64`` otherwise, and values as ``value_b64`` plus
``value`` when UTF-8 (``docs/api.md``). A field the route does not know is a
``400``, never ignored: a misspelt ``"vaule"`` would otherwise store an empty
value. The messages say where the field is (``success[2]: ...``), so that a
client sending 128 operations learns which one is wrong.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
from collections.abc import Mapping
from typing import Any, Final

from raftdb.node.errors import BadRequestError, TooLargeError

__all__ = [
    "check_fields",
    "int_field",
    "key_json",
    "list_field",
    "object_of",
    "text_or_b64",
    "value_json",
]

_KINDS: Final = {
    bool: "true or false",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "an object",
    type(None): "null",
}


def _kind(value: object) -> str:
    """How a message names the JSON type of ``value``."""
    return _KINDS.get(type(value), type(value).__name__)


def object_of(value: object, where: str) -> dict[str, Any]:
    """``value`` if it is a JSON object.

    Raises:
        BadRequestError: it is not.
    """
    if not isinstance(value, dict):
        raise BadRequestError(f"{where} must be a JSON object, not {_kind(value)}")
    return value


def check_fields(data: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    """Refuse a field of ``data`` outside ``allowed``.

    Args:
        where: what ``data`` is, for the message ("the body", "success[2] (a put)").

    Raises:
        BadRequestError: an unknown field (the first, in sorted order).
    """
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise BadRequestError(
            f"{where}: unknown field {unknown[0]!r} (it takes {', '.join(sorted(allowed))})"
        )


def list_field(data: Mapping[str, Any], name: str, where: str) -> list[Any]:
    """The list ``data[name]``; absent means ``[]``.

    Raises:
        BadRequestError: present and not a list (``null`` included).
    """
    if name not in data:
        return []
    value = data[name]
    if not isinstance(value, list):
        raise BadRequestError(f"{where}: field {name!r} must be a list, not {_kind(value)}")
    return value


def int_field(
    data: Mapping[str, Any], name: str, where: str, *, default: int, low: int, high: int
) -> int:
    """The integer ``data[name]`` in ``low..high``; absent: ``default``.

    Raises:
        BadRequestError: not an integer (booleans and ``10.0`` are not), or out of range.
    """
    if name not in data:
        return default
    value = data[name]
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise BadRequestError(
            f"{where}: field {name!r} must be an integer from {low} to {high} (got {value!r})"
        )
    return value


def text_or_b64(
    data: Mapping[str, Any],
    name: str,
    where: str,
    *,
    limit: int,
    setting: str,
    required: bool = True,
    empty: bool = True,
) -> bytes | None:
    """The bytes of ``data[name]`` (UTF-8 text) or ``data[name + "_b64"]`` (base64).

    Args:
        name: ``key``, ``value`` or ``prefix``.
        where: where ``data`` is, for the message.
        limit, setting: the most bytes (``max_key_bytes``, ``max_value_bytes``).
        required: one of the two must be there (else ``None`` when neither is).
        empty: ``b""`` is allowed (a key is never empty).

    Raises:
        BadRequestError: both given, neither (``required``), not a string, not
            base64, text that is not UTF-8 (a lone surrogate), or empty when it may not be.
        TooLargeError: over ``limit`` bytes.
    """
    b64_name = name + "_b64"
    if name in data and b64_name in data:
        raise BadRequestError(f"{where}: give {name!r} or {b64_name!r}, not both")
    if name not in data and b64_name not in data:
        if required:
            raise BadRequestError(f"{where}: field {name!r} (or {b64_name!r}) is required")
        return None
    field = name if name in data else b64_name
    value = data[field]
    if not isinstance(value, str):
        raise BadRequestError(f"{where}: field {field!r} must be a string, not {_kind(value)}")
    if field == name:
        try:
            found = value.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequestError(
                f"{where}: field {field!r} is not valid Unicode text (use {b64_name!r} for bytes)"
            ) from None
    else:
        try:
            found = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise BadRequestError(f"{where}: field {field!r} is not valid base64") from None
    if not found and not empty:
        raise BadRequestError(f"{where}: the {name} is empty")
    if len(found) > limit:
        raise TooLargeError(
            f"{where}: the {name} is {len(found)} bytes, over the limit of {limit} ({setting})"
        )
    return found


def key_json(key: bytes) -> dict[str, str]:
    """A key in an answer: ``{"key": text}``, or ``{"key_b64": ...}`` when it is not UTF-8."""
    try:
        return {"key": key.decode("utf-8")}
    except UnicodeDecodeError:
        return {"key_b64": base64.b64encode(key).decode("ascii")}


def value_json(value: bytes, name: str = "value") -> dict[str, str]:
    """A value in an answer: ``{"value_b64": ...}``, plus ``"value"`` when it is UTF-8 text.

    ``name``: the fields' stem (``prev_value`` for a watch event's previous value).
    """
    found = {f"{name}_b64": base64.b64encode(value).decode("ascii")}
    with contextlib.suppress(UnicodeDecodeError):
        found[name] = value.decode("utf-8")
    return found
