"""Check LevelDB's log-format files for damage LevelDB itself would not report.

LevelDB's write-ahead logs (``*.log``) and its manifest (``MANIFEST-*``) are
sequences of 32 KiB blocks of records, each with a header: a masked CRC-32C
of its type and payload, a 2-byte length and a type byte. With
``paranoid_checks`` LevelDB refuses a record that fails its checksum, but one
case it reads as the end of the file without a word: a record in the last
block whose length runs past the end of the file. That is the torn write of
a crash (the writer died inside the record), and also what a damaged length
byte looks like: LevelDB then silently drops that record and every record
after it — batches that were synced and acknowledged (found by the bit-rot
trials: a node came back with an older hard state, commit 155 instead of 180).

:func:`check_log_file` tells the two apart. A torn record is the last thing
in the file, and its payload is not all there. A damaged length leaves the
whole payload there, so a prefix of what follows the header matches the
record's checksum (followed by the end of the file or by a record that
verifies); or, if the payload is damaged too, the records written after it
are still there: a chain of records that ends exactly at the end of the file,
the first of which verifies. Damage to the last record's length *and*
payload looks like a torn write, and is read as one.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Final

__all__ = ["check_db_files", "check_log_file", "crc32c"]

_BLOCK: Final = 32768
_HEADER: Final = 7
_MASK_DELTA: Final = 0xA282EAD8


def _table() -> list[int]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE: Final = _table()


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC-32C (Castagnoli), as LevelDB's ``crc32c::Extend``."""
    c = crc ^ 0xFFFFFFFF
    table = _TABLE
    for byte in data:
        c = table[(c ^ byte) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def _masked(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF


def _verifies(data: bytes, at: int) -> bool:
    """Whether a whole record whose header is at ``at`` passes its checksum."""
    if at + _HEADER > len(data):
        return False
    stored, length, _ = struct.unpack_from("<IHB", data, at)
    end = at + _HEADER + length
    return end <= len(data) and _masked(crc32c(data[at + 6 : end])) == int(stored)


def check_log_file(path: Path) -> str | None:
    """What is wrong with the log-format file ``path`` that LevelDB would not
    report, or None (see the module docstring)."""
    # Records do not span blocks: only one in the last block can run past the end.
    # It alone is read (a state machine's write-ahead log may be tens of MiB).
    with path.open("rb") as f:
        base = (max(f.seek(0, 2) - 1, 0) // _BLOCK) * _BLOCK
        f.seek(base)
        data = f.read()
    size = len(data)
    at = 0  # offsets in the last block, which starts at ``base`` in the file
    while at + _HEADER <= size:
        block_end = (at // _BLOCK + 1) * _BLOCK
        if block_end - at < _HEADER:  # the block's trailer
            at = block_end
            continue
        stored, length, kind = struct.unpack_from("<IHB", data, at)
        end = at + _HEADER + length
        if end <= size:
            at = end
            continue
        # Runs past the end of the file: torn, or a damaged length?
        crc = crc32c(bytes([kind]))
        for payload_end in range(at + _HEADER, size + 1):
            if payload_end > at + _HEADER:
                crc = crc32c(data[payload_end - 1 : payload_end], crc)
            if _masked(crc) == stored and (payload_end == size or _verifies(data, payload_end)):
                return (
                    f"{path}: the record at offset {base + at} has a damaged length ({length}, "
                    f"the record is {payload_end - at - _HEADER} bytes): LevelDB would "
                    "drop it and everything after it"
                )
        # Its payload may be damaged too: then look for the records written after
        # it, a chain of records that verifies and ends exactly at the end.
        for later in range(at + _HEADER, size - _HEADER + 1):
            if _chain_to_end(data, later) and _verifies(data, later):
                return (
                    f"{path}: the record at offset {base + at} is damaged (its length {length} "
                    f"runs past the end, but records follow at offset {base + later}): LevelDB "
                    "would drop it and everything after it"
                )
        return None
    return None


def _chain_to_end(data: bytes, at: int) -> bool:
    """Whether records of plausible types and lengths, none crossing a block, run
    from ``at`` exactly to the end of ``data`` (the cheap test before a checksum)."""
    size = len(data)
    while True:
        if at == size:
            return True
        if size - at < _HEADER:
            return False
        _, length, kind = struct.unpack_from("<IHB", data, at)
        end = at + _HEADER + length
        if kind not in (1, 2, 3, 4) or end > size or at // _BLOCK != (end - 1) // _BLOCK:
            return False
        at = end
        block_end = (at // _BLOCK + 1) * _BLOCK
        if at < size and block_end - at < _HEADER:
            at = min(block_end, size)


def check_db_files(path: Path) -> str | None:
    """Check the write-ahead logs and the current manifest of the database in ``path``."""
    names = [p for p in sorted(path.glob("*.log")) if p.is_file()]
    try:
        current = (path / "CURRENT").read_bytes().decode("ascii", "replace").strip()
    except FileNotFoundError:
        current = ""
    manifest = path / current
    if current.startswith("MANIFEST-") and "/" not in current and manifest.is_file():
        names.append(manifest)
    for name in names:
        problem = check_log_file(name)
        if problem is not None:
            return problem
    return None
