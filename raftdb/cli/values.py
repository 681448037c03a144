"""Keys and values between the command line and the API's bytes.

Keys and values are bytes. On the way in, an argument is taken back to the bytes
the shell passed (:func:`arg_bytes`: ``os.fsencode`` undoes Python's
``surrogateescape`` decoding of ``argv``), so ``raftdb put $'\\xff' x`` writes the
key ``b"\\xff"``, not U+FFFD. On the way out, JSON follows the API's convention
(``key`` as text when it is UTF-8, ``key_b64`` otherwise; ``value`` or
``value_b64``), so output can be fed back to ``raftdb load``; tables and event
lines show text with every byte that is not printable UTF-8 escaped
(:func:`shown`), so one record is always one line and nothing is lost silently.
"""

from __future__ import annotations

import base64
import os
import sys
from typing import Any, Final

__all__ = ["arg_bytes", "bytes_field", "read_stdin", "shown"]

#: Control characters shown by their usual escapes rather than ``\\xNN``.
_ESCAPES: Final = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\\": "\\\\"}


def arg_bytes(text: str) -> bytes:
    """A command-line argument as the bytes the shell gave (any bytes survive)."""
    return os.fsencode(text)


def read_stdin() -> bytes:
    """All of stdin, as bytes (a value given as ``-`` or left out)."""
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is not None:
        data: bytes = buffer.read()
        return data
    return sys.stdin.read().encode()


def bytes_field(name: str, data: bytes) -> dict[str, Any]:
    """``{name: text}`` when ``data`` is UTF-8, else ``{name_b64: base64}`` (the API's
    convention for transactions and watches)."""
    try:
        return {name: data.decode()}
    except UnicodeDecodeError:
        return {f"{name}_b64": base64.b64encode(data).decode()}


def shown(data: bytes) -> str:
    """``data`` as one line of text for people: UTF-8 as it is, except backslashes,
    control characters and invalid bytes, which are escaped (``\\n``, ``\\x00``,
    ``\\xff``)."""
    # surrogateescape turns each invalid byte into one lone surrogate U+DC80..U+DCFF,
    # which is not printable: found below and shown as the byte it stands for.
    text = data.decode("utf-8", errors="surrogateescape")
    if text.isprintable() and "\\" not in text:
        return text
    out: list[str] = []
    for ch in text:
        code = ord(ch)
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif not ch.isprintable():
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)
