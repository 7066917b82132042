"""Checking cells for the book's exercises.

A chapter's exercise leaves ``answer = ...`` (the Ellipsis) for the student; the checking cell
calls :func:`check`.  While the answer is missing it only says so (so the book still builds); once
the student fills it in, it raises an ``AssertionError`` with a hint, or confirms it is right.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np


def check(answer: Any, expected: Any = None, *, rtol: float = 1e-3, atol: float = 1e-6,
          test: Callable[[Any], bool] | None = None, hint: str = "") -> bool | None:
    """Compare a student's ``answer`` with ``expected`` (numbers/arrays: ``np.allclose``).

    Returns ``None`` when not attempted (``answer is ...``), ``True`` when correct; raises
    ``AssertionError`` (with ``hint``) when wrong.  ``test`` replaces the comparison by a predicate.
    """
    if answer is ...:
        print("exercise not attempted yet: replace `...` with your answer and run this cell again")
        return None
    if test is not None:
        ok = bool(test(answer))
    elif isinstance(expected, int | float | np.ndarray | list | tuple) and not isinstance(expected, bool):
        ok = np.shape(answer) == np.shape(expected) and bool(np.allclose(answer, expected, rtol=rtol, atol=atol))
    else:
        ok = answer == expected
    if not ok:
        raise AssertionError("not quite" + (f": {hint}" if hint else ""))
    print("correct ✓")
    return True
