"""Run every ctseg-vs-MONAI benchmark and print ONE markdown table; write ``benchmarks/results.json``.

    python benchmarks/run.py            # full sizes (< ~10 min on 2 cores)
    python benchmarks/run.py --quick    # small sizes (< ~60 s; what the performance chapter runs)
    python benchmarks/run.py --only metrics,data

ratio = MONAI time / ctseg time (≥ 1: ctseg at least as fast).  Every benchmark checks that the
outputs agree and raises ``AgreementError`` otherwise.  Method: see ``benchmarks/common.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

import bench_book  # noqa: E402
import bench_data  # noqa: E402
import bench_metrics  # noqa: E402
import bench_sliding_window  # noqa: E402
import bench_train  # noqa: E402
from common import Result, choose_threads, machine_info, markdown_table  # noqa: E402

BENCHMARKS = {"train": bench_train.run, "sliding_window": bench_sliding_window.run,
              "metrics": bench_metrics.run, "data": bench_data.run}


def run_all(quick: bool = False, only: list[str] | None = None,
            threads: int | None = None) -> tuple[list[Result], dict]:
    """Run the selected benchmarks; returns ``(results, info)`` (info: machine + seconds per benchmark).

    ``threads``: torch intra-op threads (None: see :func:`common.choose_threads`).
    """
    choose_threads(threads)
    warnings.filterwarnings("ignore", category=FutureWarning)  # MONAI-internal deprecation notices
    warnings.filterwarnings("ignore", category=UserWarning, module="monai")
    info = {"machine": machine_info(), "quick": quick, "seconds": {}}
    results: list[Result] = []
    for name, fn in BENCHMARKS.items():
        if only and name not in only:
            continue
        t0 = time.perf_counter()
        results += fn(quick=quick)
        info["seconds"][name] = round(time.perf_counter() - t0, 1)
    info["book_times"] = bench_book.read_times()
    return results, info


def save(results: list[Result], info: dict, path: Path = HERE / "results.json") -> Path:
    from ctseg_lib.io import write_json_atomic

    def clean(o):  # JSON has no NaN: write null
        if isinstance(o, float) and o != o:
            return None
        if isinstance(o, dict):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, list | tuple):
            return [clean(v) for v in o]
        return o

    write_json_atomic(path, clean({"info": info, "results": [r.to_dict() for r in results]}))
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (the book's performance chapter)")
    ap.add_argument("--only", default="", help=f"comma-separated subset of {sorted(BENCHMARKS)}")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: 1 if the machine is oversubscribed, else torch's default)")
    ap.add_argument("--out", default=str(HERE / "results.json"))
    a = ap.parse_args(argv)
    only = [s for s in a.only.split(",") if s] or None
    results, info = run_all(a.quick, only, a.threads)
    m = info["machine"]
    print(f"{m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), "
          f"MONAI {m['monai']}, load {m['load_1min']}; seconds per benchmark {info['seconds']}\n")
    print(markdown_table(results))
    if info["book_times"]:
        print("\nbook:", json.dumps(info["book_times"]))
    print(f"\nwrote {save(results, info, Path(a.out))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
