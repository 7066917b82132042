"""Checking cells for the book's exercises.

A chapter's exercise leaves ``answer = ...`` (the Ellipsis) for the student; the checking cell
calls :func:`check`.  While the answer is missing it only says so (so the book still builds); once
the student fills it in, it raises an ``AssertionError`` with a hint, or confirms it is right.

Convention for every exercise of the book (``tests/test_book_rules.py`` enforces it):

1. a markdown cell with the task, ```` ```{exercise} Title ```` and ``:label: chNN-exK``, followed in
   the same cell by a ```` ```{hint} ```` admonition (``:class: dropdown``);
2. the next code cell is the checking cell: ``answer = ...`` then one call
   ``check(answer, expected, ..., wrong=[w1, w2])`` where each ``w`` is a *plausible wrong answer*
   (a typical slip: a forgotten factor, the other class, 0, a rounded value).  ``check`` verifies,
   every time the cell runs (so at every book build), that each of them is rejected by the same
   comparison — a check that would accept a wrong answer fails the build with a ``ValueError``;
3. the next markdown cell is the ```` ```{solution} chNN-exK ```` with ``:class: dropdown``.

Numbers are compared relative to the expected magnitude (``rtol``; the default absolute tolerance is
0), so an expected ``1.9e-7`` does not accept ``0``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def _matches(answer: Any, expected: Any, rtol: float, atol: float,
             test: Callable[[Any], bool] | None) -> bool:
    """The comparison :func:`check` applies (numbers/arrays: ``np.allclose``, else ``==``)."""
    if test is not None:
        return bool(test(answer))
    if isinstance(expected, int | float | np.ndarray | list | tuple) and not isinstance(expected, bool):
        try:
            a, e = np.asarray(answer, dtype=float), np.asarray(expected, dtype=float)
        except (TypeError, ValueError):
            return False
        return a.shape == e.shape and bool(np.allclose(a, e, rtol=rtol, atol=atol))
    return bool(answer == expected)


def check(answer: Any, expected: Any = None, *, rtol: float = 1e-3, atol: float = 0.0,
          test: Callable[[Any], bool] | None = None, hint: str = "",
          wrong: Sequence[Any] = ()) -> bool | None:
    """Compare a student's ``answer`` with ``expected``.

    Args:
        answer: the student's value; ``...`` (Ellipsis) means "not attempted yet".
        expected: the right value. Numbers, arrays, lists and tuples are compared with
            ``np.allclose(answer, expected, rtol, atol)`` after checking the shapes agree; anything
            else with ``==``.
        rtol: relative tolerance (fraction of ``|expected|``).
        atol: absolute tolerance, 0 by default: the tolerance scales with the expected value, so a
            tiny expected number (``1.9e-7``) does not accept ``0``.  Give an explicit ``atol`` only
            where the expected value may be exactly 0.
        test: a predicate that replaces the comparison.
        hint: appended to the "not quite" message.
        wrong: plausible wrong answers the check must reject; each is tried with the same
            comparison first, and a ``ValueError`` (an error of the book, not of the student) is
            raised if one of them would pass.

    Returns:
        ``None`` when not attempted, ``True`` when correct; raises ``AssertionError`` (with
        ``hint``) when wrong.
    """
    for w in wrong:
        if _matches(w, expected, rtol, atol, test):
            raise ValueError(f"this check accepts the wrong answer {w!r}: tighten it (rtol/atol/test)")
    if answer is ...:
        print("exercise not attempted yet: replace `...` with your answer and run this cell again")
        return None
    if not _matches(answer, expected, rtol, atol, test):
        raise AssertionError("not quite" + (f": {hint}" if hint else ""))
    print("correct ✓")
    return True
