"""Inference: whole volumes from a 2D/2.5D network (slice by slice) or a 3D one (sliding window).

* :func:`predict_volume` — a 2D or 2.5D model sees axial slices ``image[:, :, z-k..z+k]``; slices
  are run in batches, padded to the network's ``size_divisor`` and cropped back.
* :func:`sliding_window_inference` — a 3D model sees overlapping ``roi_size`` patches; each
  patch's softmax is weighted by a Gaussian (σ = roi/8) so the less reliable patch borders count
  less, then the weighted sum is divided by the summed weights (nnU-Net, Isensee et al. 2021).
  The sums live on ``accumulate_device`` (CPU by default) so GPU memory stays bounded.
* Test-time augmentation (``tta``): average the softmax over all mirrorings of the in-plane
  (2D) or all three (3D) axes.
* :func:`predict_case` — raw CT :class:`~ctseg_lib.data.nifti.Volume` → label map on the
  original canonical grid, streaming slice batches so only uint8 labels exist for the whole
  volume; :func:`save_prediction` writes it so it overlays the source file.

Everything runs under ``torch.inference_mode()`` (no autograd bookkeeping).  On a CPU that computes
bfloat16 natively (Intel AMX or AVX512-BF16: :func:`cpu_bf16`) the network runs under
``torch.autocast(dtype=torch.bfloat16)``: about 2x faster, and the softmax is still taken in float32
(``CTSEG_CPU_BF16=0`` turns it off; ``benchmarks/bench_bf16.py`` measures speed and agreement).
"""

from __future__ import annotations

import functools
import itertools
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .data.nifti import Volume, save_nifti
from .datasets import context_indices
from .errors import CTSegError

#: CPU flags (``/proc/cpuinfo``) of a native bfloat16 dot product: Intel AMX and AVX512-BF16 (also on
#: AMD Zen 4).  Without them oneDNN emulates bf16 and autocast would be *slower* than float32.
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:  # not Linux: no flags, so float32
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def cpu_bf16() -> bool:
    """Whether CPU inference runs the network in bfloat16 (``torch.autocast``).

    ``CTSEG_CPU_BF16``: ``auto`` (default) — only on a CPU with native bf16 (:data:`BF16_CPU_FLAGS`);
    ``1`` — always; ``0`` — never.  bfloat16 keeps float32's exponent range with an 8-bit mantissa;
    the logits are cast back to float32 before the softmax, and on the book's models the argmax
    labels agree with float32 on > 99.9 % of voxels (``tests/test_inference_bf16.py``).  Training is
    not affected: it stays float32 on a CPU.
    """
    mode = os.environ.get("CTSEG_CPU_BF16", "auto").strip().lower()
    if mode in ("1", "true", "on", "yes"):
        return True
    if mode in ("0", "false", "off", "no"):
        return False
    if mode != "auto":
        raise CTSegError(f"CTSEG_CPU_BF16={mode!r}: use auto, 1 or 0")
    return bool(_cpu_flags() & set(BF16_CPU_FLAGS))


def _logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    if x.device.type == "cpu" and cpu_bf16():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
    else:
        out = model(x)
    return out[0] if isinstance(out, list | tuple) else out  # deep supervision: full-res first


def softmax_tta(model: torch.nn.Module, x: torch.Tensor, tta: bool) -> torch.Tensor:
    """Softmax probabilities ``(N, C, *S)`` float32 of a batch ``x`` ``(N, in_channels, *S)``.

    With ``tta`` the probabilities are averaged over every subset of flipped spatial axes (each
    prediction flipped back): 4 passes for 2D, 8 for 3D (nnU-Net's mirroring test-time augmentation).
    """
    dims = list(range(2, x.ndim))
    subsets = [()] if not tta else [s for r in range(len(dims) + 1) for s in itertools.combinations(dims, r)]
    acc = None
    for axes in subsets:
        xi = x.flip(axes) if axes else x
        p = torch.softmax(_logits(model, xi).float(), dim=1)
        p = p.flip(axes) if axes else p
        acc = p if acc is None else acc + p
    return acc / len(subsets)


def _pad_to(x: torch.Tensor, divisor: int) -> tuple[torch.Tensor, list[int]]:
    """Pad the spatial dims of ``(N, C, *S)`` at the end to multiples of ``divisor`` (edge values)."""
    spatial = list(x.shape[2:])
    target = [-(-s // divisor) * divisor for s in spatial]
    pad: list[int] = []
    for s, t in zip(reversed(spatial), reversed(target)):
        pad += [0, t - s]
    if any(pad):
        x = F.pad(x, pad, mode="replicate")
    return x, spatial


def iter_slice_probs(model: torch.nn.Module, image: np.ndarray, context: int = 0, batch_size: int = 16,
                     tta_flips: bool = False, device: str | torch.device = "cpu"):
    """Yield ``(z, probs)`` batch by batch: slice indices ``z`` (B,) and their softmax ``(B, C, X, Y)``.

    The streaming core of :func:`predict_volume` and :func:`predict_case`: only one batch of
    probabilities exists at a time, so a caller that reduces each batch (argmax, restore to the
    original grid) never holds the ``(C, X, Y, Z)`` float volume (2.3 GB for 512×512×745×3 float32).
    ``image`` is read one batch of slices at a time (no full copy); slice-major arrays
    (:func:`ctseg_lib.preprocessing.slice_major`, the preprocessed layout) make that a contiguous read.
    """
    if image.ndim != 3:
        raise ValueError(f"expected an (X, Y, Z) volume, got shape {image.shape}")
    model.eval()
    device = torch.device(device)
    divisor = int(getattr(model, "size_divisor", 1))
    nz = image.shape[2]
    for start in range(0, nz, batch_size):
        z = np.arange(start, min(nz, start + batch_size))
        idx = context_indices(nz, z, context)                                 # (B, 2k+1)
        # inference mode per batch, not around the yield: the caller's code between batches keeps its own mode
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(np.take(image, idx.ravel(), axis=2), 2, 0),
                                                      dtype=np.float32))      # (B*(2k+1), X, Y)
            x = x.reshape(*idx.shape, *image.shape[:2]).to(device)            # (B, 2k+1, X, Y)
            x, (sx, sy) = _pad_to(x, divisor)
            # NHWC: the layout oneDNN's CPU convolutions prefer; fastest when the model is channels_last too
            # (load_model and train() do that): ~1.6x with 1 or 2 threads (benchmarks/bench_layout.py).
            x = x.contiguous(memory_format=torch.channels_last)
            p = softmax_tta(model, x, tta_flips)[:, :, :sx, :sy].cpu()       # (B, C, X, Y)
        yield z, p


@torch.inference_mode()
def predict_volume(model: torch.nn.Module, image: np.ndarray, context: int = 0, batch_size: int = 16,
                   tta_flips: bool = False, device: str | torch.device = "cpu",
                   return_probs: bool = True, probs_dtype: np.dtype | type = np.float32) -> np.ndarray:
    """Segment a preprocessed volume with a 2D (``context=0``) or 2.5D (``context=k``) network.

    Args:
        image: ``(X, Y, Z)`` float array, preprocessed exactly as in training.
        context: k; the network gets ``2k+1`` channels (slices z-k..z+k, clamped at the ends).
        batch_size: slices per forward pass.
        probs_dtype: dtype of the returned probabilities (``np.float16`` halves their memory).

    Returns:
        ``(C, X, Y, Z)`` softmax probabilities (``probs_dtype``), or ``(X, Y, Z)`` uint8 argmax
        labels if ``return_probs`` is false (then no probability volume is ever held).
    """
    probs: np.ndarray | None = None
    labels = None if return_probs else np.zeros(image.shape, dtype=np.uint8)
    for z, p in iter_slice_probs(model, image, context, batch_size, tta_flips, device):
        if return_probs:
            if probs is None:
                probs = np.zeros((p.shape[1], *image.shape), dtype=probs_dtype)
            probs[:, :, :, z] = p.permute(1, 2, 3, 0).numpy()
        else:
            labels[:, :, z] = argmax_uint8(p).permute(1, 2, 0).numpy()
    return probs if return_probs else labels


def gaussian_importance_map(roi_size: tuple[int, ...], sigma_scale: float = 1 / 8) -> torch.Tensor:
    """Separable Gaussian centred in the patch, σ = ``sigma_scale`` · side, max 1, no zeros.

    Zeros are replaced by the smallest positive value so the weight sum never divides by zero.
    """
    w = torch.ones(())
    for s in roi_size:
        c = (s - 1) / 2
        g = torch.exp(-0.5 * ((torch.arange(s, dtype=torch.float64) - c) / max(s * sigma_scale, 1e-6)) ** 2)
        w = w[..., None] * g
    w = (w / w.max()).float()
    w[w == 0] = w[w > 0].min()
    return w


def window_starts(size: int, roi: int, overlap: float) -> list[int]:
    """Start indices (voxels) of the windows of ``roi`` voxels that cover ``[0, size)`` along one axis.

    The step is about ``roi · (1 - overlap)``; the starts are spread evenly so the last window ends
    exactly at ``size`` (no padding).  The windows of a volume are the product over its axes.
    """
    if size <= roi:
        return [0]
    step = max(1, int(roi * (1 - overlap)))
    n = -(-(size - roi) // step) + 1
    return sorted({int(round(i * (size - roi) / (n - 1))) for i in range(n)})


@torch.inference_mode()
def sliding_window_inference(model: torch.nn.Module, volume: torch.Tensor, roi_size: tuple[int, ...],
                             overlap: float = 0.5, sigma_scale: float = 1 / 8, sw_batch_size: int = 2,
                             device: str | torch.device = "cpu", accumulate_device: str | torch.device = "cpu",
                             tta_flips: bool = False) -> torch.Tensor:
    """Gaussian-weighted sliding-window softmax for a 3D network.

    Args:
        volume: ``(C_in, X, Y, Z)`` float tensor (preprocessed).
        roi_size: patch size ``(px, py, pz)`` voxels the model was trained on.
        overlap: fraction of overlap between neighbouring windows (0.5 = nnU-Net).

    Returns:
        ``(C_out, X, Y, Z)`` float32 probabilities on ``accumulate_device``.  A volume smaller than
        the ROI is padded (edge values) and the result cropped back.
    """
    if volume.ndim != 4 or len(roi_size) != 3:
        raise ValueError(f"expected (C, X, Y, Z) volume and 3 roi sides, got {tuple(volume.shape)}, {roi_size}")
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    model.eval()
    device, acc_dev = torch.device(device), torch.device(accumulate_device)
    shape = list(volume.shape[1:])
    pad: list[int] = []
    for s, r in zip(reversed(shape), reversed(roi_size)):
        pad += [0, max(0, r - s)]
    vol = F.pad(volume.float()[None], pad, mode="replicate")[0] if any(pad) else volume.float()
    full = vol.shape[1:]
    weight = gaussian_importance_map(tuple(roi_size), sigma_scale)
    w_dev, w_acc = weight.to(device), weight.to(acc_dev)  # moved once, not once per window
    starts = list(itertools.product(*[window_starts(s, r, overlap) for s, r in zip(full, roi_size)]))
    acc: torch.Tensor | None = None
    norm = torch.zeros(full, dtype=torch.float32, device=acc_dev)
    for i in range(0, len(starts), sw_batch_size):
        batch = starts[i:i + sw_batch_size]
        sl = [tuple(slice(a, a + r) for a, r in zip(st, roi_size)) for st in batch]
        x = torch.stack([vol[(slice(None), *s)] for s in sl]).to(device)
        p = softmax_tta(model, x, tta_flips).mul_(w_dev).to(acc_dev)
        if acc is None:
            acc = torch.zeros((p.shape[1], *full), dtype=torch.float32, device=acc_dev)
        for j, s in enumerate(sl):
            acc[(slice(None), *s)] += p[j]
            norm[s] += w_acc
    out = acc.div_(norm)
    return out[(slice(None), *[slice(0, s) for s in shape])]


def argmax_uint8(p: torch.Tensor) -> torch.Tensor:
    """``p.argmax(1)`` as uint8 for ``(N, C, ...)`` scores (C ≤ 256), first maximum wins like argmax.

    One comparison per class: torch's ``argmax(1)`` over an NCHW tensor measured 7x slower
    (0.81 s vs 0.11 s for 32×3×410×310 on one thread), and in streaming prediction it ran once per batch.
    """
    best = p[:, 0]
    idx = torch.zeros(best.shape, dtype=torch.uint8, device=p.device)
    for c in range(1, p.shape[1]):
        pc = p[:, c]
        idx.masked_fill_(pc > best, c)
        best = torch.maximum(best, pc)
    return idx


def _linear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For linear resizing ``n_in → n_out`` (centre-aligned, ``align_corners=False`` as in
    :func:`ctseg_lib.preprocessing.resize`): per output index, the two input indices and the weight
    of the second one (torch's rule: source ``max((o + 0.5) · n_in / n_out - 0.5, 0)``)."""
    src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
    i0 = np.minimum(src.astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, (src - i0).astype(np.float32)


class _LabelRestorer:
    """Probabilities on the preprocessed grid → uint8 labels on the original grid, a few slices at a time.

    Equal to ``preprocessing.restore(probs, meta).argmax(0)`` (linear interpolation of the
    probabilities, then argmax; background outside the body crop) but never holds more than a
    chunk of float probabilities on the original grid: trilinear resizing is separable, so z is
    interpolated per output slice from its two input slices and x, y per slice by bilinear resizing.
    """

    def __init__(self, meta: dict) -> None:
        self.shape, self.cropped = tuple(meta["shape"]), tuple(meta["cropped_shape"])
        self.box = tuple(slice(a, b) for a, b in meta["bbox"])
        self.out = np.zeros(tuple(meta["original_shape"]), dtype=np.uint8)
        self.i0, self.i1, self.w = _linear_taps(self.shape[2], self.cropped[2])
        self.same_z = self.shape[2] == self.cropped[2]

    def put(self, zc: np.ndarray, slabs: torch.Tensor) -> None:
        """``slabs`` (B, C, x, y) float: probabilities of cropped-grid slices ``zc`` (already z-interpolated)."""
        if tuple(slabs.shape[2:]) != self.cropped[:2]:
            slabs = F.interpolate(slabs.float(), size=self.cropped[:2], mode="bilinear", align_corners=False)
        lab = argmax_uint8(slabs).permute(1, 2, 0).numpy()  # (x, y, B)
        self.out[self.box[0], self.box[1], self.box[2].start + zc] = lab

    def from_volume(self, probs: np.ndarray | torch.Tensor, chunk: int = 16) -> np.ndarray:
        """All slices from a ``(C, X, Y, Z)`` probability volume on the preprocessed grid."""
        probs = torch.as_tensor(probs)
        for a in range(0, self.cropped[2], chunk):
            zc = np.arange(a, min(self.cropped[2], a + chunk))
            p0 = probs[:, :, :, torch.as_tensor(self.i0[zc])].float()
            p1 = probs[:, :, :, torch.as_tensor(self.i1[zc])].float()
            w = torch.as_tensor(self.w[zc])
            self.put(zc, (p0 + (p1 - p0) * w).permute(3, 0, 1, 2))
        return self.out


def predict_case(model: torch.nn.Module, cfg, meta: dict, image: Volume, tta: bool = False,
                 device: str | torch.device = "cpu", batch_size: int | None = None) -> np.ndarray:
    """Segment one raw CT volume; returns uint8 labels ``(X, Y, Z)`` on its canonical original grid.

    The preprocessing recorded in the checkpoint (``meta["preprocess"]``, ``meta["normalizer"]``)
    is re-applied, the network runs on that grid, and the class probabilities are mapped back as
    :func:`ctseg_lib.preprocessing.restore` does (linear interpolation, then argmax).

    Memory: a 2D/2.5D network streams: each batch of slices is restored to the original grid and
    reduced to labels at once when the preprocessing keeps the number of slices (the usual case);
    otherwise the probabilities are kept in float16 and restored a few slices at a time.  Only
    uint8 labels exist for the whole original volume (512×512×745: 7.5 GB peak before, see
    ``benchmarks/bench_large_volume.py``).
    """
    from .preprocessing import CTNormalizer, PreprocessParams, preprocess_case

    params = PreprocessParams.from_dict(meta["preprocess"])
    norm = CTNormalizer.from_dict(meta["normalizer"]) if meta.get("normalizer") else None
    pre = preprocess_case(image, None, params, norm)
    restorer = _LabelRestorer(pre.meta)
    if cfg.model.spatial_dims == 2:
        bs = batch_size or cfg.val_batch_size
        if restorer.same_z:
            for z, p in iter_slice_probs(model, pre.image, cfg.model.context, bs, tta, device):
                restorer.put(z, p)
            return restorer.out
        probs = predict_volume(model, pre.image, cfg.model.context, bs, tta_flips=tta, device=device,
                               probs_dtype=np.float16)
    else:
        vol = torch.from_numpy(np.ascontiguousarray(pre.image))[None]
        probs = sliding_window_inference(model, vol, tuple(cfg.data.patch_size), device=device,
                                         tta_flips=tta)
    return restorer.from_volume(probs)


def save_prediction(path: str | Path, labels: np.ndarray, source: Volume) -> Path:
    """Write ``labels`` (canonical ``(X, Y, Z)``) as NIfTI on the source file's own grid.

    The array is put back in the file's axis order (:meth:`Volume.to_original`) and written with
    the file's original affine, so it overlays the source in any viewer (ITK-SNAP, 3D Slicer).

    Raises:
        CTSegError: ``path`` is the source image itself, or the shapes differ.
    """
    path = Path(path)
    if source.path is not None and path.resolve() == Path(source.path).resolve():
        raise CTSegError("refusing to overwrite the input image with a prediction", path)
    if labels.shape != source.array.shape:
        raise CTSegError(f"prediction shape {labels.shape} differs from image shape {source.array.shape}", path)
    return save_nifti(path, source.to_original(np.asarray(labels, dtype=np.uint8)), source.original_affine,
                      dtype=np.uint8)
