"""The training loop: small and explicit, so every step can be read in the book.

``train(cfg, data_root, out_dir)`` is a short loop over named steps, each a function a chapter
shows whole (in the spirit of minGPT's trainer):

1. :func:`setup_run` — split the MSD cases into train / val / test by patient (seeded, saved as
   ``split.json``; ``ctseg predict --split test`` uses the same split), or restore a run to resume;
   fit the intensity normaliser on training cases only; preprocess the cases once
   (:func:`prepare_cases`); build the sampler (:func:`training_dataset`: the chapter-3
   :class:`~ctseg_lib.datasets.SliceDataset` / :class:`~ctseg_lib.datasets.PatchDataset`, whose
   draws depend only on ``(seed, epoch, item)`` so an interrupted run resumes exactly), the model,
   loss, optimiser and learning-rate schedule;
2. :func:`train_one_epoch` — each batch: augment, then :func:`training_step` (forward → loss →
   backward → clip → optimiser step → schedule step, mixed precision on CUDA);
3. :func:`validate` every ``val_every`` epochs — predict each *whole* validation volume and compute
   the per-volume Dice of every label: the metric we report, not the batch soft-Dice the loss sees;
4. :func:`record_epoch` — ``last.pt`` every epoch, ``best.pt`` when the pooled validation Dice
   does not get worse (ties go to the later epoch), ``history.csv`` / ``history.json``;
5. :func:`mine_step` before an epoch, when ``data.hard_fraction`` > 0 and it is due — the model's
   false positives on the training scans become hard negatives (:mod:`ctseg_lib.hard_negatives`).

Multi-GPU: run the same command under ``torchrun``; see :mod:`ctseg_lib.distributed`.
"""

from __future__ import annotations

import csv
import io
import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from . import distributed as D
from .augment import augment_batch
from .checkpoint import build_model, load_checkpoint, load_model, save_checkpoint, set_rng_state, unwrap
from .config import TrainConfig
from .data.msd import MSDDataset
from .datasets import PatchDataset, SliceDataset, save_split, split_cases
from .errors import CTSegError
from .hard_negatives import load_hard_negatives, mine_hard_negatives, save_hard_negatives
from .inference import cpu_bf16, predict_volume, sliding_window_inference
from .io import ensure_not_inside, write_json_atomic, write_text_atomic
from .losses import DeepSupervisionLoss, build_loss
from .metrics import confusion, dice_from_counts
from .preprocessing import CTNormalizer, Preprocessed, preprocess_case
from .schedules import build_optimizer, build_scheduler


@dataclass
class TrainResult:
    history: list[dict]
    best_path: Path
    last_path: Path
    model: torch.nn.Module


@dataclass
class Run:
    """Everything one training run holds between steps (built by :func:`setup_run`)."""

    cfg: TrainConfig
    out_dir: Path
    labels: dict[int, str]
    meta: dict
    train_cases: list[Preprocessed]
    val_cases: list[Preprocessed]
    data: Dataset  # the sampler: SliceDataset (2D / 2.5D) or PatchDataset (3D)
    model: torch.nn.Module
    net: torch.nn.Module  # the model, wrapped in DistributedDataParallel under torchrun
    loss_fn: Callable
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    device: torch.device
    dist: D.DistInfo
    start_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best: float = -1.0
    quiet: bool = False

    @property
    def use_amp(self) -> bool:
        return amp_enabled(self.cfg, self.device)

    @property
    def memory_format(self) -> torch.memory_format:
        return memory_format(self.cfg)

    def say(self, *args: object) -> None:
        if self.dist.is_main and not self.quiet:
            print(*args, flush=True)


def amp_enabled(cfg: TrainConfig, device: torch.device) -> bool:
    """float16 mixed precision with gradient scaling: only on CUDA (on the CPU float16 is slow)."""
    return cfg.amp and device.type == "cuda"


def autocast_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The dtype the training forward pass runs in under ``torch.autocast``, or ``None`` (float32).

    With ``cfg.amp``: float16 on CUDA (with a ``GradScaler``, :func:`amp_enabled`); bfloat16 on a CPU
    that computes it natively (:func:`ctseg_lib.inference.cpu_bf16`: Intel AMX / AVX512-BF16, switch
    ``CTSEG_CPU_BF16``) -- about 2x faster steps for the book's U-Nets on such a CPU
    (``benchmarks/bench_bf16.py --train``).  bfloat16 has float32's exponent range, so no loss scaling
    is needed (Kalamkar et al. 2019, "A study of BFLOAT16 for deep learning training"); the weights,
    the optimiser state and the loss stay float32.  Elsewhere float32.
    """
    if not cfg.amp:
        return None
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and cpu_bf16():
        return torch.bfloat16
    return None


def training_precision(cfg: TrainConfig, device: torch.device | str = "cpu") -> str:
    """``"float16"``, ``"bfloat16"`` or ``"float32"``: the precision :func:`training_step` computes in
    (recorded in the checkpoint's ``meta`` and in :func:`ctseg_lib.notebook.train_cached`'s cache key)."""
    dtype = autocast_dtype(cfg, torch.device(device))
    return str(dtype).removeprefix("torch.") if dtype is not None else "float32"


def memory_format(cfg: TrainConfig) -> torch.memory_format:
    """channels_last (NHWC) for 2D nets: ~1.7x faster 2D convolutions on CPU (benchmarks/bench_train.py)
    and what cuDNN prefers for AMP on tensor cores; UNet keeps the format through its layers."""
    return torch.channels_last if cfg.model.spatial_dims == 2 else torch.contiguous_format


# -- data ------------------------------------------------------------------------------------------
def prepare_cases(ds: MSDDataset, ids: list[str], cfg: TrainConfig, normalizer: CTNormalizer | None,
                  cache_dir: Path | None = None) -> list[Preprocessed]:
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


def merge_labels(cases: list[Preprocessed], labels: dict[int, str]) -> dict[int, str]:
    """Merge every foreground label of ``cases`` into one class 1, in place, and return the new
    ``{0: background name, 1: "foreground"}``: the course project's single "liver or tumour" output,
    which no tumour metric can be computed from (chapter 10)."""
    for case in cases:
        case.label = (case.label > 0).astype(np.uint8)
    return {0: labels.get(0, "background"), 1: "foreground"}


def training_dataset(cases: list[Preprocessed], cfg: TrainConfig) -> SliceDataset | PatchDataset:
    """The sampler ``train()`` draws from — the chapter-3 datasets with the config's sampling rules.

    2D / 2.5D: :class:`~ctseg_lib.datasets.SliceDataset` of whole slices, or of in-plane
    ``data.patch_size`` patches; an epoch is ``iterations_per_epoch × batch_size`` random items,
    or one shuffled pass over the epoch's pool when ``iterations_per_epoch`` is None.
    3D: :class:`~ctseg_lib.datasets.PatchDataset` of ``data.patch_size`` patches
    (``iterations_per_epoch`` defaults to 50 batches).
    """
    d = cfg.data
    n = cfg.iterations_per_epoch * cfg.batch_size if cfg.iterations_per_epoch else None
    if cfg.model.spatial_dims == 3:
        return PatchDataset(cases, d.patch_size, fg_fraction=d.fg_fraction, samples_per_epoch=n or 50 * cfg.batch_size,
                            seed=cfg.seed, fg_classes=d.fg_classes)
    return SliceDataset(cases, context=cfg.model.context, fg_fraction=d.fg_fraction, negative_keep=d.negative_keep,
                        samples_per_epoch=n, seed=cfg.seed, fg_classes=d.fg_classes, patch_size=d.patch_size,
                        shuffle=True, fg_sampling=d.fg_sampling, hard_fraction=d.hard_fraction,
                        paste_prob=d.paste_prob, synth_prob=d.synth_prob)


def fit_normalizer(cfg: TrainConfig, ds: MSDDataset, train_ids: list[str]) -> CTNormalizer | None:
    """nnU-Net's CT normalisation statistics, from the *training* cases only (validation stays unseen);
    None when the config windows or min/max-scales instead."""
    if cfg.data.preprocess_params().intensity_mode()[0] != "nnunet":
        return None
    return CTNormalizer.fit((ds.load_image(c).array for c in train_ids),
                            (ds.load_label(c).array for c in train_ids), seed=cfg.seed)


# -- setting a run up ------------------------------------------------------------------------------
def setup_run(cfg: TrainConfig, data_root: str | Path, out_dir: str | Path, resume: bool = False,
              device: str | None = None, cache_dir: str | Path | None = None, quiet: bool = False) -> Run:
    """Split, normaliser, preprocessed cases, sampler, model and optimiser of a run — restored from
    ``out_dir/last.pt`` (or ``interrupted.pt``) when ``resume``, whose config then wins."""
    dist = D.init_distributed()
    dev = D.select_device(device, quiet=quiet or not dist.is_main, local_rank=dist.local_rank)
    out_dir, data_root = Path(out_dir), Path(data_root)
    ensure_not_inside(out_dir, data_root, "training output")
    if cache_dir is not None:
        ensure_not_inside(Path(cache_dir), data_root, "the preprocessing cache")
    ds = MSDDataset(data_root)
    ckpt = _resume_checkpoint(out_dir, quiet or not dist.is_main) if resume else None
    if ckpt is not None:
        cfg = TrainConfig.from_dict(ckpt["config"], source=out_dir)  # the run's own config wins
    ids = ds.case_ids[: cfg.data.max_cases] if cfg.data.max_cases else ds.case_ids
    split = ckpt["meta"]["split"] if ckpt else split_cases(ids, cfg.data.val_fraction, cfg.data.test_fraction,
                                                            cfg.data.split_seed)
    torch.manual_seed(cfg.seed)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    saved = ckpt["meta"].get("normalizer") if ckpt else None
    normalizer = CTNormalizer.from_dict(saved) if saved else fit_normalizer(cfg, ds, split["train"])
    cache = Path(cache_dir) if cache_dir is not None else None
    train_cases = prepare_cases(ds, split["train"], cfg, normalizer, cache)
    val_cases = prepare_cases(ds, split["val"], cfg, normalizer, cache)
    labels = dict(ds.labels)
    if cfg.data.merge_labels:  # the course project's one "liver or tumour" class (chapter 10)
        labels = merge_labels(train_cases + val_cases, labels)
    meta = {"labels": labels, "num_classes": len(labels), "task": cfg.data.task, "split": split,
            "preprocess": cfg.data.preprocess_params().to_dict(),
            "normalizer": normalizer.to_dict() if normalizer else None, "dataset": ds.name,
            "world_size": dist.world_size, "precision": training_precision(cfg, dev)}
    run = _build_run(cfg, out_dir, meta, train_cases, val_cases, dev, dist, quiet)
    if ckpt is not None:
        _restore(run, ckpt)
    run.say(f"data: {len(split['train'])} train / {len(split['val'])} val / {len(split['test'])} test cases")
    if dist.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(out_dir / "config.yaml")
        save_split(split, out_dir / "split.json")
    return run


def _resume_checkpoint(out_dir: Path, quiet: bool) -> dict:
    src = out_dir / "last.pt" if (out_dir / "last.pt").exists() else out_dir / "interrupted.pt"
    ckpt = load_checkpoint(src, map_location="cpu")
    if not quiet:
        print(f"resuming from {src} after epoch {int(ckpt['epoch'])}")
    return ckpt


def _build_run(cfg: TrainConfig, out_dir: Path, meta: dict, train_cases: list, val_cases: list,
               dev: torch.device, dist: D.DistInfo, quiet: bool) -> Run:
    data = training_dataset(train_cases, cfg)
    model = build_model(cfg, meta["num_classes"]).to(dev, memory_format=memory_format(cfg))
    loss_fn = build_loss(cfg.loss.name, **cfg.loss.kwargs)
    if cfg.model.deep_supervision:
        loss_fn = DeepSupervisionLoss(loss_fn)
    optimizer = build_optimizer(model.parameters(), cfg.optim)
    steps = math.ceil(len(data) / dist.world_size / cfg.batch_size)
    scheduler = build_scheduler(optimizer, cfg.schedule, max(1, steps), cfg.epochs)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_enabled(cfg, dev))
    net = model
    if dist.enabled:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    return Run(cfg, out_dir, meta["labels"], meta, train_cases, val_cases, data, model, net, loss_fn, optimizer,
               scheduler, scaler, dev, dist, quiet=quiet)


def _restore(run: Run, ckpt: dict) -> None:
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    if ckpt["scaler"] and run.use_amp:
        run.scaler.load_state_dict(ckpt["scaler"])
    set_rng_state(ckpt["rng"])
    run.start_epoch, run.history, run.best = int(ckpt["epoch"]), list(ckpt["history"]), float(ckpt["best_score"])
    pool = run.out_dir / HARD_NEGATIVES
    if run.cfg.data.hard_fraction > 0 and pool.exists():  # the hard negatives the run was using
        items, mined_at = load_hard_negatives(pool)
        if mined_at <= run.start_epoch:
            run.data.set_hard_negatives(items)


#: The file in the run folder that holds the current hard-negative pool (:mod:`ctseg_lib.hard_negatives`).
HARD_NEGATIVES = "hard_negatives.npz"


def mine_step(run: Run, epoch: int) -> dict:
    """Hard-negative mining before ``epoch`` when it is due (``data.hard_fraction`` > 0, every
    ``data.hard_every`` epochs after the first ones): the model's false-positive lesions on the
    training cases become the sampler's hard negatives.  Returns ``{"hard_negatives": n}`` (the
    number of false-positive components found) for the history row, or ``{}`` when not due."""
    d = run.cfg.data
    if d.hard_fraction <= 0 or epoch == 0 or epoch % d.hard_every:
        return {}
    classes = run.data.fg_classes
    items = mine_hard_negatives(run.model, run.train_cases, classes, run.cfg.model.context,
                                run.cfg.val_batch_size, run.device, seed=run.cfg.seed * 1000 + epoch)
    run.data.set_hard_negatives(items)
    if run.dist.is_main:  # setup_run made the folder
        save_hard_negatives(run.out_dir / HARD_NEGATIVES, items, epoch)
    return {"hard_negatives": len(items)}


# -- one step, one epoch ---------------------------------------------------------------------------
def training_step(run: Run, x: torch.Tensor, y: torch.Tensor) -> float:
    """One optimisation step on a batch ``x`` float32 ``(N, C, ...)``, ``y`` int64 ``(N, ...)``; returns the loss.

    Mixed precision (:func:`autocast_dtype`): the forward pass runs under ``autocast`` -- float16 on
    CUDA, bfloat16 on a CPU with native bfloat16 -- and the loss is computed in float32 from float32
    logits.  On CUDA the loss is scaled before ``backward`` so small float16 gradients do not underflow
    to 0 (``GradScaler`` unscales them before clipping and skips a step whose gradients overflowed).
    """
    dtype = autocast_dtype(run.cfg, run.device)
    with torch.autocast(device_type=run.device.type, dtype=dtype, enabled=dtype is not None):
        out = run.net(x)
    # the loss in float32, from float32 logits (deep supervision: a list of them)
    out = [o.float() for o in out] if isinstance(out, list | tuple) else out.float()
    loss = run.loss_fn(out, y)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    if run.cfg.grad_clip:
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.net.parameters(), run.cfg.grad_clip)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()  # the schedule is per step, not per epoch
    return float(loss.detach())


def train_one_epoch(run: Run, epoch: int) -> dict:
    """One pass over the epoch's samples; returns ``{"epoch", "train_loss", "lr"}``.

    The samples and the augmentation both depend only on ``(seed, epoch)``, so resuming after
    epoch ``e`` continues exactly as the uninterrupted run would have.
    """
    from tqdm.auto import tqdm

    cfg, dist = run.cfg, run.dist
    run.net.train()
    run.data.set_epoch(epoch)
    sampler = DistributedSampler(run.data, dist.world_size, dist.rank, shuffle=False) if dist.enabled else None
    loader = DataLoader(run.data, batch_size=cfg.batch_size, sampler=sampler, shuffle=False,
                        num_workers=cfg.num_workers, drop_last=len(run.data) > cfg.batch_size * dist.world_size)
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch * 101 + dist.rank)
    total, n, t0 = 0.0, 0, time.time()
    # a live bar on a terminal; nothing in a log file (the epoch line of record_epoch is enough)
    show = dist.is_main and not run.quiet and sys.stderr.isatty()
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not show, leave=False)
    for x, y in bar:
        x, y = augment_batch(x, y, cfg.augment, g)
        x = x.to(run.device, non_blocking=True, memory_format=run.memory_format)
        loss = training_step(run, x, y.to(run.device, non_blocking=True))
        total, n = total + loss * len(x), n + len(x)
        bar.set_postfix(loss=f"{total / n:.4f}", samples_s=f"{n / (time.time() - t0):.1f}")
    return {"epoch": epoch + 1, "train_loss": D.all_reduce_mean(total / max(n, 1), dist, run.device),
            "lr": run.optimizer.param_groups[0]["lr"]}


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
            scores[k].append(dice_from_counts(*tp_fp_fn))
            counts[k] += tp_fp_fn
    out = {f"val_dice_{labels[k]}": float(np.mean(v)) for k, v in scores.items()}
    out["val_mean_dice"] = float(np.mean(list(out.values()))) if out else 0.0
    pooled = {f"val_global_dice_{labels[k]}": float(dice_from_counts(*(int(v) for v in c))) for k, c in counts.items()}
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


def save_run(run: Run, path: Path, epoch: int) -> None:
    """A resumable checkpoint: weights, optimiser, schedule, scaler, RNG states, config, history."""
    save_checkpoint(path, model=run.model, config=run.cfg.to_dict(), meta=run.meta, epoch=epoch,
                    optimizer=run.optimizer, scheduler=run.scheduler, scaler=run.scaler, history=run.history,
                    best_score=run.best)


def record_epoch(run: Run, row: dict) -> None:
    """Append the epoch's row to the history; save ``best.pt`` when the pooled validation Dice did not get
    worse (a tie goes to the later, longer-trained epoch; every epoch when there is no validation
    set), ``last.pt`` always, then ``history.csv/json``.

    Why ties go to the later epoch: a lung model whose few validation tumours are all missed scores
    0 at every validation; with "strictly better" its ``best.pt`` stayed the barely trained first
    validated epoch (found on fresh phantoms: an epoch-4 model shipped as the best one).
    """
    run.history.append(row)
    if not run.dist.is_main:
        return
    score = row.get("val_global_mean_dice")  # None in epochs without validation
    if not run.val_cases or (score is not None and score >= run.best):
        run.best = score if score is not None else run.best
        save_run(run, run.out_dir / "best.pt", row["epoch"])
    save_run(run, run.out_dir / "last.pt", row["epoch"])
    _write_history(run.out_dir, run.history)
    run.say(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))


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
    if cfg.ensemble > 1:
        return train_ensemble(cfg, data_root, out_dir, resume, quiet, max_epochs, device, cache_dir)
    run = setup_run(cfg, data_root, out_dir, resume, device, cache_dir, quiet)
    cfg, epoch = run.cfg, run.start_epoch
    end = cfg.epochs if max_epochs is None else min(cfg.epochs, max_epochs)
    try:
        for epoch in range(run.start_epoch, end):
            t0 = time.time()
            mined = mine_step(run, epoch)
            row = {**train_one_epoch(run, epoch), **mined}
            if run.dist.is_main and run.val_cases and ((epoch + 1) % cfg.val_every == 0 or epoch + 1 == cfg.epochs):
                row.update(validate(run.model, run.val_cases, cfg, run.labels, run.device))
            row["time"] = round(time.time() - t0, 3)
            record_epoch(run, row)
            D.barrier(run.dist)
    except KeyboardInterrupt:
        if run.dist.is_main:
            save_run(run, run.out_dir / "interrupted.pt", epoch)
            run.say(f"interrupted: saved {run.out_dir / 'interrupted.pt'}; `--resume` continues from last.pt "
                    f"(or interrupted.pt if no epoch finished)")
        raise
    finally:
        D.cleanup_distributed()
    return TrainResult(run.history, run.out_dir / "best.pt", run.out_dir / "last.pt", unwrap(run.model))


def train_ensemble(cfg: TrainConfig, data_root: str | Path, out_dir: str | Path, resume: bool = False,
                   quiet: bool = False, max_epochs: int | None = None, device: str | None = None,
                   cache_dir: str | Path | None = None) -> TrainResult:
    """``cfg.ensemble`` networks, one :func:`train` each with seeds ``cfg.seed``, ``cfg.seed + 1``, ...
    (same split: it depends on ``data.split_seed`` only), in ``out_dir/member_<k>``; then
    ``out_dir/best.pt`` holds their :class:`~ctseg_lib.models.ensemble.Ensemble` (each member's
    ``best.pt`` weights) with ``cfg`` itself, so ``load_model`` / ``ctseg predict`` use it as one model.
    ``history.json`` lists every member's epochs with a ``member`` column.
    """
    from .models.ensemble import Ensemble

    out_dir = Path(out_dir)
    members, history, meta = [], [], None
    for k in range(cfg.ensemble):
        member_cfg = cfg.with_changes({"ensemble": 1, "seed": cfg.seed + k, "name": f"{cfg.name}_member{k}"})
        res = train(member_cfg, data_root, out_dir / f"member_{k}", resume=resume, quiet=quiet,
                    max_epochs=max_epochs, device=device, cache_dir=cache_dir)
        member, _, member_meta = load_model(res.best_path)  # the member's best.pt, not its last epoch
        if meta is not None and member_meta["split"] != meta["split"]:
            raise CTSegError("ensemble members were trained on different splits", out_dir)
        meta = meta or member_meta
        members.append(member)
        history += [{"member": k, **row} for row in res.history]
    model = Ensemble(members)  # load_model gave each member on the CPU
    if int(os.environ.get("RANK", "0")) == 0:  # torchrun: only the main process writes
        for name in ("best.pt", "last.pt"):
            save_checkpoint(out_dir / name, model=model, config=cfg.to_dict(), meta=meta,
                            epoch=max(r["epoch"] for r in history), history=history)
        _write_history(out_dir, history)
    return TrainResult(history, out_dir / "best.pt", out_dir / "last.pt", model)
