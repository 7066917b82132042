"""``ctseg train``: train a U-Net from a YAML/JSON config on an MSD-layout dataset.

Writes ``best.pt``, ``last.pt``, ``history.csv``/``.json``, ``config.yaml`` and ``split.json`` into
``--out``.  ``--resume`` continues an interrupted run from ``last.pt``.  For several GPUs launch
the same command with ``torchrun --nproc_per_node=N -m ctseg_lib.cli train ...``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "train a U-Net (2D, 2.5D or 3D) from a config file"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, type=Path, help="YAML/JSON config, e.g. configs/liver_2d.yaml")
    p.add_argument("--data", required=True, type=Path, help="MSD task folder (with dataset.json)")
    p.add_argument("--out", required=True, type=Path, help="run folder for checkpoints and history")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--epochs", type=int, default=None, help="override the config's number of epochs")
    p.add_argument("--device", default=None, help="force a device (cpu, cuda, cuda:1, mps); default: best available")
    p.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    p.add_argument("--cache", type=Path, default=None,
                   help="preprocessing cache to read (and fill), e.g. the --out of `ctseg preprocess`")


def run(args: argparse.Namespace) -> int:
    from ..config import TrainConfig
    from ..errors import CTSegError
    from ..training import train

    cfg = TrainConfig.from_file(args.config)
    if args.epochs is not None:
        if args.epochs < 1:
            raise CTSegError(f"--epochs must be >= 1, got {args.epochs}")
        d = cfg.to_dict()
        d["epochs"] = args.epochs
        cfg = TrainConfig.from_dict(d, source=args.config)
    res = train(cfg, args.data, args.out, resume=args.resume, quiet=args.quiet, device=args.device,
                cache_dir=args.cache)
    if not args.quiet and res.history:
        last = res.history[-1]
        ens = cfg.ensemble > 1
        runs = f"{cfg.ensemble} networks x {cfg.epochs} epochs" if ens else f"{len(res.history)} epochs"
        dice = (f"; last val mean Dice {last['val_mean_dice']:.3f}" + (" (of the last network)" if ens else "")
                if "val_mean_dice" in last else "")
        print(f"done: {runs}; best checkpoint {res.best_path}{dice}")
    return 0
