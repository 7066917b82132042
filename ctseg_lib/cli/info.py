"""``ctseg info``: summarise an MSD-layout dataset (geometry, orientations, class balance, HU)."""

from __future__ import annotations

import argparse
import json

HELP = "summarise an MSD-layout dataset: shapes, spacings, orientations, label balance, HU"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("root", help="dataset folder containing dataset.json")
    p.add_argument("--max-cases", type=int, default=None, help="only the first N training cases")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args: argparse.Namespace) -> int:
    from ..data.stats import dataset_summary, format_summary
    from ..errors import CTSegError

    if args.max_cases is not None and args.max_cases < 1:
        raise CTSegError(f"--max-cases must be ≥ 1, got {args.max_cases}")
    summary = dataset_summary(args.root, max_cases=args.max_cases)
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0
