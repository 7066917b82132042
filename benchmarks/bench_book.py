"""Benchmark 5: whole-book build time and time-to-Dice of the liver experiment.

These are measured by whoever builds the book (the lead) and stored in ``benchmarks/book_times.json``
(any flat or nested JSON of numbers, e.g. ``{"build_cold_s": 812, "build_warm_s": 41,
"liver_time_to_dice_s": {"0.8": 95}}``); this script prints them.  ``--book`` instead times
``jupyter-book build .`` (run it twice: the first is cold only if ``_build`` was removed).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMES = Path(__file__).resolve().parent / "book_times.json"


def read_times(path: Path = TIMES) -> dict | None:
    """The recorded timings, or None if the file does not exist."""
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def time_build(root: Path = ROOT) -> float:
    """Seconds for one ``jupyter-book build`` of ``root`` (raises if the build fails)."""
    exe = Path(sys.executable).with_name("jupyter-book")
    t0 = time.perf_counter()
    subprocess.run([str(exe), "build", str(root), "-W", "--keep-going"], check=True)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--book", action="store_true", help="time a jupyter-book build now")
    if ap.parse_args().book:
        print(f"jupyter-book build: {time_build():.1f} s")
        return
    times = read_times()
    print(json.dumps(times, indent=2) if times is not None else f"no {TIMES.name} yet (the lead records it)")


if __name__ == "__main__":
    main()
