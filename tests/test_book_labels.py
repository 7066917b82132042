"""Labels (``(name)=`` targets and ``:label:`` of exercises) are unique across the book.

Sphinx reports a duplicate only as a warning at the end of a 15-minute build (which ``-W`` then
fails); this finds it in a second.  Regression: the performance appendix kept its chapter-12
exercise labels when the real-CT chapter became chapter 12.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parent.parent
LABEL = re.compile(r"^\(([\w-]+)\)=\s*$|^:label:\s*([\w-]+)\s*$", re.M)


def book_labels(root: Path = ROOT) -> list[tuple[str, str]]:
    """``(label, file name)`` of every label target in the chapters' markdown cells and the .md pages."""
    out = []
    for path in sorted((root / "book").glob("*.ipynb")):
        for cell in nbformat.read(path, 4).cells:
            if cell.cell_type == "markdown":
                out += [(a or b, path.name) for a, b in LABEL.findall(cell.source)]
    for path in sorted((root / "book").glob("*.md")):
        out += [(a or b, path.name) for a, b in LABEL.findall(path.read_text(encoding="utf-8"))]
    return out


def test_labels_are_unique_across_the_book():
    labels = book_labels()
    assert len(labels) > 20  # the scanner finds the exercises
    dup = {k: sorted({f for lab, f in labels if lab == k}) for k, n in Counter(lab for lab, _ in labels).items()
           if n > 1}
    assert not dup, f"duplicate labels: {dup}"


def test_exercise_labels_carry_their_chapter_number():
    for label, name in book_labels():
        m = re.fullmatch(r"ch(\d+)-ex\d+", label)
        if m:
            assert name.startswith(f"{int(m.group(1)):02d}_"), f"{label} in {name}"
