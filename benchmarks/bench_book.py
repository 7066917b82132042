"""Benchmark 5: whole-book build time and time-to-Dice of the liver experiment.

These are measured by whoever builds the book (the lead) and stored in ``benchmarks/book_times.json``
(any flat or nested JSON of numbers, e.g. ``{"build_cold_s": 812, "build_warm_s": 41,
"liver_time_to_dice_s": {"0.8": 95}}``); this script prints them.  ``--book`` instead times
``jupyter-book build .`` (run it twice: the first is cold only if ``_build`` was removed).
``--liver DIR`` runs the CLI acceptance experiment of the liver phantoms in ``DIR`` — ``ctseg synth``
(20 cases) → ``train --config liver_2d`` → ``predict --split test --postprocess lcc,restrict`` →
``evaluate`` — and records the wall time of each step, the held-out Dice, and the training time at
which the validation Dice first reached given levels (time-to-Dice), in ``book_times.json``.
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


def _ctseg(*args: str) -> float:
    exe = Path(sys.executable).with_name("ctseg")
    t0 = time.perf_counter()
    subprocess.run([str(exe), *args], check=True)
    return round(time.perf_counter() - t0, 1)


def liver_experiment(work: Path, config: str = "liver_2d", cases: int = 20) -> dict:
    """The CLI acceptance run; returns (and stores under ``liver_cli``) its timings and Dice."""
    import csv

    work.mkdir(parents=True, exist_ok=True)
    data, run, preds = work / "Task03_Liver", work / "run", work / "preds"
    out: dict = {"config": config, "cases": cases, "seconds": {}}
    out["seconds"]["synth"] = _ctseg("synth", "--task", "liver", "--out", str(data), "--cases", str(cases),
                                     "--seed", "0", "--overwrite")
    out["seconds"]["train"] = _ctseg("train", "--config", config, "--data", str(data), "--out", str(run), "--quiet")
    out["seconds"]["predict"] = _ctseg("predict", "--checkpoint", str(run / "best.pt"), "--input", str(data),
                                       "--split", "test", "--out", str(preds), "--postprocess", "lcc,restrict",
                                       "--quiet")
    out["seconds"]["evaluate"] = _ctseg("evaluate", "--pred", str(preds), "--gt", str(data), "--out",
                                        str(work / "metrics.csv"), "--split", f"{run / 'split.json'}:test")
    rows = list(csv.DictReader((work / "metrics.csv").open()))
    out["test_dice"] = {name: round(sum(float(r["dice"]) for r in rows if r["label_name"] == name)
                                    / max(1, sum(r["label_name"] == name for r in rows)), 4)
                        for name in dict.fromkeys(r["label_name"] for r in rows)}
    history = json.loads((run / "history.json").read_text())
    elapsed, ttd = 0.0, {}
    for h in history:  # training seconds until the mean validation Dice first reached each level
        elapsed += h["time"]
        for level in (0.5, 0.6, 0.7):
            if h.get("val_mean_dice", 0) >= level and str(level) not in ttd:
                ttd[str(level)] = round(elapsed, 1)
    out["time_to_val_mean_dice_s"] = ttd
    times = read_times() or {}
    times["liver_cli"] = out
    from ctseg_lib.io import write_json_atomic

    write_json_atomic(TIMES, times)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--book", action="store_true", help="time a jupyter-book build now")
    ap.add_argument("--liver", type=Path, metavar="DIR", help="run the CLI liver experiment in DIR")
    args = ap.parse_args()
    if args.book:
        print(f"jupyter-book build: {time_build():.1f} s")
        return
    if args.liver:
        print(json.dumps(liver_experiment(args.liver), indent=2))
        return
    times = read_times()
    print(json.dumps(times, indent=2) if times is not None else f"no {TIMES.name} yet (the lead records it)")


if __name__ == "__main__":
    main()
