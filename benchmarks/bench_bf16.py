"""CPU inference and training in float32 vs bfloat16 autocast: the choice behind ``ctseg_lib.inference.cpu_bf16``.

    python benchmarks/bench_bf16.py              # 1 thread, book-model size
    python benchmarks/bench_bf16.py --threads 2
    python benchmarks/bench_bf16.py --train      # also training steps (ctseg_lib.training.training_step)

Times :func:`ctseg_lib.inference.predict_volume` of a U-Net the size of the book's models (16 base
channels, depth 4, 3 classes, channels_last as ``load_model`` leaves it) on a 160×128×120 volume,
once with ``CTSEG_CPU_BF16=0`` and once with ``=1``, alternated (median of ``--repeats`` runs after a
warm-up, the method of ``common.py``), and reports how far the probabilities and the argmax labels
move.  On a CPU without native bf16 (no ``amx_bf16`` / ``avx512_bf16`` flag) the ratio is expected
below 1: that is why ``auto`` switches bf16 on only where the flags say it is native.

``--train`` times :func:`ctseg_lib.training.training_step` (forward, Dice+CE loss, backward, Adam) of
the same network on batches of 16 random 64×64 slices with random labels, float32 against bfloat16
autocast (:func:`ctseg_lib.training.autocast_dtype`), and reports the training loss each reaches after
the same steps from the same initial weights (whether training still descends, not a quality measure:
that is measured on fresh phantoms, README).
"""

from __future__ import annotations

import argparse
import copy
import os
from types import SimpleNamespace

import numpy as np
import torch
from common import alternate, median

from ctseg_lib.config import TrainConfig
from ctseg_lib.inference import BF16_CPU_FLAGS, _cpu_flags, predict_volume
from ctseg_lib.losses import build_loss
from ctseg_lib.models.unet import UNet
from ctseg_lib.training import training_step


def _predict(model: torch.nn.Module, vol: np.ndarray, bf16: bool) -> np.ndarray:
    os.environ["CTSEG_CPU_BF16"] = "1" if bf16 else "0"
    return predict_volume(model, vol, batch_size=32)


def run(threads: int, repeats: int = 3, shape: tuple[int, int, int] = (160, 128, 120)) -> dict[str, object]:
    """Median seconds per volume in float32 and bfloat16, the speed-up and the agreement."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    vol = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    model = UNet(2, 1, 3, base_channels=16, depth=4).eval().to(memory_format=torch.channels_last)
    before = os.environ.get("CTSEG_CPU_BF16")
    try:
        times = alternate({"fp32": lambda: _predict(model, vol, False), "bf16": lambda: _predict(model, vol, True)},
                          repeats)
        p32, p16 = _predict(model, vol, False), _predict(model, vol, True)
    finally:  # leave the caller's setting as it was
        if before is None:
            os.environ.pop("CTSEG_CPU_BF16", None)
        else:
            os.environ["CTSEG_CPU_BF16"] = before
    t32, t16 = median(times["fp32"]), median(times["bf16"])
    return {"threads": threads, "native_bf16": sorted(_cpu_flags() & set(BF16_CPU_FLAGS)),
            "fp32_s": round(t32, 3), "bf16_s": round(t16, 3), "speedup": round(t32 / t16, 2),
            "max_prob_diff": float(np.abs(p16 - p32).max()),
            "argmax_agreement": float((p16.argmax(0) == p32.argmax(0)).mean())}


def _train_steps(model: torch.nn.Module, batches: list, bf16: bool) -> float:
    """``len(batches)`` training steps of a copy of ``model``; returns the last step's loss."""
    os.environ["CTSEG_CPU_BF16"] = "1" if bf16 else "0"
    net = copy.deepcopy(model).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    run = SimpleNamespace(cfg=TrainConfig(), device=torch.device("cpu"), net=net, optimizer=optimizer,
                          loss_fn=build_loss("dice_ce"), scaler=torch.amp.GradScaler("cuda", enabled=False),
                          scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0))
    return [training_step(run, x, y) for x, y in batches][-1]


def run_train(threads: int, repeats: int = 3, steps: int = 5, batch: int = 16, side: int = 64) -> dict[str, object]:
    """Median seconds per training step in float32 and bfloat16, the speed-up, and the loss after 4x
    ``steps`` steps in each from the same weights."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = UNet(2, 1, 3, base_channels=16, depth=4).to(memory_format=torch.channels_last)
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(batch, 1, side, side, generator=gen).contiguous(memory_format=torch.channels_last),
                torch.randint(0, 3, (batch, side, side), generator=gen)) for _ in range(steps)]
    before = os.environ.get("CTSEG_CPU_BF16")
    try:
        times = alternate({"fp32": lambda: _train_steps(model, batches, False),
                           "bf16": lambda: _train_steps(model, batches, True)}, repeats)
        loss32, loss16 = _train_steps(model, batches * 4, False), _train_steps(model, batches * 4, True)
    finally:
        if before is None:
            os.environ.pop("CTSEG_CPU_BF16", None)
        else:
            os.environ["CTSEG_CPU_BF16"] = before
    t32, t16 = median(times["fp32"]) / steps, median(times["bf16"]) / steps
    return {"threads": threads, "batch": f"{batch}x1x{side}x{side}", "fp32_step_s": round(t32, 4),
            "bf16_step_s": round(t16, 4), "speedup": round(t32 / t16, 2),
            "loss_fp32": round(loss32, 4), "loss_bf16": round(loss16, 4)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--train", action="store_true", help="also time training steps")
    args = ap.parse_args()
    print(run(args.threads, args.repeats))
    if args.train:
        print(run_train(args.threads, args.repeats))


if __name__ == "__main__":
    main()
