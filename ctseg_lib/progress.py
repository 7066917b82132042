"""Progress output that suits both a terminal and a log file.

On a terminal (``sys.stderr.isatty()``) :func:`progress` is a tqdm bar redrawn in place.  When
stderr is a file or a pipe (CI logs, ``ctseg train ... 2> train.log``, notebooks' captured
streams) carriage-return frames would pile up (a 30-epoch training log was 247 KB, ~2,500 frames),
so it prints at most one plain line per item instead, or nothing with ``lines=False``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def interactive() -> bool:
    """True when stderr is a terminal (progress bars are redrawn in place)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stream
        return False


def progress(iterable: Iterable[T], desc: str, total: int | None = None, *, lines: bool = True,
             disable: bool = False, leave: bool = True) -> Iterable[T]:
    """Iterate over ``iterable`` showing progress on stderr.

    Args:
        desc: label, e.g. ``"epoch 3/30"`` or ``"liver cases"``.
        total: number of items (default ``len(iterable)`` when it has one).
        lines: when stderr is not a terminal, print one line ``desc: i/total (t s)`` per item
            (False: print nothing, e.g. for the batches inside an epoch that already logs a line).
        disable: no output at all (``--quiet``).
        leave: keep the finished tqdm bar on the terminal.

    Returns:
        An iterable yielding the same items.
    """
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    if disable:
        return iterable
    if interactive():
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, total=total, leave=leave)
    return _lines(iterable, desc, total) if lines else iterable


def _lines(iterable: Iterable[T], desc: str, total: int | None) -> Iterator[T]:
    t0 = time.perf_counter()
    of = f"/{total}" if total is not None else ""
    for i, item in enumerate(iterable, 1):
        yield item
        print(f"{desc}: {i}{of} ({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
