"""Sphinx-style roles in docstrings (``:class:`Client```) as links on the rendered page.

raftdb's docstrings name other objects the way Sphinx reads them. mkdocstrings
renders docstrings as Markdown, where ``:class:`~raftdb.client.Txn``` comes out as
the text ``:class:`` and a code span. :func:`link_roles` turns each such pair of the
rendered HTML into a cross-reference for mkdocs-autorefs (which resolves them
once every page is rendered): ``~`` keeps the last part of the name as the title,
``Title <target>`` names its own target, and a bare name is looked up in the
page's ``scope`` (``raftdb.client``). The references are optional: one whose
target is not on the site stays a code span, with no warning.
"""

from __future__ import annotations

import html
import re

__all__ = ["link_roles", "roles_as_code"]

_ROLE = re.compile(
    r":(?:py:)?(?:class|func|meth|attr|mod|data|exc|obj|const):<code>(?P<body>[^<]*)</code>"
)
_SOURCE_ROLE = re.compile(r":(?:py:)?[a-z]+:`(?P<body>[^`]+)`")
_TITLED = re.compile(r"(?P<title>.+?)\s*<(?P<target>[^<>]+)>")


def _target(body: str, scope: str) -> tuple[str, str]:
    """The ``(identifier, title)`` that a role's text names."""
    titled = _TITLED.fullmatch(body)
    if titled is not None:
        return titled["target"], titled["title"]
    if body.startswith("~"):
        name = body[1:]
        return name, name.rsplit(".", 1)[-1]
    if scope and not body.startswith(scope.split(".", 1)[0] + "."):
        return f"{scope}.{body}", body
    return body, body


def link_roles(page_html: str, scope: str) -> str:
    """``page_html`` with every rendered Sphinx role made an optional cross-reference."""

    def replace(match: re.Match[str]) -> str:
        identifier, title = _target(html.unescape(match["body"]).strip(), scope)
        return (
            f'<autoref identifier="{html.escape(identifier)}" optional>'
            f"<code>{html.escape(title)}</code></autoref>"
        )

    return _ROLE.sub(replace, page_html)


def roles_as_code(docstring: str) -> str:
    """A docstring's text with each role as the code span of the name it shows.

    For docstrings put on a page as they are (the error classes' on the API
    reference), not through mkdocstrings: ``:mod:`raftdb.http.auth``` becomes
    ``raftdb.http.auth`` in backticks, ``:class:`~a.B``` ``B``.
    """

    def replace(match: re.Match[str]) -> str:
        return f"`{_target(match['body'].strip(), '')[1]}`"

    return _SOURCE_ROLE.sub(replace, docstring)
