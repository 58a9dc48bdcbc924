"""Table-driven: every recorded raw section in tests/fixtures/facts/<family>/<case>.txt parses
to the reviewed <case>.json next to it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentctl.ctl.facts import FAMILIES

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "facts"
CASES = sorted(FIXTURES.glob("*/*.txt"))


def read_raw(path: Path) -> str:
    # split_sections hands parsers the section without its trailing newline
    return path.read_text(encoding="utf-8").removesuffix("\n")


@pytest.mark.parametrize("txt", CASES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_fixture_parses_to_expected(txt: Path) -> None:
    family = FAMILIES[txt.parent.name]
    expected = json.loads(txt.with_suffix(".json").read_text(encoding="utf-8"))
    got = family.parse(read_raw(txt))
    assert got == expected
    assert json.loads(json.dumps(got)) == got  # plain JSON types only


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_family_has_recorded_and_empty_cases(name: str) -> None:
    cases = {p.stem for p in (FIXTURES / name).glob("*.txt")}
    assert "empty" in cases
    assert "debian12_local" in cases
    assert all((FIXTURES / name / f"{c}.json").is_file() for c in cases)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_empty_input_keeps_the_shape(name: str) -> None:
    """A missing file or tool yields the same keys as a full run, so consumers never KeyError."""
    full = json.loads((FIXTURES / name / "debian12_local.json").read_text(encoding="utf-8"))
    empty = FAMILIES[name].parse("")
    assert set(empty) == set(full)
