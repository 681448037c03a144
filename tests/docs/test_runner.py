"""The example runner itself, without a cluster: reading pages, matching output, failing
with the file, line and block, and ``--rewrite``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.docs.cluster import DocsCluster, PortMap, doc_ports
from tests.docs.console import run_console
from tests.docs.examples import ExampleError, expectations, read_page
from tests.docs.matching import lines_match, text_matches
from tests.docs.rewrite import Edit, apply_edits
from tests.docs.snippets import SnippetRunner

PAGE = """\
# Title

## Session

```console
$ echo one \\
  two
one two
$ true
```

<!-- example: not run (needs a terminal) -->
```console
$ top
```

<!-- example: stop nodes -->
<!-- example: file conf/a.toml -->
```toml
id = 1
```

- a list item:

  ```python
  x = [1, 2]
  x  # → [1,
  #   2]
  ```
"""


def page_file(tmp_path: Path, text: str = PAGE) -> Path:
    path = tmp_path / "page.md"
    path.write_text(text)
    return path


def test_blocks_commands_directives_and_expectations(tmp_path: Path) -> None:
    page = read_page(page_file(tmp_path), shown_as=Path("docs/page.md"))
    console, not_run, toml, python = page.blocks
    assert [b.kind for b in page.blocks] == ["console", "console", "data", "python"]
    assert console.where == 'docs/page.md:5 (console block in "Session")'
    first, second = console.commands
    assert (first.line, first.text, first.expected) == (6, "echo one \\\n  two", ("one two",))
    assert first.output_line == 8
    assert (second.line, second.expected) == (9, ())
    assert not_run.not_run == "needs a terminal"
    assert toml.stop_nodes
    assert toml.file_name == "conf/a.toml"
    assert python.indent == "  "
    assert python.source.startswith("x = [1, 2]\n")
    (exp,) = expectations(python)
    assert (exp.line, exp.lines, exp.text) == (27, 2, "[1, 2]")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("```\nmake run\n```\n", "a block without a language"),
        ("```bash\nls\n```\n", "a bash block"),
        ("```console\nls\n```\n", "starts with a `$ ` command"),
        ("```console\n$ ls\n", "never closed"),
        ("<!-- example: not run -->\n```console\n$ ls\n```\n", "unknown directive"),
        ("<!-- example: stop nodes -->\ntext\n", "right before a code block"),
        ("text\n<!-- example: stop nodes -->\n", "not followed by a block"),
    ],
)
def test_what_the_conventions_refuse(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ExampleError, match=re.escape(message)):
        read_page(page_file(tmp_path, text))


def test_ellipsis_and_volatile_values() -> None:
    assert text_matches("WriteResult(index=5, ...)", "WriteResult(index=12, duplicate=False)")
    assert text_matches('etag: "6"', 'etag: "61"')
    assert text_matches('{"term": 2, "id": 1}', '{"term": 7, "id": 1}')
    assert text_matches("date: Wed, 02 Dec 2026 16:52:36 GMT", "date: Thu, 03 Dec 2026 1:2:3")
    assert text_matches("raftdb_term 2.0", "raftdb_term 14.0")
    # what is not volatile must be equal
    assert not text_matches("HTTP/1.1 204 No Content", "HTTP/1.1 412 Precondition Failed")
    assert not text_matches('{"term": 2, "id": 1}', '{"term": 2, "id": 3}')
    assert not text_matches("Lease(id=10, ttl=10)", "Lease(id=10, ttl=11)")
    assert not text_matches("bar", "foo")
    # a line of ... is any run of lines, none included
    assert lines_match(["a", "...", "z"], ["a", "b", "c", "z"])
    assert lines_match(["a", "...", "z"], ["a", "z"])
    assert not lines_match(["a", "z"], ["a", "b", "z"])
    assert lines_match(["a", ""], ["a  ", "", ""])


def test_ports_map_both_ways_in_one_pass() -> None:
    ports = PortMap({12380: 22380, 22380: 12380, 42379: 50001})
    assert ports.to_real("--port 12380 http://127.0.0.1:22380 42379") == (
        "--port 22380 http://127.0.0.1:12380 50001"
    )
    assert ports.to_doc("http://127.0.0.1:50001 index 50001") == (
        "http://127.0.0.1:42379 index 50001"
    )
    assert doc_ports(4) == (42380, 42379)


def test_a_failing_command_says_where_what_ran_and_the_difference(tmp_path: Path) -> None:
    text = "## S\n\n```console\n$ echo http://127.0.0.1:12380 got\n"
    text += "http://127.0.0.1:12380 want\n```\n"
    page = read_page(page_file(tmp_path, text), shown_as=Path("docs/p.md"))
    docs = DocsCluster(tmp_path / "c")
    try:
        real = docs.cluster.nodes[1].api_port
        with pytest.raises(ExampleError) as failed:
            run_console(docs, page.blocks[0])
        message = str(failed.value)
        where = 'docs/p.md:4: a command of the docs/p.md:3 (console block in "S")'
        assert message.startswith(where)
        assert f"echo http://127.0.0.1:{real} got" in message  # what ran
        assert "-http://127.0.0.1:12380 want\n+http://127.0.0.1:12380 got" in message

        edits: list[Edit] = []
        assert run_console(docs, page.blocks[0], edits) == 1
        apply_edits(page.file, edits)
        assert "http://127.0.0.1:12380 got\n```" in page.file.read_text()

        failing = read_page(page_file(tmp_path, "```console\n$ false\n```\n"))
        with pytest.raises(ExampleError, match="exit status 1"):
            run_console(docs, failing.blocks[0], [])  # never rewritten
    finally:
        docs.close()


def test_snippets_share_a_namespace_and_fail_with_the_page_line(tmp_path: Path) -> None:
    text = (
        "```python\nn = 41\n```\n\n"
        "```python\nn + 1  # → 42\nn  # → 40\n```\n\n"
        "```python\nif n > 100:\n    n  # → 0\n```\n\n"
        "```python\n\n1 / 0\n```\n"
    )
    page = read_page(page_file(tmp_path, text), shown_as=Path("docs/p.md"))
    runner = SnippetRunner(PortMap({12380: 12380}), tmp_path)
    assert runner.run(page.blocks[0]) == 0
    with pytest.raises(ExampleError) as wrong:
        runner.run(page.blocks[1])
    assert str(wrong.value).startswith("docs/p.md:7: in the docs/p.md:5 (python block")
    assert "expected: 40\nactual:   41" in str(wrong.value)
    with pytest.raises(ExampleError, match=r"docs/p\.md:12: .* never ran"):
        runner.run(page.blocks[2])
    with pytest.raises(ExampleError, match=r'(?s)raised.*docs/p\.md", line 17.*ZeroDivisionError'):
        runner.run(page.blocks[3])


def test_rewrite_wraps_long_values_under_the_arrow(tmp_path: Path) -> None:
    value = "[" + ", ".join(f"'item-{i:02}'" for i in range(12)) + "]"
    text = f"```python\nitems = {value}\nitems  # → []\n```\n"
    page = read_page(page_file(tmp_path, text))
    edits: list[Edit] = []
    SnippetRunner(PortMap({12380: 12380}), tmp_path, rewrite=edits).run(page.blocks[0])
    apply_edits(page.file, edits)
    again = read_page(page.file)
    (exp,) = expectations(again.blocks[0])
    assert exp.lines > 1
    assert text_matches(exp.text, value)
    assert all(len(line) <= 92 for line in page.file.read_text().splitlines()[2:])
