"""Check SQLite's write-ahead log for damage before SQLite reads it.

SQLite checksums the frames of its write-ahead log (``<file>-wal``), but it
reads a frame that fails its checksum as the end of the log: the torn tail a
crash leaves. A damaged byte in the middle of the log (bit rot) therefore
silently drops that transaction *and every transaction committed after it*,
which were synced and acknowledged: a Raft member forgetting entries it
acknowledged, or a vote. SQLite opens such a file without a word.

:func:`check_wal` tells the two apart before SQLite opens the database. A
crash can only tear the last transaction (with ``synchronous=FULL`` each
commit is synced before the next transaction is written), so damage followed
by a frame of a later transaction (one carrying this log's salts after the
damaged transaction's commit frame) is bit rot, and the storage refuses to
open. Damage inside the last transaction cannot be told from a
torn write; SQLite drops it, as after a crash before that save returned.

The format (https://www.sqlite.org/fileformat.html, "The WAL file"): a 32-byte
header (magic, version, page size, checkpoint sequence, two salts, a
checksum of the first 24 bytes), then frames of a 24-byte header (page
number, the database size for a commit frame or 0, the two salts, a
checksum) and one page. A frame's checksum covers its first 8 header bytes
and its page, seeded with the previous frame's (the first frame's with the
header's); its salts must be the header's.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Final

__all__ = ["check_wal"]

_MAGIC: Final = (0x377F0682, 0x377F0683)  # little-endian, big-endian checksums
_HEADER: Final = 32
_FRAME_HEADER: Final = 24


def _checksum(data: bytes, big_endian: bool, s0: int, s1: int) -> tuple[int, int]:
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    mask = 0xFFFFFFFF
    for i in range(0, len(words), 2):
        s0 = (s0 + words[i] + s1) & mask
        s1 = (s1 + words[i + 1] + s0) & mask
    return s0, s1


def check_wal(wal: Path) -> str | None:
    """What is wrong with the write-ahead log ``wal``, or None.

    None also when it is missing, empty, or damaged only in its last
    transaction (a torn write). Otherwise the damage: where, and how many later
    committed transactions SQLite would drop with it.
    """
    try:
        data = wal.read_bytes()
    except FileNotFoundError:
        return None
    if len(data) < _HEADER + _FRAME_HEADER:
        return None
    magic, _version, page_size, _seq, salt1, salt2, c0, c1 = struct.unpack(">8I", data[:32])
    salts = (salt1, salt2)
    if page_size < 512 or page_size > 65536 or page_size & (page_size - 1):
        # SQLite ignores a log whose header it cannot use. The salts are
        # random: a first frame carrying the header's is a real frame.
        if struct.unpack(">2I", data[_HEADER + 8 : _HEADER + 16]) == salts:
            return f"the write-ahead log {wal} is damaged: its header gives page size {page_size}"
        return None
    orders = [magic == _MAGIC[1]] if magic in _MAGIC else [False, True]
    for big in orders:
        header_ok = magic in _MAGIC and _checksum(data[:24], big, 0, 0) == (c0, c1)
        if not header_ok:  # the salts may be what is damaged: the first frame's then
            salts = struct.unpack(">2I", data[_HEADER + 8 : _HEADER + 16])
        found = _scan(data, big, page_size, salts, (c0, c1), header_ok)
        if found is not None:
            return f"the write-ahead log {wal} is damaged at {found}"
    return None


def _scan(
    data: bytes,
    big: bool,
    page_size: int,
    salts: tuple[int, int],
    seed: tuple[int, int],
    header_ok: bool,
) -> str | None:
    """Check each frame on its own, seeded with its predecessor's stored checksum;
    the damage if a later transaction's frame follows it."""
    size = _FRAME_HEADER + page_size
    count = (len(data) - _HEADER) // size
    prev = seed
    ok: list[bool] = []
    commit: list[bool] = []
    salted: list[bool] = []
    for n in range(count):
        at = _HEADER + n * size
        pgno, db_size, f1, f2, k0, k1 = struct.unpack(">6I", data[at : at + 24])
        salted.append((f1, f2) == salts)
        frame = data[at : at + 8] + data[at + 24 : at + size]
        verified = _checksum(frame, big, *prev) == (k0, k1)
        ok.append(salted[-1] and pgno != 0 and verified)
        # A commit frame: its salts are this log's, or its checksum (which does not
        # cover the salts) verifies: then only a salt is damaged.
        commit.append(db_size != 0 and (salted[-1] or verified))
        prev = (k0, k1)
    first_bad = -1 if not header_ok else next((n for n in range(count) if not ok[n]), None)
    if first_bad is None:
        return None
    # The damaged transaction ends at its commit frame. A frame after that with
    # this log's salts (64 random bits: damage does not make them) belongs to a
    # later transaction, written after the damaged one was synced: no torn write.
    end = next((n for n in range(max(first_bad, 0), count) if commit[n]), count)
    later = sum(1 for n in range(end + 1, count) if salted[n])
    if later == 0:
        return None
    where = "its header" if first_bad < 0 else f"frame {first_bad + 1}"
    return f"{where}: SQLite would drop that transaction and the {later} frames written after it"
