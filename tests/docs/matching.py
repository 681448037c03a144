"""How the output a page shows is compared with the output an example printed.

Both sides go through the same normalisation, then must be equal line by line, with two
allowances (docs/testing.md has them for writers):

- ``...`` in a line matches any text within that line (doctest's ELLIPSIS); a line that
  is only ``...`` matches any number of lines, none included;
- the values that change from run to run are written in the page as they were in a real
  run, and compared by shape only: the numbers named :data:`VOLATILE_NUMBERS` (Raft
  indexes and terms, fences, sizes) in ``name=5`` (Python) or ``"name": 5`` (JSON) form,
  the ``ETag``/``X-Raftdb-Index``/``Date``/``Content-Length`` headers, the index in "the
  key's modify index is 5", lease ids, the hex suffix of a lock's key, ``sha256``,
  ``cluster_id``, timestamps, and the values of ``raftdb_*`` metrics.

Trailing whitespace and trailing blank lines never count. Everything else does: a status
code, a key, a value, a member's id or a role must be the same.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from functools import cache

__all__ = ["VOLATILE_NUMBERS", "ELLIPSIS", "diff", "lines_match", "normalise", "text_matches"]

ELLIPSIS = "..."

#: Field names whose integer or float values differ between runs.
VOLATILE_NUMBERS = (
    "index",
    "mod_index",
    "create_index",
    "read_index",
    "prev_mod_index",
    "commit_index",
    "applied_index",
    "first_index",
    "last_index",
    "oldest_index",
    "match_index",
    "term",
    "fence",
    "lease",
    "size",
    "remaining",
    "at",
    "last_contact_s",
)

_NUMBER = r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?"
_NAMES = "|".join(VOLATILE_NUMBERS)

#: (pattern, replacement) applied in order, to every line of both sides.
_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    # Python keyword form: index=5, remaining=9.991
    (re.compile(rf"\b({_NAMES})=({_NUMBER})\b"), r"\1=<n>"),
    # JSON form: "index": 5, "at":1764690000.12
    (re.compile(rf'"({_NAMES})":(\s*)({_NUMBER})'), r'"\1":\2<n>'),
    # lease ids: Lease(id=13, LeaseInfo(id=13, {"id":"13","ttl"
    (re.compile(r"\b(Lease|LeaseInfo)\(id=\d+"), r"\1(id=<n>"),
    (re.compile(r'"id":(\s*)"\d+"'), r'"id":\1"<n>"'),
    # headers (curl -i prints them lower-case)
    (re.compile(r'^(etag:\s*)"\d+"', re.IGNORECASE), r'\1"<n>"'),
    (re.compile(r"^(x-raftdb-index:\s*)\d+", re.IGNORECASE), r"\1<n>"),
    (re.compile(r"^(date:\s*).*$", re.IGNORECASE), r"\1<date>"),
    # a body's length follows the number of digits of the indexes in it
    (re.compile(r"^(content-length:\s*)\d+", re.IGNORECASE), r"\1<n>"),
    # the message of a failed condition names the key's modify index
    (re.compile(r"(modify index is )\d+"), r"\1<n>"),
    # a lock's waiting key ends in the lease id, 16 hex digits
    (re.compile(r"/[0-9a-f]{16}\b"), "/<hex16>"),
    (re.compile(r"\b(sha256=)'[0-9a-f]{64}'"), r"\1'<sha256>'"),
    (re.compile(r"""(\bcluster_id=|"cluster_id":\s*)(['"])[0-9a-f]{16}\2"""), r"\1\2<id>\2"),
    # Prometheus samples of raftdb's own metrics: the name and labels count, not the value
    (re.compile(rf"^(raftdb_\w+(?:\{{[^}}]*\}})?) {_NUMBER}$"), r"\1 <n>"),
)


def normalise(line: str) -> str:
    """``line`` with its volatile values replaced by placeholders, trailing blanks cut."""
    for pattern, replacement in _RULES:
        line = pattern.sub(replacement, line)
    return line.rstrip()


@cache
def _line_pattern(expected: str) -> re.Pattern[str]:
    parts = [re.escape(p) for p in expected.split(ELLIPSIS)]
    return re.compile(".*?".join(parts), re.DOTALL)


def text_matches(expected: str, actual: str) -> bool:
    """One expected line (``...`` allowed) against one actual line, both normalised."""
    return _line_pattern(normalise(expected)).fullmatch(normalise(actual)) is not None


def lines_match(expected: Sequence[str], actual: Sequence[str]) -> bool:
    """The expected lines against the actual ones; a line of only ``...`` matches any run
    of lines. Trailing blank lines on either side are ignored."""
    exp = _trim(expected)
    act = _trim(actual)
    memo: dict[tuple[int, int], bool] = {}

    def match(i: int, j: int) -> bool:
        key = (i, j)
        if key in memo:
            return memo[key]
        if i == len(exp):
            result = j == len(act)
        elif exp[i].strip() == ELLIPSIS:
            result = any(match(i + 1, k) for k in range(j, len(act) + 1))
        else:
            result = j < len(act) and text_matches(exp[i], act[j]) and match(i + 1, j + 1)
        memo[key] = result
        return result

    return match(0, 0)


def _trim(lines: Sequence[str]) -> list[str]:
    out = [line.rstrip() for line in lines]
    while out and not out[-1]:
        out.pop()
    return out


def diff(expected: Sequence[str], actual: Sequence[str]) -> str:
    """A unified diff, the page's lines against the printed ones (before normalisation)."""
    return "\n".join(
        difflib.unified_diff(
            _trim(expected), _trim(actual), "expected (the page)", "actual", lineterm=""
        )
    )
