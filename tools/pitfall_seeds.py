"""Chapter 10's pitfalls one at a time, over several seeds (what the chapter's single end-to-end run cannot say).

    python tools/pitfall_seeds.py --out /tmp/pitfalls            # 4 pipelines x 3 seeds, ~13 min (one core)
    python tools/pitfall_seeds.py --out /tmp/pitfalls --seeds 0  # one seed, ~4.5 min
    python tools/pitfall_seeds.py --out /tmp/pitfalls --set context  # chapter 8's 2D vs 2.5D, 3 seeds

``--set context`` compares chapter 8's two models instead (the book's 2D model and its 2.5D copy,
``model.context: 1``), which the chapter trains with three seeds on its own fresh phantoms (final
epochs); this tool tests ``best.pt`` on other fresh phantoms (``--test-seed``).

Trains the book's liver model (``liver_2d_book``) and three variants of it with the budget of the
book — each differs in the config keys listed in ``PIPELINES`` only — on the book's 16 training
phantoms (``get_dataset("liver", cases=16, test_cases=2)``, generator seed 0), and tests every run on
fresh phantoms from ``--test-seed`` (default 9441, used by no chapter or test).  Each pipeline keeps its
own postprocessing (the book's: largest liver component + tumour inside the liver; merged: largest
component; the original project's: none).  Prints one line per run and the mean and spread over seeds:
liver+tumour region Dice (every pipeline has that), and for the three-class ones liver Dice, tumour
Dice (case mean over tumour-bearing scans), tumours found and false-positive lesions per scan.
Writes ``results_<set>.jsonl`` into ``--out``.  Runs that exist in ``--out/runs`` are reused.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: the pipelines compared: config changes relative to the book's liver model (chapter 10)
PIPELINES: dict[str, dict] = {
    "book": {},
    "bilinear masks (c)": {"data.preprocess.label_resize": "linear_uint8"},
    "merged classes (b)": {"data.merge_labels": True, "data.fg_classes": None, "postprocess": ["lcc"]},
    "original (a+b+c+e)": {"data.normalization": "minmax", "data.merge_labels": True, "data.fg_classes": None,
                           "data.preprocess.label_resize": "linear_uint8", "loss.name": "dice",
                           "loss.kwargs": {"batch_dice": True}, "postprocess": []},
}
#: chapter 8's comparison: the book's 2D model against its 2.5D copy (3 adjacent slices as channels)
CONTEXT: dict[str, dict] = {"book": {}, "2.5D (context 1)": {"model.context": 1}}


def evaluate_run(run_dir: Path, test_root: Path) -> dict:
    """Region, liver, tumour and lesion-detection scores of ``run_dir/best.pt`` on every case of ``test_root``."""
    from ctseg_lib.checkpoint import load_model
    from ctseg_lib.data.msd import MSDDataset
    from ctseg_lib.inference import predict_case
    from ctseg_lib.lesions import lesion_metrics, match_lesions
    from ctseg_lib.metrics import dice
    from ctseg_lib.postprocessing import apply_postprocessing

    model, cfg, meta = load_model(run_dir / "best.pt")
    test = MSDDataset(test_root)
    region, liver, tumour, matches = [], [], [], []
    for cid in test.case_ids:
        img, lab = test.load_case(cid)
        pred, _ = apply_postprocessing(predict_case(model, cfg, meta, img), cfg.postprocess, meta["labels"])
        gt = lab.array
        region.append(dice(pred > 0, gt > 0))
        if meta["num_classes"] == 3:
            liver.append(dice(pred == 1, gt == 1))
            if (gt == 2).any():
                tumour.append(dice(pred == 2, gt == 2))
            matches.append(match_lesions(pred == 2, gt == 2))
    out = {"region": float(np.mean(region))}
    if matches:
        lm = lesion_metrics(matches)
        out |= {"liver": float(np.mean(liver)), "tumour": float(np.mean(tumour)) if tumour else float("nan"),
                "found": lm["detected"], "lesions": lm["lesions"], "fp_per_scan": lm["fp_per_scan"]}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for the data, the runs and results.jsonl")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default 0 1 2)")
    ap.add_argument("--test-seed", type=int, default=9441, help="generator seed of the 8 fresh test phantoms")
    ap.add_argument("--set", choices=("pitfalls", "context"), default="pitfalls",
                    help="chapter 10's pitfalls (default) or chapter 8's 2D vs 2.5D")
    args = ap.parse_args(argv)

    import torch

    from ctseg_lib.config import TrainConfig
    from ctseg_lib.data.synthetic import write_dataset
    from ctseg_lib.notebook import get_dataset
    from ctseg_lib.training import train

    torch.set_num_threads(1)
    train_root = get_dataset("liver", cases=16, test_cases=2)  # the chapters' training phantoms
    test_root = args.out / f"liver_fresh_{args.test_seed}"
    if not (test_root / "dataset.json").is_file():
        write_dataset("liver", test_root, cases=8, seed=args.test_seed, test_cases=0, overwrite=True)
    base = TrainConfig.from_file("liver_2d_book")
    pipelines = PIPELINES if args.set == "pitfalls" else CONTEXT
    rows = []
    for name, changes in pipelines.items():
        for seed in args.seeds:
            run_dir = args.out / "runs" / f"{name.split()[0]}_s{seed}"
            if not (run_dir / "best.pt").is_file():
                train(base.with_changes({**changes, "seed": seed}), train_root, run_dir, quiet=True)
            row = {"pipeline": name, "seed": seed, **evaluate_run(run_dir, test_root)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    (args.out / f"results_{args.set}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    print(f"\n{'pipeline':>20} {'region Dice':>18} {'tumour Dice':>18} {'found':>12} {'FP/scan':>16}"
          f"   (mean ± sd over seeds {args.seeds})")
    for name in pipelines:
        sel = [r for r in rows if r["pipeline"] == name]

        def ms(key: str, sel=sel) -> str:
            v = np.array([r[key] for r in sel if key in r], dtype=float)
            return f"{v.mean():.3f} ± {v.std(ddof=1) if len(v) > 1 else 0:.3f}" if len(v) else "-"

        found = ", ".join(f"{r['found']}/{r['lesions']}" for r in sel if "found" in r) or "-"
        print(f"{name:>20} {ms('region'):>18} {ms('tumour'):>18} {found:>12} {ms('fp_per_scan'):>16}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
