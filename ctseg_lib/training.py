"""The training loop: small and explicit, so every step can be read in the book.

``train(cfg, data_root, out_dir)`` does, in order:

1. split the MSD cases into train / val / test (:func:`ctseg_lib.datasets.split_cases`, seeded,
   saved as ``split.json``; ``ctseg predict --split test`` uses the same split);
2. preprocess the train and val cases once, in memory (:func:`ctseg_lib.preprocessing.preprocess_case`);
3. each epoch, draw training samples (axial slices for 2D/2.5D, patches for 3D) with foreground
   oversampling; the draw depends only on ``(seed, epoch)`` so an interrupted run resumes exactly;
4. forward → loss → backward → (clip) → optimiser step → LR schedule step, with mixed precision on CUDA;
5. every ``val_every`` epochs, predict each *whole* validation volume and compute the per-volume
   Dice of every label — the metric we report, not the batch soft-Dice the loss sees;
6. save ``last.pt`` every epoch and ``best.pt`` when the pooled validation Dice improves, plus
   ``history.csv`` / ``history.json``.

Multi-GPU: run the same command under ``torchrun``; see :mod:`ctseg_lib.distributed`.
"""

from __future__ import annotations

import csv
import io
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from . import distributed as D
from .augment import augment_batch
from .checkpoint import build_model, load_checkpoint, save_checkpoint, set_rng_state, unwrap
from .config import TrainConfig
from .data.msd import MSDDataset
from .datasets import save_split, split_cases
from .inference import _context_indices, predict_volume, sliding_window_inference
from .io import ensure_not_inside, write_json_atomic, write_text_atomic
from .losses import DeepSupervisionLoss, build_loss
from .metrics import _dice, confusion
from .preprocessing import CTNormalizer, preprocess_case
from .schedules import build_optimizer, build_scheduler


@dataclass
class TrainResult:
    history: list[dict]
    best_path: Path
    last_path: Path
    model: torch.nn.Module


# -- data ------------------------------------------------------------------------------------------
class Samples(Dataset):
    """Training samples for one epoch: ``(case, z)`` slices (2D/2.5D) or ``(case, corner)`` patches (3D).

    Returns ``image`` float32 ``(C, *S)`` and ``label`` int64 ``(*S)``.
    """

    def __init__(self, cases: list, index: list[tuple], cfg: TrainConfig) -> None:
        self.cases, self.index, self.cfg = cases, index, cfg

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        c, pos = self.index[i]
        img, lab = self.cases[c].image, self.cases[c].label
        if self.cfg.model.spatial_dims == 2:
            z, box = (pos, (slice(None),) * 2) if isinstance(pos, int) else \
                (pos[0], tuple(slice(p, p + s) for p, s in zip(pos[1:], self.cfg.data.patch_size)))
            zs = _context_indices(img.shape[2], np.array([z]), self.cfg.model.context)[0]
            x, y = np.moveaxis(img[box][:, :, zs], 2, 0), lab[box][:, :, z]
        else:
            sl = tuple(slice(p, p + s) for p, s in zip(pos, self.cfg.data.patch_size))
            x, y = img[sl][None], lab[sl]
        return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), torch.from_numpy(y.astype(np.int64))


def _pad_for_patches(cases: list, patch: list[int]) -> None:
    for c in cases:  # a volume smaller than the patch is padded (image min, label 0); 2D: in-plane only
        pad = [(0, max(0, p - s)) for s, p in zip(c.image.shape, patch)] + [(0, 0)] * (3 - len(patch))
        if any(b for _, b in pad):
            c.image = np.pad(c.image, pad, constant_values=float(c.image.min()))
            c.label = np.pad(c.label, pad)


def _fg_mask(label: np.ndarray, fg_classes: list[int] | None) -> np.ndarray:
    """Voxels that count as foreground for oversampling: ``fg_classes``, or any label > 0."""
    return np.isin(label, fg_classes) if fg_classes else label > 0


def epoch_index(cases: list, cfg: TrainConfig, epoch: int) -> list[tuple]:
    """The epoch's samples, a function of ``(cfg.seed, epoch)`` only.

    Foreground oversampling (nnU-Net): a sample is forced to contain a ``fg_classes`` voxel with
    probability ``fg_fraction``; otherwise it is drawn from all foreground slices plus a random
    ``negative_keep`` share of the empty ones (most CT slices show no liver, let alone tumour).
    """
    rng = np.random.default_rng([cfg.seed, epoch])
    fg_cls = cfg.data.fg_classes
    if cfg.model.spatial_dims == 2:
        pos, forced, anyfg = [], [], []  # empty slices, slices with fg_classes, slices with any label
        for c, case in enumerate(cases):
            present = case.label.reshape(-1, case.label.shape[2])
            hit = _fg_mask(present, fg_cls).any(0)
            nonempty = (present > 0).any(0)
            forced += [(c, int(z)) for z in np.flatnonzero(hit)]
            anyfg += [(c, int(z)) for z in np.flatnonzero(nonempty)]
            pos += [(c, int(z)) for z in np.flatnonzero(~nonempty)]
        keep = [pos[i] for i in np.flatnonzero(rng.random(len(pos)) < cfg.data.negative_keep)]
        pool = anyfg + keep
        n = cfg.iterations_per_epoch * cfg.batch_size if cfg.iterations_per_epoch else len(pool)
        out = []
        for _ in range(n):
            is_fg = bool(forced) and rng.random() < cfg.data.fg_fraction
            src = forced if is_fg else pool
            c, z = src[int(rng.integers(len(src)))]
            out.append((c, z) if not cfg.data.patch_size else (c, (z, *_corner_2d(cases[c], z, cfg, is_fg, rng))))
        return out
    patch = np.array(cfg.data.patch_size)
    n = (cfg.iterations_per_epoch or 50) * cfg.batch_size
    out = []
    for _ in range(n):
        c = int(rng.integers(len(cases)))
        shape = np.array(cases[c].image.shape)
        fg = np.argwhere(_fg_mask(cases[c].label, fg_cls))
        if len(fg) and rng.random() < cfg.data.fg_fraction:
            centre = fg[int(rng.integers(len(fg)))]
            corner = np.clip(centre - patch // 2, 0, shape - patch)
        else:
            corner = np.array([int(rng.integers(0, s - p + 1)) for s, p in zip(shape, patch)])
        out.append((c, tuple(int(v) for v in corner)))
    return out


def _corner_2d(case, z: int, cfg: TrainConfig, is_fg: bool, rng: np.random.Generator) -> tuple[int, int]:
    """In-plane corner of a 2D training patch on slice ``z``: centred on a random ``fg_classes``
    voxel for a forced-foreground sample, uniformly random otherwise (nnU-Net's 2D sampling)."""
    shape, patch = np.array(case.label.shape[:2]), np.array(cfg.data.patch_size)
    if is_fg:
        fg = np.argwhere(_fg_mask(case.label[:, :, z], cfg.data.fg_classes))
        centre = fg[int(rng.integers(len(fg)))]
        # a random offset, so the lesion is not always in the middle of the patch
        centre = centre + rng.integers(-patch // 4, patch // 4 + 1)
        corner = np.clip(centre - patch // 2, 0, shape - patch)
    else:
        corner = np.array([int(rng.integers(0, s - p + 1)) for s, p in zip(shape, patch)])
    return int(corner[0]), int(corner[1])


def _prepare(ds: MSDDataset, ids: list[str], cfg: TrainConfig, normalizer: CTNormalizer | None,
             cache_dir: Path | None = None) -> list:
    """Preprocess the cases in memory, or read them from a :class:`~ctseg_lib.cache.CaseCache`
    (``ctseg preprocess`` fills one; entries are keyed by file content and parameters, so a run
    with other preprocessing never reads a stale one).  Cached arrays are copied into memory,
    keeping their slice-major layout, so training never writes to the cache."""
    params = cfg.data.preprocess_params()
    if cache_dir is None:
        return [preprocess_case(*ds.load_case(cid), params, normalizer) for cid in ids]
    from .cache import CaseCache

    cache = CaseCache(cache_dir, params, normalizer, dataset=ds)
    out = []
    for cid in ids:
        pre = cache.get(ds.case(cid))
        pre.image = np.moveaxis(np.array(np.moveaxis(pre.image, 2, 0)), 0, 2)
        pre.label = np.moveaxis(np.array(np.moveaxis(pre.label, 2, 0)), 0, 2)
        out.append(pre)
    return out


# -- validation ------------------------------------------------------------------------------------
def validate(model: torch.nn.Module, cases: list, cfg: TrainConfig, labels: dict[int, str],
             device: torch.device) -> dict[str, float]:
    """Per-volume Dice of every foreground label, averaged over the validation volumes
    (``val_dice_<name>``, ``val_mean_dice``: what we report), and the *global* Dice with the voxel
    counts pooled over all volumes (``val_global_dice_<name>``, ``val_global_mean_dice``: what
    picks ``best.pt``).

    Why two: by convention an empty prediction on a volume without that label scores 1, so a
    model that predicts no tumour at all gets a per-volume tumour Dice equal to the share of
    tumour-free volumes — and can look better than one that finds tumours with a few false
    positives.  The pooled Dice of a model that predicts nothing is 0 (nnU-Net also selects on a
    pooled "pseudo Dice").
    """
    model.eval()
    scores: dict[int, list[float]] = {k: [] for k in labels if k > 0}
    counts = {k: np.zeros(3, dtype=np.int64) for k in scores}  # pooled TP, FP, FN
    for case in cases:
        if cfg.model.spatial_dims == 2:
            pred = predict_volume(model, case.image, cfg.model.context, cfg.val_batch_size,
                                  device=device, return_probs=False)
        else:
            vol = torch.from_numpy(np.ascontiguousarray(case.image))[None]
            pred = sliding_window_inference(model, vol, tuple(cfg.data.patch_size), device=device).argmax(0).numpy()
        for k in scores:
            tp_fp_fn = confusion(pred == k, case.label == k)
            scores[k].append(_dice(*tp_fp_fn))
            counts[k] += tp_fp_fn
    out = {f"val_dice_{labels[k]}": float(np.mean(v)) for k, v in scores.items()}
    out["val_mean_dice"] = float(np.mean(list(out.values()))) if out else 0.0
    pooled = {f"val_global_dice_{labels[k]}": float(_dice(*(int(v) for v in c))) for k, c in counts.items()}
    out.update(pooled)
    out["val_global_mean_dice"] = float(np.mean(list(pooled.values()))) if pooled else 0.0
    return out


def _write_history(out_dir: Path, history: list[dict]) -> None:
    write_json_atomic(out_dir / "history.json", history)
    keys = list(dict.fromkeys(k for row in history for k in row))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(history)
    write_text_atomic(out_dir / "history.csv", buf.getvalue())


# -- the loop --------------------------------------------------------------------------------------
def train(cfg: TrainConfig, data_root: str | Path, out_dir: str | Path, resume: bool = False,
          quiet: bool = False, max_epochs: int | None = None, device: str | None = None,
          cache_dir: str | Path | None = None) -> TrainResult:
    """Train a U-Net on an MSD-layout dataset; see the module docstring for the steps.

    Args:
        max_epochs: stop after this many epochs *without* changing the schedule (``cfg.epochs``
            still defines it) — used to simulate an interruption.
        device: force a device (``"cpu"``); default CUDA > MPS > CPU.
        cache_dir: a preprocessing cache (``ctseg preprocess --out``) to read cases from and add
            missing ones to; default: preprocess in memory.
    """
    from tqdm.auto import tqdm

    dist = D.init_distributed()
    main = dist.is_main
    say = print if (main and not quiet) else (lambda *a, **k: None)
    dev = D.select_device(device, quiet=quiet or not main, local_rank=dist.local_rank)
    out_dir, data_root = Path(out_dir), Path(data_root)
    ensure_not_inside(out_dir, data_root, "training output")
    last_path, best_path = out_dir / "last.pt", out_dir / "best.pt"
    ds = MSDDataset(data_root)
    ids = ds.case_ids[: cfg.data.max_cases] if cfg.data.max_cases else ds.case_ids
    split = split_cases(ids, cfg.data.val_fraction, cfg.data.test_fraction, cfg.data.split_seed)
    start_epoch, history, best = 0, [], -1.0
    ckpt = None
    if resume:
        src = last_path if last_path.exists() else out_dir / "interrupted.pt"
        ckpt = load_checkpoint(src, map_location="cpu")
        cfg = TrainConfig.from_dict(ckpt["config"], source=src)  # the run's own config wins
        start_epoch, history, best = int(ckpt["epoch"]), list(ckpt["history"]), float(ckpt["best_score"])
        split = ckpt["meta"]["split"]
        say(f"resuming from {src} after epoch {start_epoch}")

    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    normalizer = None
    if cfg.data.preprocess_params().intensity_mode()[0] == "nnunet":
        if ckpt is not None and ckpt["meta"].get("normalizer"):
            normalizer = CTNormalizer.from_dict(ckpt["meta"]["normalizer"])
        else:
            ids = split["train"]  # fit on training cases only: validation must stay unseen
            normalizer = CTNormalizer.fit((ds.load_image(c).array for c in ids),
                                          (ds.load_label(c).array for c in ids), seed=cfg.seed)
    say(f"data: {len(split['train'])} train / {len(split['val'])} val / {len(split['test'])} test cases")
    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None:
        ensure_not_inside(cache, data_root, "the preprocessing cache")
    train_cases = _prepare(ds, split["train"], cfg, normalizer, cache)
    val_cases = _prepare(ds, split["val"], cfg, normalizer, cache)
    if cfg.data.patch_size:  # 3D patches, or in-plane patches of 2D slices
        _pad_for_patches(train_cases, cfg.data.patch_size)
    meta = {"labels": ds.labels, "num_classes": ds.num_classes, "task": cfg.data.task, "split": split,
            "preprocess": cfg.data.preprocess_params().to_dict(),
            "normalizer": normalizer.to_dict() if normalizer else None, "dataset": ds.name,
            "world_size": dist.world_size}

    # channels_last (NHWC) is ~1.7x faster for 2D convolutions on CPU (benchmarks/bench_train.py)
    # and is what cuDNN prefers for AMP on tensor cores; UNet keeps the format through its layers.
    fmt = torch.channels_last if cfg.model.spatial_dims == 2 else torch.contiguous_format
    model = build_model(cfg, ds.num_classes).to(dev, memory_format=fmt)
    loss_fn = build_loss(cfg.loss.name, **cfg.loss.kwargs)
    if cfg.model.deep_supervision:
        loss_fn = DeepSupervisionLoss(loss_fn)
    optimizer = build_optimizer(model.parameters(), cfg.optim)
    steps = math.ceil(len(epoch_index(train_cases, cfg, 0)) / dist.world_size / cfg.batch_size)
    scheduler = build_scheduler(optimizer, cfg.schedule, max(1, steps), cfg.epochs)
    use_amp = cfg.amp and dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt["scaler"] and use_amp:
            scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
    net = model
    if dist.enabled:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(out_dir / "config.yaml")
        save_split(split, out_dir / "split.json")

    def save(path: Path, epoch: int) -> None:
        save_checkpoint(path, model=model, config=cfg.to_dict(), meta=meta, epoch=epoch, optimizer=optimizer,
                        scheduler=scheduler, scaler=scaler, history=history, best_score=best)

    end = cfg.epochs if max_epochs is None else min(cfg.epochs, max_epochs)
    epoch = start_epoch
    try:
        for epoch in range(start_epoch, end):
            t0 = time.time()
            net.train()
            data = Samples(train_cases, epoch_index(train_cases, cfg, epoch), cfg)
            sampler = DistributedSampler(data, dist.world_size, dist.rank, shuffle=False) if dist.enabled else None
            loader = DataLoader(data, batch_size=cfg.batch_size, sampler=sampler, shuffle=False,
                                num_workers=cfg.num_workers, drop_last=len(data) > cfg.batch_size * dist.world_size)
            g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch * 101 + dist.rank)
            total, n = 0.0, 0
            bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=quiet or not main, leave=False)
            for x, y in bar:
                x, y = augment_batch(x, y, cfg.augment, g)
                x, y = x.to(dev, non_blocking=True, memory_format=fmt), y.to(dev, non_blocking=True)
                with torch.autocast(device_type=dev.type, dtype=torch.float16, enabled=use_amp):
                    loss = loss_fn(net(x), y)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                if cfg.grad_clip:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(net.parameters(), cfg.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                total, n = total + float(loss.detach()) * len(x), n + len(x)
                bar.set_postfix(loss=f"{total / n:.4f}", samples_s=f"{n / (time.time() - t0):.1f}")
            row = {"epoch": epoch + 1, "train_loss": D.all_reduce_mean(total / max(n, 1), dist, dev),
                   "lr": optimizer.param_groups[0]["lr"]}
            if main and val_cases and ((epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs):
                row.update(validate(model, val_cases, cfg, ds.labels, dev))
            row["time"] = round(time.time() - t0, 3)
            history.append(row)
            if main:
                score = row.get("val_global_mean_dice", -1.0)
                if score > best or not val_cases:
                    best = max(best, score)
                    save(best_path, epoch + 1)
                save(last_path, epoch + 1)
                _write_history(out_dir, history)
                say(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))
            D.barrier(dist)
    except KeyboardInterrupt:
        if main:
            save(out_dir / "interrupted.pt", epoch)
            say(f"interrupted: saved {out_dir / 'interrupted.pt'}; `--resume` continues from last.pt "
                f"(or interrupted.pt if no epoch finished)")
        raise
    finally:
        D.cleanup_distributed()
    return TrainResult(history, best_path, last_path, unwrap(model))
