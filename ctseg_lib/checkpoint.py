"""Checkpoints: everything needed to resume a run bit-for-bit, stored as *data*, never as code.

A checkpoint is a dict of tensors, numbers, strings, lists and dicts::

    {"format": "ctseg-checkpoint", "version": 1, "epoch": int (epochs completed),
     "model": state_dict, "optimizer": ..., "scheduler": ..., "scaler": ... | None,
     "rng": {"python": [...], "numpy": {...}, "torch": ByteTensor, "cuda": [ByteTensor] },
     "config": TrainConfig.to_dict(), "meta": {"labels": {int: name}, "num_classes": int,
     "preprocess": dict, ...}, "history": [row, ...], "best_score": float}

Why so careful: ``torch.load`` without ``weights_only=True`` un-pickles arbitrary objects, and a
pickle can run any code while loading (its ``__reduce__`` may call ``os.system``).  A downloaded
checkpoint is untrusted input, so :func:`load_checkpoint` always uses ``weights_only=True``
(PyTorch docs, "torch.load" security note) and everything saved here is restricted to the types
that loader accepts: RNG states are converted from tuples/numpy arrays to lists and tensors.
"""

from __future__ import annotations

import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import CTSegError
from .io import atomic_path

FORMAT = "ctseg-checkpoint"
VERSION = 1


# -- RNG state in weights_only-compatible form ----------------------------------------------------
def get_rng_state() -> dict:
    """Python, NumPy, torch CPU and CUDA generator states as lists/tensors."""
    py = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": {"name": np_name, "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    return state


def set_rng_state(state: dict) -> None:
    """Inverse of :func:`get_rng_state`."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside a DistributedDataParallel/DataParallel wrapper."""
    return model.module if hasattr(model, "module") else model


# -- save / load ---------------------------------------------------------------------------------
def save_checkpoint(path: str | Path, *, model: torch.nn.Module, config: dict, meta: dict, epoch: int,
                    optimizer: torch.optim.Optimizer | None = None, scheduler: Any = None,
                    scaler: Any = None, history: list | None = None, best_score: float = -1.0) -> Path:
    """Write a checkpoint atomically (temp file + rename: a crash never leaves half a file)."""
    ckpt = {
        "format": FORMAT, "version": VERSION, "epoch": int(epoch),
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,
        "rng": get_rng_state(), "config": config, "meta": meta,
        "history": list(history or []), "best_score": float(best_score),
    }
    with atomic_path(path) as tmp:
        torch.save(ckpt, tmp)
    return Path(path)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint safely (``weights_only=True``).

    Raises:
        CTSegError: file missing, not a torch file, or containing anything but plain data
            (e.g. a pickled object with code) — such a file is refused *without* executing it.
    """
    path = Path(path)
    if not path.is_file():
        raise CTSegError("checkpoint not found", path)
    if not zipfile.is_zipfile(path):  # torch.save has written zip archives since PyTorch 1.6
        raise CTSegError("not a readable checkpoint (not a torch.save zip archive)", path)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        why = [ln for ln in str(e).splitlines() if "GLOBAL" in ln or "Unsupported" in ln]
        raise CTSegError("refusing to load: the file contains objects other than plain data, which could "
                         f"run code (weights_only=True rejected it: {(why or ['unknown'])[0].strip()})",
                         path) from None
    except Exception as e:  # corrupt zip, truncated file, not a torch file ...
        raise CTSegError(f"not a readable checkpoint ({type(e).__name__}: {str(e).splitlines()[0]})",
                         path) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CTSegError("not a ctseg checkpoint (missing 'format': 'ctseg-checkpoint')", path)
    for key in ("model", "config", "meta", "epoch"):
        if key not in ckpt:
            raise CTSegError(f"checkpoint lacks '{key}'", path)
    return ckpt


def build_model(cfg: Any, num_classes: int) -> torch.nn.Module:
    """The U-Net described by ``cfg.model`` (a :class:`~ctseg_lib.config.TrainConfig`); with
    ``cfg.ensemble`` > 1 an :class:`~ctseg_lib.models.ensemble.Ensemble` of that many.  With
    ``cfg.model.dot_filter`` each U-Net is preceded by its fixed
    :class:`~ctseg_lib.models.dot_filter.DotFilter` (``nn.Sequential``)."""
    from .models.ensemble import Ensemble
    from .models.unet import UNet

    m = cfg.model

    def one() -> torch.nn.Module:
        net = UNet(spatial_dims=m.spatial_dims, in_channels=m.in_channels + bool(m.dot_filter),
                   out_channels=num_classes, base_channels=m.base_channels, depth=m.depth, norm=m.norm,
                   dropout=m.dropout, upsample=m.upsample, deep_supervision=m.deep_supervision)
        if not m.dot_filter:
            return net
        from .models.dot_filter import DotFilter
        return torch.nn.Sequential(DotFilter(m.context, m.dot_filter, m.dot_voxel_mm), net)

    return one() if cfg.ensemble == 1 else Ensemble([one() for _ in range(cfg.ensemble)])


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """Rebuild the trained network for inference.

    Returns:
        ``(model, config, meta)``: the model in ``eval()`` mode on ``device``, the
        :class:`~ctseg_lib.config.TrainConfig`, and the meta dict (labels, preprocessing).
    """
    return model_from_checkpoint(load_checkpoint(path, map_location="cpu"), path, device)


def model_from_checkpoint(ckpt: dict, path: str | Path, device: str | torch.device = "cpu"):
    """:func:`load_model` for a checkpoint already read with :func:`load_checkpoint` (``path`` names it
    in errors), so a caller that inspects the checkpoint first does not read the file twice."""
    from .config import TrainConfig

    cfg = TrainConfig.from_dict(ckpt["config"], source=path)
    meta = ckpt["meta"]
    model = build_model(cfg, int(meta["num_classes"]))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CTSegError(f"weights do not match the configured model ({str(e).splitlines()[0]})", path) from None
    # 2D nets in channels_last (NHWC), as in training: ~1.6x faster 2D inference on CPU (predict_volume
    # also sends its slices as NHWC; benchmarks/bench_layout.py).  Same weights, same outputs.
    fmt = torch.channels_last if cfg.model.spatial_dims == 2 else torch.contiguous_format
    return model.to(device, memory_format=fmt).eval(), cfg, meta
