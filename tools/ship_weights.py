"""Ship a trained checkpoint as a preset's weights: ``samples/models/<preset>.pt`` + ``<preset>.json``.

Usage (from the repository root), after training from the command line::

    ctseg synth --task lung --cases 20 --seed 10011 --out lung/train
    ctseg train --config lung_25d --data lung/train --out runs/lung_25d
    python tools/ship_weights.py runs/lung_25d/best.pt --preset lung_25d \\
        --data-command "ctseg synth --task lung --cases 20 --seed 10011"

What it does:

1. refuses a checkpoint whose resolved config differs from ``configs/<preset>.yaml`` today in any key
   but ``name`` (:func:`ctseg_lib.pretrained.recipe_differences`): shipped weights are the preset's;
2. keeps what inference and the book need (weights, config -- renamed to the preset --, preprocessing
   meta, epoch, and the training history of the whole run: ``history.json`` beside the checkpoint
   when validation saved an earlier epoch as ``best.pt``) and drops the optimizer, scheduler and RNG
   states (about two thirds of the file); the weights are bit-identical, so predictions are too;
3. writes both files atomically and prints their sizes.  The JSON records the commands, the source
   checkpoint's SHA-256, the training time from its history and the shipped file's SHA-256.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ctseg_lib.checkpoint import FORMAT, VERSION, load_checkpoint  # noqa: E402
from ctseg_lib.errors import CTSegError  # noqa: E402
from ctseg_lib.io import atomic_path  # noqa: E402
from ctseg_lib.pretrained import recipe_differences, training_seconds  # noqa: E402


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run_history(checkpoint: Path, ckpt: dict) -> list[dict]:
    """The whole run's history: ``history.json`` beside the checkpoint when it continues the
    checkpoint's own (validation chose an earlier epoch: ``best.pt`` holds the history up to that
    epoch, the run trained on), else the checkpoint's."""
    own = list(ckpt.get("history", []))
    path = checkpoint.parent / "history.json"
    if path.is_file():
        run = json.loads(path.read_text())
        if len(run) >= len(own) and run[:len(own)] == own:
            return run
    return own


def ship(checkpoint: Path, preset: str, data_command: str, out: Path) -> tuple[Path, Path]:
    """Write ``out/<preset>.pt`` and ``out/<preset>.json`` from ``checkpoint`` (see the module docstring)."""
    ckpt = load_checkpoint(checkpoint)
    diff = recipe_differences(ckpt["config"], preset)
    if diff:
        raise CTSegError(f"not trained with configs/{preset}.yaml as it is now: {'; '.join(diff)}", checkpoint)
    config = {**ckpt["config"], "name": preset}
    history = run_history(checkpoint, ckpt)
    slim = {"format": FORMAT, "version": VERSION, "epoch": ckpt["epoch"], "model": ckpt["model"],
            "optimizer": None, "scheduler": None, "scaler": None, "rng": None, "config": config,
            "meta": ckpt["meta"], "history": history, "best_score": ckpt.get("best_score", -1.0)}
    out.mkdir(parents=True, exist_ok=True)
    pt, js = out / f"{preset}.pt", out / f"{preset}.json"
    with atomic_path(pt) as tmp:
        torch.save(slim, tmp)
    info = {
        "preset": preset,
        "made_by": "tools/ship_weights.py",
        "shipped": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "data_command": data_command,
        "train_command": f"ctseg train --config {preset} --data <that folder> --out <run>",
        "trained_as": ckpt["config"].get("name"),
        "epochs": len(history) or int(ckpt["epoch"]),
        "checkpoint_epoch": int(ckpt["epoch"]),
        "training_seconds": round(training_seconds(history), 1),
        "precision": ckpt["meta"].get("precision"),
        "train_cases": list(ckpt["meta"].get("split", {}).get("train", [])),
        "source_sha256": sha256(checkpoint),
        "sha256": sha256(pt),
        "bytes": pt.stat().st_size,
    }
    with atomic_path(js) as tmp:
        Path(tmp).write_text(json.dumps(info, indent=1, sort_keys=True) + "\n")
    return pt, js


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("--preset", required=True)
    ap.add_argument("--data-command", required=True, help="the ctseg synth command that made the training data")
    ap.add_argument("--out", type=Path, default=ROOT / "samples" / "models")
    a = ap.parse_args(argv)
    try:
        pt, js = ship(a.checkpoint, a.preset, a.data_command, a.out)
    except CTSegError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"{pt}: {pt.stat().st_size / 1e6:.2f} MB; {js}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
