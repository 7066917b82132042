"""``ctseg synth``: write a synthetic MSD-layout CT dataset (the book's built-in data)."""

from __future__ import annotations

import argparse
import sys
import time

from ..tasks import task_names

HELP = "write a synthetic CT phantom dataset (MSD layout) for the liver or lung task"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", choices=task_names(), required=True, help="MSD-like task to imitate")
    p.add_argument("--out", required=True, help="output folder (created; must be empty or an earlier synth output)")
    p.add_argument("--cases", type=int, default=20, help="number of labelled training cases (default 20)")
    p.add_argument("--test-cases", type=int, default=0, help="number of unlabelled test images (default 0)")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed gives identical files")
    p.add_argument("--scale", type=float, default=1.0,
                   help="voxel-count scale (1 = 160-256 px in-plane, 48-96 slices; 0.3 for quick tests)")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty folder anyway")


def run(args: argparse.Namespace) -> int:
    from ..data.synthetic import write_dataset
    from ..progress import interactive

    t0 = time.perf_counter()
    tty = interactive()

    def progress(i: int, n: int) -> None:
        # a terminal: one line redrawn in place; a log file: one plain line per case (no \r frames)
        msg = f"{args.task}: {i}/{n} cases ({time.perf_counter() - t0:.1f} s)"
        print(f"\r{msg}" if tty else msg, end="" if tty else "\n", file=sys.stderr, flush=True)

    out = write_dataset(args.task, args.out, args.cases, seed=args.seed, test_cases=args.test_cases,
                        scale=args.scale, overwrite=args.overwrite, progress=progress)
    if tty:
        print(file=sys.stderr)
    print(f"wrote {args.cases} training + {args.test_cases} test {args.task} cases to {out} "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0
