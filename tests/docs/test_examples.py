"""The examples of docs/quickstart.md and docs/client.md, run against a real cluster.

Each page runs in order against ``make run``'s three nodes (the ``Procfile``, started on
free ports by :class:`~tests.docs.cluster.DocsCluster`), with node 1 leading, as in the
session the pages show. The conventions are in docs/testing.md ("Examples in the docs are
tests"); a failure names the file, line and block, what ran, and expected against actual.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.docs.cluster import DocsCluster
from tests.docs.examples import ExampleError, read_page
from tests.docs.runner import run_page

ROOT = Path(__file__).resolve().parents[2]

#: The pages whose examples run, and what each needs on the machine.
PAGES = {"docs/quickstart.md": ["curl"], "docs/client.md": []}


@pytest.mark.parametrize("page", sorted(PAGES))
def test_the_examples_of(
    page: str, docs_cluster: DocsCluster, request: pytest.FixtureRequest
) -> None:
    for tool in PAGES[page]:
        if shutil.which(tool) is None:
            why = f"{page}'s examples need {tool}: apt-get install {tool} (.ci/run does)"
            if os.environ.get("CI") == "true":
                pytest.fail(why, pytrace=False)  # CI must run them: .ci/run installs it
            pytest.skip(why)
    parsed = read_page(ROOT / page, shown_as=Path(page))
    docs_cluster.start_procfile(ROOT / "Procfile")
    docs_cluster.make_leader(1)
    failure: str | None = None
    try:
        tally = run_page(parsed, docs_cluster, rewrite=request.config.getoption("--rewrite"))
    except ExampleError as e:
        failure = str(e)  # failed outside the handler: the report needs no chained context
    if failure is not None:
        pytest.fail(failure, pytrace=False)
    print(tally.summary(parsed))
    assert tally.commands + tally.values > 0, f"{page} has no example that runs"
