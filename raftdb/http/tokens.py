"""The tokens file: bearer tokens stored as hashes, each with a role and optional key prefixes.

The file is TOML, one ``[[token]]`` table per token (``docs/api.md``)::

    [[token]]
    name = "deploy-bot"            # shown in logs, never the token
    sha256 = "9f86d08188…"         # hex SHA-256 of the token's text
    role = "write"                 # read | write | admin
    prefixes = ["app/", "config/"] # optional: the keys it may touch (default: all)

Only hashes are stored, so the file (or a backup of it) does not give the
tokens away. A presented token is hashed once and compared with every stored
hash with :func:`hmac.compare_digest`, so the time an answer takes says
nothing about how close a guess was.

:class:`TokenStore` re-reads the file when it changes (its mtime, size or
inode), looking at most once per :data:`CHECK_INTERVAL_S` from the request
path: rotating a token is editing the file, with no restart and no signal
(which plain ``uvicorn`` would not forward to the app). A changed file that
no longer parses keeps the tokens in force and logs why, once per change: a
typo while rotating must not lock every client out, nor let them all in.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import logging
import os
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from raftdb.config import ConfigError

__all__ = [
    "CHECK_INTERVAL_S",
    "Role",
    "Token",
    "TokenStore",
    "hash_token",
    "load_tokens",
    "match_token",
]

logger = logging.getLogger("raftdb.auth")

#: Longest the node goes between two looks at the tokens file (seconds).
CHECK_INTERVAL_S: Final = 1.0

_FIELDS: Final = frozenset({"name", "sha256", "role", "prefixes"})
_HEX: Final = frozenset("0123456789abcdef")


class Role(enum.IntEnum):
    """What a token may do; each role may do everything the ones below it may."""

    READ = 1
    WRITE = 2
    ADMIN = 3

    @property
    def label(self) -> str:
        """The role as the tokens file spells it (``read``, ``write``, ``admin``)."""
        return self.name.lower()


_ROLES: Final = {role.label: role for role in Role}


@dataclass(frozen=True, slots=True)
class Token:
    """One entry of the tokens file.

    Attributes:
        name: how logs name the token (never the token itself).
        digest: the SHA-256 of the token's text (32 bytes).
        role: what it may do.
        prefixes: the keys it may touch, as bytes; ``None``: every key.
    """

    name: str
    digest: bytes
    role: Role
    prefixes: tuple[bytes, ...] | None = None

    def may_touch(self, key: bytes) -> bool:
        """Whether ``key`` (or, for a listing, a ``prefix``) lies under one of the prefixes."""
        prefixes = self.prefixes
        return prefixes is None or key.startswith(prefixes)


def hash_token(token: str | bytes) -> str:
    """The hex SHA-256 of ``token``, as the tokens file's ``sha256`` holds it."""
    data = token.encode("utf-8") if isinstance(token, str) else token
    return hashlib.sha256(data).hexdigest()


def match_token(tokens: Sequence[Token], presented: bytes) -> Token | None:
    """The token whose hash is the hash of ``presented``, or ``None``.

    Every stored hash is compared, in constant time each, whatever matches:
    the answer's timing depends on the number of tokens only.
    """
    digest = hashlib.sha256(presented).digest()
    found: Token | None = None
    for token in tokens:
        if hmac.compare_digest(token.digest, digest):
            found = token
    return found


def _entry_error(path: str, number: int, name: str, why: str) -> ConfigError:
    named = f" ({name!r})" if name else ""
    return ConfigError(
        f"raftdb: config key 'tokens_file' ({path}): [[token]] #{number}{named} {why}",
        "tokens_file",
        why,
    )


def _parse_entry(path: str, number: int, entry: object) -> Token:
    if not isinstance(entry, dict):
        raise _entry_error(path, number, "", "must be a table")
    raw_name = entry.get("name")
    name = raw_name if isinstance(raw_name, str) else ""

    def fail(why: str) -> ConfigError:
        return _entry_error(path, number, name, why)

    unknown = sorted(set(entry) - _FIELDS)
    if unknown:
        fields = "name, sha256, role, prefixes"
        raise fail(f"has an unknown field {unknown[0]!r} (a token has: {fields})")
    for field in ("name", "sha256", "role"):
        if field not in entry:
            raise fail(f"lacks the field {field!r}")
    if not isinstance(raw_name, str) or not raw_name.strip():
        raise fail("field 'name' must be a non-empty string")
    digest = entry["sha256"]
    if not isinstance(digest, str) or len(digest) != 64 or not set(digest.lower()) <= _HEX:
        # The value is not shown: a token pasted here by mistake would end up in logs.
        raise fail(
            "field 'sha256' must be 64 hex digits, the SHA-256 of the token (not the token "
            "itself): see `raftdb token create`"
        )
    role = entry["role"]
    if role not in _ROLES:
        raise fail(f"field 'role' must be 'read', 'write' or 'admin' (got {role!r})")
    prefixes: tuple[bytes, ...] | None = None
    if "prefixes" in entry:
        given = entry["prefixes"]
        if (
            not isinstance(given, list)
            or not given
            or not all(isinstance(prefix, str) and prefix for prefix in given)
        ):
            raise fail(
                "field 'prefixes' must be a non-empty list of non-empty strings "
                "(leave it out for a token that may touch every key)"
            )
        prefixes = tuple(prefix.encode("utf-8") for prefix in given)
    return Token(raw_name, bytes.fromhex(digest), _ROLES[role], prefixes)


def load_tokens(path: str | os.PathLike[str]) -> tuple[Token, ...]:
    """The tokens of the tokens file at ``path``.

    Raises:
        ConfigError: one line naming the file, the entry (its number and name)
            and the field that is wrong, and why; or saying that the file
            cannot be read, is not TOML, or holds no token.
    """
    shown = os.fspath(path)

    def fail(why: str) -> ConfigError:
        return ConfigError(f"raftdb: config key 'tokens_file' ({shown}) {why}", "tokens_file", why)

    try:
        data: dict[str, Any] = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise fail(f"cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise fail("is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise fail(f"is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"token"})
    if unknown:
        raise fail(f"has an unknown key {unknown[0]!r} (only [[token]] tables belong there)")
    entries = data.get("token")
    if not isinstance(entries, list) or not entries:
        raise fail("has no [[token]] entry: every request would be refused")
    tokens = tuple(_parse_entry(shown, number, entry) for number, entry in enumerate(entries, 1))
    names: set[str] = set()
    digests: set[bytes] = set()
    for number, token in enumerate(tokens, 1):
        if token.name in names:
            raise _entry_error(shown, number, token.name, "has the name of an earlier entry")
        if token.digest in digests:
            raise _entry_error(shown, number, token.name, "has the sha256 of an earlier entry")
        names.add(token.name)
        digests.add(token.digest)
    return tokens


def _signature(path: str) -> tuple[int, int, int] | None:
    """What tells that the file changed: its mtime, size and inode (``None``: unreadable)."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


class TokenStore:
    """The tokens in force, re-read when the tokens file changes.

    Args:
        path: the tokens file; read (and checked) here.
        check_interval: least time between two looks at the file, in seconds.
        clock: monotonic seconds (tests pass their own).

    Raises:
        ConfigError: the file is wrong (:func:`load_tokens`).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        check_interval: float = CHECK_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = os.fspath(path)
        self.check_interval = check_interval
        self.clock = clock
        self._signature = _signature(self.path)
        self.tokens = load_tokens(self.path)
        self._next_check = clock() + check_interval

    def current(self) -> tuple[Token, ...]:
        """The tokens in force now: the file is looked at when ``check_interval`` has passed."""
        if self.clock() >= self._next_check:
            self.refresh()
        return self.tokens

    def refresh(self) -> bool:
        """Re-read the file if it changed; whether the tokens in force changed."""
        self._next_check = self.clock() + self.check_interval
        signature = _signature(self.path)
        if signature == self._signature:
            return False
        self._signature = signature
        if signature is None:
            logger.error(
                "tokens_file %s is gone or unreadable: the %d tokens read before stay in force",
                self.path,
                len(self.tokens),
            )
            return False
        try:
            tokens = load_tokens(self.path)
        except ConfigError as exc:
            logger.error("%s; the %d tokens read before stay in force", exc, len(self.tokens))
            return False
        self.tokens = tokens
        logger.info("tokens_file %s re-read: %d tokens in force", self.path, len(tokens))
        return True
