"""Runs one page's examples in order against a :class:`~tests.docs.cluster.DocsCluster`.

Blocks run in page order: a ``stop nodes`` directive first stops the cluster, a ``file``
block is written into the scratch checkout (ports mapped), console blocks run their
commands (:mod:`tests.docs.console`), python blocks run in the page's one interpreter
(:mod:`tests.docs.snippets`), ``not run`` blocks are counted with their reason, and other
blocks (data: toml, json, text...) are left as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tests.docs.cluster import DocsCluster
from tests.docs.console import run_console
from tests.docs.examples import Page
from tests.docs.rewrite import Edit, apply_edits
from tests.docs.snippets import SnippetRunner

__all__ = ["Tally", "run_page"]


@dataclass
class Tally:
    """What a page's run checked, for the test's summary line."""

    commands: int = 0
    snippets: int = 0
    values: int = 0
    files: int = 0
    not_run: list[str] = field(default_factory=list)

    def summary(self, page: Page) -> str:
        parts = [
            f"{page.path}: {self.commands} commands, {self.snippets} snippets "
            f"({self.values} values), {self.files} files written, {len(self.not_run)} not run"
        ]
        parts += [f"  not run: {why}" for why in self.not_run]
        return "\n".join(parts)


def run_page(page: Page, docs: DocsCluster, *, rewrite: bool = False) -> Tally:
    """Run every example of ``page``; see the module docstring. With ``rewrite``, the
    outputs that differ are written into the page instead (:mod:`tests.docs.rewrite`).

    Raises:
        ExampleError: the first example that failed (file, line, block, what ran,
            expected and actual).
    """
    tally = Tally()
    edits: list[Edit] | None = [] if rewrite else None
    snippets = SnippetRunner(docs.ports, docs.work, rewrite=edits)
    try:
        for block in page.blocks:
            if block.stop_nodes:
                docs.stop_nodes()
            if block.not_run is not None:
                tally.not_run.append(f"{block.where}: {block.not_run}")
                continue
            if block.file_name is not None:
                target = docs.work / block.file_name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(docs.ports.to_real(block.source))
                tally.files += 1
            elif block.kind == "console":
                tally.commands += run_console(docs, block, edits)
            elif block.kind == "python":
                tally.values += snippets.run(block)
                tally.snippets += 1
    finally:
        snippets.close()
        if edits:
            apply_edits(page.file, edits)
    return tally
