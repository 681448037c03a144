"""The one line a LevelDB plugin says when a database's format marker is not its own.

Each LevelDB database raftdb writes holds a marker under ``m/format``: the
plugin's name and its format version (``raftdb.leveldb.storage/1``). A marker
of the same name with another version was written by another raftdb (a newer
one, whose format this code cannot read); any other marker is not a raftdb
database at all. Either way the node refuses to start on it, with this line,
rather than read what it does not understand. See docs/formats.md.
"""

from __future__ import annotations

__all__ = ["unknown_format"]


def unknown_format(
    where: str, found: bytes | None, reads: bytes | tuple[bytes, ...], kind: str
) -> str:
    """The refusal of marker ``found`` by a plugin that reads ``reads`` (the
    newest last); ``kind`` names what the plugin keeps ("log", "state machine")."""
    if found is None:
        return f"{where}: not a raftdb {kind} (no format marker)"
    known = (reads,) if isinstance(reads, bytes) else reads
    name = known[-1].rpartition(b"/")[0] + b"/"
    shown = found.decode("utf-8", "replace")
    readable = ", ".join(k.decode() for k in known)
    if found.startswith(name):
        version = found[len(name) :]
        newest = int(known[-1][len(name) :])
        newer = version.isdigit() and int(version) > newest
        why = ": a newer raftdb wrote it; run that version on it" if newer else ""
        return (
            f"{where}: format {shown} is not one this raftdb reads ({readable}){why} "
            "(see docs/formats.md)"
        )
    return f"{where}: not a raftdb {kind} (format marker {shown!r})"
