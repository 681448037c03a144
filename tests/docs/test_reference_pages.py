"""The generated reference pages of the docs site (docs/hooks/refpages) say all the code says.

``make docs`` (and ``make test``) builds them into the site with ``--strict``; these
tests run the generators alone, without mkdocs, and check that nothing is left out:
every OpenAPI operation with each of its answers, every schema and error code, every
configuration key, every command and flag.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from raftdb.cli import build_parser
from raftdb.config import config_keys
from refpages import PAGES, api, cli, configuration
from refpages.md import anchor, cell, code, text
from refpages.roles import link_roles, roles_as_code

_ANCHOR = re.compile(r"\{ #([^ }]+) \}")
_LINK = re.compile(r"\]\(#([^)]+)\)")


def _sections(page: str, level: str) -> dict[str, str]:
    """The page's sections under headings of ``level`` (``"###"``), by their anchor."""
    found: dict[str, str] = {}
    for part in page.split(f"\n{level} ")[1:]:
        heading = part.split("\n", 1)[0]
        match = _ANCHOR.search(heading)
        assert match is not None, heading
        found[match[1]] = part.split("\n## ", 1)[0]
    return found


def test_every_page_is_registered_and_its_own_links_resolve() -> None:
    assert set(PAGES) == {"reference/api.md", "reference/configuration.md", "reference/cli.md"}
    for path, write in PAGES.items():
        page = write()
        assert page == write(), path  # the same code, the same page
        anchors = _ANCHOR.findall(page)
        assert len(anchors) == len(set(anchors)), path
        missing = set(_LINK.findall(page)) - set(anchors)
        assert not missing, (path, missing)


def test_the_hook_gets_the_same_pages_from_a_fresh_interpreter() -> None:
    # What docs/hooks/reference.py runs at each build (python -m refpages).
    hooks = Path(__file__).parents[2] / "docs" / "hooks"
    env = {**os.environ, "PYTHONPATH": str(hooks)}
    done = subprocess.run(
        [sys.executable, "-m", "refpages"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert json.loads(done.stdout) == {path: write() for path, write in PAGES.items()}


def test_the_api_page_has_every_operation_and_each_of_its_answers() -> None:
    document = api.document()
    page = api.page(document)
    sections = _sections(page, "###")
    operations = list(api.operations(document))
    # Every method of every path item (none is skipped as an unknown method).
    assert len(operations) == sum(len(item) for item in document["paths"].values()) > 25
    for method, path, operation in operations:
        section = sections[operation["operationId"]]
        assert section.startswith(f"`{method.upper()} {path}`"), operation["operationId"]
        assert operation["summary"].rstrip(".") in section
        for status in operation["responses"]:
            assert f"| **{status}** |" in section, (operation["operationId"], status)
        for parameter in operation.get("parameters", []):
            assert f"| `{parameter['name']}` | {parameter['in']} |" in section
        if "requestBody" in operation:
            assert "**Request body**" in section, operation["operationId"]
    # A node with a tokens_file: every operation that needs a token says which role.
    assert "a token with role `admin`" in sections["snapshot"]
    assert "open: no token" in sections["healthz"]
    assert "(none while `public_status` is on" in sections["status"]


def test_the_api_page_has_every_schema_and_error_code() -> None:
    document = api.document()
    page = api.page(document)
    sections = _sections(page, "###")
    for name, schema in document["components"]["schemas"].items():
        section = sections[api.schema_anchor(name)]
        for field in schema.get("properties", {}):
            assert f"| `{field}` |" in section, (name, field)
    classes = api.error_classes()
    codes = {cls.code for cls in classes}
    assert {"not_found", "unavailable", "outcome_unknown", "nospace", "forbidden"} <= codes
    for cls in classes:
        assert f"| **{cls.status}** | `{cls.code}` |" in page, cls


def test_the_configuration_page_has_every_key() -> None:
    page = configuration.page()
    keys = config_keys()
    assert len(keys) > 30
    for key in keys:
        row = next(line for line in page.splitlines() if line.startswith(f"| `{key.name}`{{"))
        assert f"`{key.env}`" in row, key.name
        assert f"`{key.flag}" in row, key.name
        if key.is_bool:
            assert f"`--no-{key.flag[2:]}`" in row, key.name
        assert ("**required**" if key.required else f"`{key.default_text}`") in row, key.name
        assert cell(text(key.help)) in row, key.name
    assert "`1048576` (1 MiB)" in page


def _options(parser: argparse.ArgumentParser) -> list[str]:
    return [
        option
        for action in parser._actions
        if action.help != argparse.SUPPRESS and not isinstance(action, argparse._HelpAction)
        for option in action.option_strings
    ]


def test_the_cli_page_has_every_command_and_flag() -> None:
    page = cli.page()
    commands = list(cli.commands())
    names = {command.name for command in commands}
    assert {"raftdb", "raftdb serve", "raftdb put", "raftdb snapshot save"} <= names
    sections = {command.anchor: command for command in commands}
    assert sorted(_ANCHOR.findall(page)) == sorted(sections)
    for command in commands:
        start = page.index(f"`{command.name}` {{ #{command.anchor} }}")
        end = page.find("\n#", start)
        section = page[start:] if end == -1 else page[start:end]
        assert cli.usage(command.parser) in section, command.name
        shared = "the same as for" in section
        for option in _options(command.parser):
            # A group listed once for several commands is linked, not repeated.
            assert option in section or (shared and option in page), (command.name, option)


def test_the_cli_page_is_as_wide_as_a_terminal_whatever_the_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    wide = cli.page()
    monkeypatch.setenv("COLUMNS", "40")
    assert cli.page() == wide
    usage = cli.usage(build_parser())
    assert max(len(line) for line in usage.splitlines()) <= 76


def test_markdown_pieces() -> None:
    assert code("a`b") == "``a`b``"
    assert code("`x") == "`` `x ``"
    assert cell("a | b\nc") == "a \\| b c"
    assert text("RAFTDB_* <id> [x]") == "RAFTDB\\_\\* &lt;id&gt; \\[x\\]"
    assert anchor("raftdb snapshot save") == "raftdb-snapshot-save"
    assert anchor("LeaseGrant") == "leasegrant"


def test_docstring_roles_become_optional_cross_references() -> None:
    rendered = (
        "<p>See :class:<code>~raftdb.client.Txn</code>, :func:<code>retried</code> and "
        ":meth:<code>Client.snapshot &lt;raftdb.client.Client.snapshot&gt;</code>; "
        "<code>plain</code> stays.</p>"
    )
    linked = link_roles(rendered, "raftdb.client")
    for role in (":class:", ":func:", ":meth:"):
        assert role not in linked
    assert '<autoref identifier="raftdb.client.Txn" optional><code>Txn</code></autoref>' in linked
    assert '<autoref identifier="raftdb.client.retried" optional><code>retried</code>' in linked
    assert (
        '<autoref identifier="raftdb.client.Client.snapshot" optional>'
        "<code>Client.snapshot</code></autoref>"
    ) in linked
    assert "<code>plain</code> stays" in linked


def test_docstring_roles_on_a_page_of_our_own_become_code() -> None:
    assert roles_as_code("No token (:mod:`raftdb.http.auth`), see :class:`~a.b.C`.") == (
        "No token (`raftdb.http.auth`), see `C`."
    )
    assert ":mod:" not in api.page()
