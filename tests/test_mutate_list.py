"""The mutant list of ``tools/mutate.py`` (``make mutate``) still applies to the code, so it cannot rot silently.

A mutant whose search text no longer occurs (the code was refactored) would abort ``make mutate``; one
whose replacement does not compile would be "killed" by an import error and inflate the score.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tools"))

import mutate  # noqa: E402


@pytest.mark.parametrize("m", mutate.MUTANTS, ids=[m.id for m in mutate.MUTANTS])
def test_mutant_applies_exactly_once_and_compiles(m):
    text = (REPO / m.path).read_text(encoding="utf-8")
    assert text.count(m.search) == 1, f"{m.id}: search text occurs {text.count(m.search)} times in {m.path}"
    mutated = mutate.apply(text, m)
    assert mutated != text
    compile(mutated, m.path, "exec")  # a syntax error would count as a kill without testing anything


def test_mutant_list_is_well_formed():
    ids = [m.id for m in mutate.MUTANTS]
    assert len(ids) == len(set(ids)), "duplicate mutant ids"
    assert 20 <= len(ids) <= 64  # `make mutate` stays a few minutes on 2 cores
    for path in {m.path for m in mutate.MUTANTS}:
        tests = mutate.TESTS[path]
        assert tests and all((REPO / t).is_file() for t in tests), f"{path}: missing test file in {tests}"
    modules = {m.path for m in mutate.MUTANTS}
    assert {"ctseg_lib/surface.py", "ctseg_lib/metrics.py", "ctseg_lib/data/nifti.py",
            "ctseg_lib/preprocessing.py", "ctseg_lib/losses.py"} <= modules


def test_apply_refuses_ambiguous_or_missing_search():
    m = mutate.Mutant("x", "f.py", "a", "b", "why")
    assert mutate.apply("xa", m) == "xb"
    for text in ("aa", "none"):
        with pytest.raises(ValueError, match="exactly once"):
            mutate.apply(text, m)
