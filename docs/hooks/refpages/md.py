"""Markdown pieces the reference pages are written with: code spans, table cells, tables.

The generated pages are plain Markdown that mkdocs renders like the hand-written
ones (Python-Markdown with ``tables``, ``attr_list`` and ``toc``). What comes from
the code (help texts, descriptions, defaults) may hold any character, so every
piece of it goes through :func:`cell` or :func:`code` before it lands in a table.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

__all__ = ["anchor", "cell", "code", "table", "text"]


def code(text: object) -> str:
    """``text`` as an inline code span, fenced with enough backticks to hold its own."""
    shown = str(text)
    fence = "`"
    while fence in shown:
        fence += "`"
    pad = " " if shown.startswith("`") or shown.endswith("`") else ""
    return f"{fence}{pad}{shown}{pad}{fence}"


_MARKUP = str.maketrans({char: "\\" + char for char in "\\`*_[]#"} | {"<": "&lt;", ">": "&gt;"})


def text(plain: object) -> str:
    """Plain text (a ``--help`` line) as Markdown that shows it as it is: no markup, no HTML."""
    return str(plain).translate(_MARKUP)


def cell(markdown: object) -> str:
    """``markdown`` made safe for one table cell: one line, no bare ``|``."""
    return " ".join(str(markdown).split()).replace("|", "\\|")


def anchor(text: str) -> str:
    """An HTML id made of ``text``: lower case, runs of other characters as one ``-``."""
    out: list[str] = []
    for char in text.lower():
        if char.isascii() and (char.isalnum() or char == "_"):
            out.append(char)
        elif out and out[-1] != "-":
            out.append("-")
    return "".join(out).strip("-")


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table; the cells must already be :func:`cell`-safe."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines.extend("| " + " | ".join(row) + " |" for row in rows)
    return "\n".join(lines) + "\n"
