"""The mutation catalogue still applies to the core (fast: nothing is simulated).

A refactor of ``raftdb/raft/`` that moves or rewrites a line a mutation edits
fails here, naming the mutation, so the catalogue is updated with the core
instead of rotting. The mutation check itself (every mutant caught) is
``python -m tests.mutation``; ``make test`` runs its bounded form.
"""

from __future__ import annotations

import ast
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from .catalogue import AREAS, CATALOGUE, Mutation, MutationError, by_name
from .runner import ROOT, _run_name, _verdict, prepare

CORE = ROOT / "raftdb" / "raft"


@pytest.mark.parametrize("mutation", CATALOGUE, ids=[m.name for m in CATALOGUE])
def test_the_mutation_applies_to_the_current_core(mutation: Mutation) -> None:
    source = (CORE / mutation.file).read_text()
    mutated = mutation.apply_to(source)  # raises, naming the mutation, if the text moved
    assert mutated != source
    ast.parse(mutated, filename=mutation.file)  # still Python: the simulation can import it
    assert mutation.description
    assert mutation.rule


def test_names_are_unique_and_every_area_is_covered() -> None:
    names = [m.name for m in CATALOGUE]
    assert len(names) == len(set(names))
    assert {m.area for m in CATALOGUE} == set(AREAS)
    for area in AREAS:
        assert sum(m.area == area for m in CATALOGUE) >= 3, area


def test_a_text_that_is_gone_or_ambiguous_is_refused() -> None:
    m = by_name("figure8")
    with pytest.raises(MutationError, match="'figure8'.*not found.*catalogue.py"):
        m.apply_to("nothing of the kind")
    with pytest.raises(MutationError, match="occurs 2 times"):
        m.apply_to(m.original + "\n" + m.original)
    with pytest.raises(KeyError, match="no mutation 'nope'"):
        by_name("nope")


def test_prepare_copies_the_core_and_the_simulation_and_mutates_only_the_copy(
    tmp_path: Path,
) -> None:
    m = by_name("figure8")
    before = (CORE / m.file).read_text()
    prepare(m, tmp_path)
    assert (tmp_path / "tests" / "sim" / "test_sim.py").is_file()
    assert (tmp_path / "tests" / "conftest.py").is_file()
    assert (tmp_path / "pyproject.toml").is_file()
    copied = (tmp_path / "raftdb" / "raft" / m.file).read_text()
    assert m.replacement in copied
    assert m.original not in copied
    assert (CORE / m.file).read_text() == before


def test_a_junit_report_gives_the_failing_run_and_its_first_line(tmp_path: Path) -> None:
    report = tmp_path / "report.xml"
    report.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.sim.test_sim" name="test_targeted_schedule[figure8-0]"/>'
        '<testcase classname="tests.sim.test_sim" name="test_simulation[12]">'
        '<failure message="Failed: seed 12: two leaders in term 3: 1 and 2&#10;replay: x">'
        "</failure></testcase></testsuite></testsuites>"
    )
    assert _verdict(report) == (2, "seed 12", "seed 12: two leaders in term 3: 1 and 2")
    assert _verdict(tmp_path / "missing.xml") is None
    case = ET.Element("testcase", name="test_targeted_schedule[new-leader-read-2]")
    assert _run_name(case) == "schedule new-leader-read#2"
