"""Make the compact real-CT samples in ``samples/realct/`` from the full-size originals.

Usage (from the repository root)::

    python tools/make_samples.py                      # reads ../shared/realct
    python tools/make_samples.py /path/to/realct --out samples/realct

What it does to every sample (the CT and its label maps together, on one grid):

1. **crop to the body**: :func:`ctseg_lib.preprocessing.body_bbox` (largest component above -500 HU,
   so the -3024 / -2048 field-of-view padding and the air never count as body) plus a ``--margin-mm``
   margin; the in-plane box is then widened to a number of voxels that resamples to an exact
   ``--spacing`` (0.703125 mm × 32 voxels = 1.5 mm × 15 voxels), centred on the body, clipped to the
   scan.  The patient table is not connected to the body, so it is mostly cropped away; where the
   body is wider than the scanner's field of view (the liver scan) nothing is cropped left-right and
   the padding corners stay in the sample — that is a lesson, not a defect.
2. **resample in-plane** to ``--spacing`` mm (never finer; the slice spacing is kept) with
   :func:`ctseg_lib.preprocessing.resize` (centre-aligned grids, the field of view is preserved):
   CT linearly, *padding-aware*: an output voxel is the linear interpolation of the valid (non-padding)
   input voxels around it, renormalised by their weights, and it is the padding value itself where
   most of its interpolation weight is padding; so the padding value survives exactly and no
   made-up values between it and the body appear at the field-of-view edge.  Label maps with
   nearest neighbour (values stay a subset of the input's).
3. **keep the file's own orientation convention** (LAS for the MSD file, LPS for LIDC: chapter 2
   shows real headers), adjusting the affine so that every voxel keeps its world position;
   ``ctseg_lib.data.samples.load_sample`` returns canonical RAS+ volumes in any case.
4. **write** int16 CT and uint8 labels as ``.nii.gz`` (gzip level 9, mtime 0, so re-running gives
   byte-identical files) atomically, plus ``manifest.json`` (source checksums, crop box, grids, the
   label volumes in ml before and after), and prints the sizes.

The README and licence files in ``samples/realct/`` are written by hand, not by this script.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import math
import sys
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ctseg_lib.data.samples import SAMPLES  # noqa: E402
from ctseg_lib.errors import CTSegError  # noqa: E402
from ctseg_lib.io import atomic_write, ensure_not_inside, write_json_atomic  # noqa: E402
from ctseg_lib.preprocessing import body_bbox, resize  # noqa: E402

#: Values below this are not air but a scanner's "outside the field of view" marker (-2048, -3024, ...).
PADDING_BELOW = -1024


def padding_value(ct: np.ndarray) -> int | None:
    """The field-of-view padding value of ``ct`` (its minimum, when below -1024 HU), else None."""
    lo = int(ct.min())
    return lo if lo < PADDING_BELOW else None


def _exact_length(lo: int, hi: int, n: int, step: float, target: float) -> tuple[int, int, int]:
    """Widen ``[lo, hi)`` (within ``[0, n)``) to a length that resamples to exactly ``target`` mm.

    Returns ``(lo, hi, n_out)``; when no such length fits, the box is kept and ``n_out`` rounds
    down, so the output spacing is a little *coarser* than ``target``, never finer.
    """
    length = hi - lo
    for m in range(length, n + 1):
        out = m * step / target
        if abs(out - round(out)) < 1e-6:
            start = min(max(0, lo - (m - length) // 2), n - m)
            return start, start + m, int(round(out))
    return lo, hi, max(1, math.floor(length * step / target))


def resample_ct(ct: np.ndarray, shape: tuple[int, int, int], pad: int | None) -> np.ndarray:
    """Linear resampling of an HU array to ``shape``, keeping ``pad`` voxels exact; int16 out."""
    if pad is None:
        out = resize(ct, shape, is_label=False)
    else:
        valid = (ct != pad).astype(np.float32)
        num = resize(np.where(ct != pad, ct, 0).astype(np.float32), shape, is_label=False)
        den = resize(valid, shape, is_label=False)
        out = np.where(den >= 0.5, num / np.maximum(den, 1e-6), np.float32(pad))
    info = np.iinfo(np.int16)
    return np.clip(np.rint(out), info.min, info.max).astype(np.int16)


def compact(
    ct_img: nib.Nifti1Image, label_imgs: dict[str, nib.Nifti1Image], spacing: float = 1.5, margin_mm: float = 5.0
) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, dict]:
    """Crop to the body and resample in-plane; see the module docstring.

    Args:
        ct_img: the CT (HU, any integer/float dtype), in any orientation whose third axis is I/S.
        label_imgs: label maps on the same grid.
        spacing: target in-plane spacing in mm (kept when the input is already coarser).
        margin_mm: margin around the body box, mm.

    Returns:
        ``(ct int16, {name: uint8 label}, affine 4×4, info dict)``, arrays in the file's axis order.
    """
    ct = np.asarray(ct_img.dataobj)
    if ct.ndim != 3:
        raise CTSegError(f"expected a 3D CT, got shape {ct.shape}", ct_img.get_filename())
    if nib.aff2axcodes(ct_img.affine)[2] not in ("S", "I"):
        raise CTSegError(f"third axis is not the slice axis ({nib.aff2axcodes(ct_img.affine)})",
                         ct_img.get_filename())
    ct = np.rint(ct).astype(np.int16) if np.issubdtype(ct.dtype, np.floating) else ct.astype(np.int16)
    steps = np.sqrt((ct_img.affine[:3, :3] ** 2).sum(axis=0))
    pad = padding_value(ct)
    margin = [int(math.ceil(margin_mm / s)) for s in steps]
    box = body_bbox(ct, margin=0)
    starts, stops, shape = [], [], []
    for ax in range(3):
        lo, hi = max(0, box[ax].start - margin[ax]), min(ct.shape[ax], box[ax].stop + margin[ax])
        if ax < 2 and steps[ax] < spacing:
            lo, hi, n_out = _exact_length(lo, hi, ct.shape[ax], float(steps[ax]), spacing)
        else:
            n_out = hi - lo  # slice axis (and in-plane axes already coarse enough): unchanged
        starts.append(lo)
        stops.append(hi)
        shape.append(n_out)
    crop = tuple(slice(a, b) for a, b in zip(starts, stops))
    out_ct = resample_ct(ct[crop], tuple(shape), pad)
    labels = {}
    for name, img in label_imgs.items():
        lab = np.asarray(img.dataobj)
        if lab.shape != ct.shape or not np.allclose(img.affine, ct_img.affine, atol=1e-3):
            raise CTSegError(f"label {name!r} is not on the CT's grid", img.get_filename())
        labels[name] = resize(np.rint(lab).astype(np.uint8)[crop], tuple(shape), is_label=True)
    # Output voxel i samples input coordinate start + (i + 0.5) * n_in / n_out - 0.5 (centre-aligned).
    scale = np.array([(b - a) / n for a, b, n in zip(starts, stops, shape)])
    to_input = np.eye(4)
    to_input[:3, :3] = np.diag(scale)
    to_input[:3, 3] = np.array(starts) + 0.5 * scale - 0.5
    affine = ct_img.affine @ to_input
    info = {
        "padding_value": pad,
        "crop_voxels": [[a, b] for a, b in zip(starts, stops)],
        "original_shape": list(ct.shape),
        "original_spacing_mm": [round(float(s), 6) for s in steps],
        "shape": list(shape),
        "spacing_mm": [round(float(s), 6) for s in np.sqrt((affine[:3, :3] ** 2).sum(axis=0))],
        "orientation": "".join(nib.aff2axcodes(affine)),
    }
    return out_ct, labels, affine, info


def nifti_gz_bytes(array: np.ndarray, affine: np.ndarray) -> bytes:
    """A NIfTI-1 image as deterministic gzip bytes (level 9, mtime 0), qform = sform = ``affine`` (code 1)."""
    img = nib.Nifti1Image(array, np.asarray(affine, dtype=np.float64))
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_slope_inter(1, 0)
    return gzip.compress(img.to_bytes(), compresslevel=9, mtime=0)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _volume_ml(mask: np.ndarray, affine: np.ndarray) -> float:
    return float(np.count_nonzero(mask) * abs(np.linalg.det(affine[:3, :3])) / 1000.0)


def make_samples(src: Path, out: Path, spacing: float = 1.5, margin_mm: float = 5.0) -> dict:
    """Write every sample of :data:`ctseg_lib.data.samples.SAMPLES` from ``src`` into ``out``."""
    src, out = Path(src), Path(out)
    if not src.is_dir():
        raise CTSegError("source folder of the real CT originals not found", src)
    ensure_not_inside(out, src, "the compact samples")
    out.mkdir(parents=True, exist_ok=True)
    manifest: dict = {"made_by": "tools/make_samples.py", "spacing_mm": spacing, "margin_mm": margin_mm,
                      "samples": {}}
    for name, meta in SAMPLES.items():
        files = {"image": meta.image, **meta.labels}
        for f in files.values():
            if not (src / f).is_file():
                raise CTSegError(f"sample {name!r} needs {f}, which is missing", src / f)
        ct_img = nib.load(str(src / meta.image))
        lab_imgs = {k: nib.load(str(src / f)) for k, f in meta.labels.items()}
        ct, labels, affine, info = compact(ct_img, lab_imgs, spacing, margin_mm)
        entry = {**info, "files": {}}
        for key, f in files.items():
            arr = ct if key == "image" else labels[key]
            data = nifti_gz_bytes(arr, affine)
            with atomic_write(out / f, "wb") as fh:
                fh.write(data)
            rec = {"bytes": len(data), "source_sha256": _sha256(src / f), "sha256": hashlib.sha256(data).hexdigest()}
            if key != "image":
                rec["volume_ml_original"] = round(_volume_ml(np.asarray(lab_imgs[key].dataobj) > 0, ct_img.affine), 3)
                rec["volume_ml"] = round(_volume_ml(arr > 0, affine), 3)
            entry["files"][f] = rec
            print(f"{f:40s} {len(data) / 1e6:6.2f} MB  {arr.dtype}  {'×'.join(map(str, arr.shape))}")
        manifest["samples"][name] = entry
        print(f"  {name}: crop {info['crop_voxels']}, spacing {info['spacing_mm']} mm, {info['orientation']}, "
              f"padding {info['padding_value']}")
    write_json_atomic(out / "manifest.json", manifest)
    total = sum(r["bytes"] for e in manifest["samples"].values() for r in e["files"].values())
    print(f"total {total / 1e6:.2f} MB in {out}")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", nargs="?", default=str(ROOT.parent / "shared" / "realct"),
                        help="folder with the full-size originals (default: ../shared/realct beside the repository)")
    parser.add_argument("--out", default=str(ROOT / "samples" / "realct"), help="output folder")
    parser.add_argument("--spacing", type=float, default=1.5, help="in-plane spacing in mm (default 1.5)")
    parser.add_argument("--margin-mm", type=float, default=5.0, help="margin around the body box in mm (default 5)")
    args = parser.parse_args(argv)
    try:
        make_samples(Path(args.src), Path(args.out), args.spacing, args.margin_mm)
    except CTSegError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
