"""Mutation testing by listed mutants: plant one plausible bug at a time, run the tests, count the kills.

    python tools/mutate.py                  # every mutant, against this checkout (make mutate)
    python tools/mutate.py --root /tmp/old  # against another copy (e.g. ``git archive HEAD``)
    python tools/mutate.py --only hd95,dice # mutants whose id contains "hd95" or "dice"
    python tools/mutate.py --list           # print the list and exit

Each mutant is a *source-text replacement* (``search`` must occur exactly once in its file, which
``tests/test_mutate_list.py`` checks so the list cannot silently rot) that turns correct code into a
bug someone could plausibly write: a wrong definition (HD95 from pooled distances), a wrong axis
(spacing from the affine's rows), a wrong neighbourhood (26- instead of 6-connected surface), an
off-by-half grid, a missing term.  The repository is copied once into a temporary folder (no
``.git``, ``.venv``, ``_build``, ``book/_data``); for every mutant the one file is rewritten, the
test files that cover its module are run with ``pytest -x`` under a per-mutant timeout, and the file
is restored.  A mutant is **killed** when pytest fails (or times out), **survived** when it passes.
The source tree you run it from is never modified.

Mutation score = killed / total.  Survivors are printed with their description: each one is either a
missing test or an equivalent mutant (a change that cannot alter any result), which the list avoids.
(Example of one left out: the 1-voxel margin of the surface bounding box can be dropped without changing
any distance, because the erosion already treats the box edge as outside.)
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Mutant:
    id: str
    path: str  # relative to the repository root
    search: str
    replace: str
    why: str  # the plausible bug it stands for


#: Test files run for a mutant of each module (missing files are skipped, so the same list works on an
#: older checkout that lacks some of them).
TESTS: dict[str, tuple[str, ...]] = {
    "ctseg_lib/surface.py": ("tests/test_metrics.py", "tests/test_monai_agreement.py", "tests/test_mutant_killers.py"),
    "ctseg_lib/metrics.py": ("tests/test_metrics.py", "tests/test_monai_agreement.py", "tests/test_mutant_killers.py"),
    "ctseg_lib/data/nifti.py": ("tests/test_nifti.py", "tests/test_msd.py", "tests/test_bad_inputs.py",
                                "tests/test_mutant_killers.py", "tests/test_untested_paths.py"),
    "ctseg_lib/preprocessing.py": ("tests/test_preprocessing.py", "tests/test_mutant_killers.py"),
    "ctseg_lib/losses.py": ("tests/test_losses.py", "tests/test_mutant_killers.py"),
    "ctseg_lib/lesion_synth.py": ("tests/test_lesion_synth.py",),
    "ctseg_lib/lesion_paste.py": ("tests/test_lesion_paste.py", "tests/test_lesion_synth.py"),
    "ctseg_lib/training.py": ("tests/test_training.py",),
    "ctseg_lib/models/dot_filter.py": ("tests/test_dot_filter.py",),
    "ctseg_lib/pretrained.py": ("tests/test_pretrained.py",),
    "ctseg_lib/notebook.py": ("tests/test_pretrained.py",),
    "tools/ship_weights.py": ("tests/test_pretrained.py",),
}

S, M, N, P, L = ("ctseg_lib/surface.py", "ctseg_lib/metrics.py", "ctseg_lib/data/nifti.py",
                 "ctseg_lib/preprocessing.py", "ctseg_lib/losses.py")
Y, T, D = "ctseg_lib/lesion_synth.py", "ctseg_lib/training.py", "ctseg_lib/models/dot_filter.py"
W, WN, WS = "ctseg_lib/pretrained.py", "ctseg_lib/notebook.py", "tools/ship_weights.py"

MUTANTS: list[Mutant] = [
    # -- surface distances -----------------------------------------------------------------------------------
    Mutant("surface-26-connectivity", S, "generate_binary_structure(mask.ndim, 1)",
           "generate_binary_structure(mask.ndim, 3)", "surface voxels with 26- instead of 6-connectivity"),
    Mutant("surface-edge-inside", S, "border_value=0)", "border_value=1)",
           "the volume edge counts as inside (masks touching the border lose their surface there)"),
    Mutant("hd95-pooled", S, "return float(max(np.percentile(d_pg, 95), np.percentile(d_gp, 95)))",
           "return float(np.percentile(np.concatenate([d_pg, d_gp]), 95))",
           "HD95 = 95th percentile of the pooled distances of both directions (medpy-style)"),
    Mutant("hd95-min", S, "return float(max(np.percentile(d_pg, 95), np.percentile(d_gp, 95)))",
           "return float(min(np.percentile(d_pg, 95), np.percentile(d_gp, 95)))", "HD95 takes the smaller direction"),
    Mutant("hd95-one-direction", S, "return float(max(np.percentile(d_pg, 95), np.percentile(d_gp, 95)))",
           "return float(np.percentile(d_pg, 95))", "HD95 from pred→gt only (directed Hausdorff)"),
    Mutant("hd95-nearest-percentile", S, "max(np.percentile(d_pg, 95), np.percentile(d_gp, 95))",
           "max(np.percentile(d_pg, 95, method='lower'), np.percentile(d_gp, 95, method='lower'))",
           "percentile without linear interpolation (torch.quantile/MONAI interpolate)"),
    Mutant("nsd-strict-tolerance", S, "np.count_nonzero(d_pg <= tolerance_mm) + np.count_nonzero(d_gp <= tolerance_mm)",
           "np.count_nonzero(d_pg < tolerance_mm) + np.count_nonzero(d_gp < tolerance_mm)",
           "NSD counts distances strictly below τ"),
    Mutant("nsd-one-direction", S, "return float(ok / (d_pg.size + d_gp.size))",
           "return float(np.count_nonzero(d_pg <= tolerance_mm) / d_pg.size)", "NSD from one direction only"),
    Mutant("kdtree-ignores-spacing", S, "a, b = np.argwhere(sp) * sampling, np.argwhere(sg) * sampling",
           "a, b = np.argwhere(sp) * 1.0, np.argwhere(sg) * 1.0", "distances in voxels, not mm"),
    Mutant("edt-swapped", S, "return d_to_gt[sp], d_to_pred[sg]", "return d_to_pred[sp], d_to_gt[sg]",
           "EDT read through the wrong surface"),
    Mutant("hd95-both-empty-nan", S, "    if pe and ge:\n        return 0.0",
           "    if pe and ge:\n        return float('nan')",
           "HD95 of two empty masks NaN instead of 0"),
    Mutant("nsd-one-empty-one", S, "    if pe or ge:\n        return 0.0", "    if pe or ge:\n        return 1.0",
           "NSD of one empty mask 1 instead of 0"),
    # -- overlap metrics and aggregation -------------------------------------------------------------------
    Mutant("dice-formula", M, "return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)",
           "return 1.0 if tp + fp + fn == 0 else 2 * tp / (tp + fp + fn)", "Dice denominator without 2·TP"),
    Mutant("vol-rel-over-pred", M, "(NAN if vg == 0 else (vp - vg) / vg)", "(NAN if vp == 0 else (vp - vg) / vp)",
           "relative volume error divided by the predicted volume"),
    Mutant("vol-ml-factor", M, "voxel_ml = float(np.prod(np.asarray(spacing, dtype=np.float64))) / 1000.0",
           "voxel_ml = float(np.prod(np.asarray(spacing, dtype=np.float64))) / 100.0", "mm³ → mL off by 10"),
    Mutant("row-precision-is-recall", M, '"precision": NAN if tp + fp == 0 else tp / (tp + fp),',
           '"precision": NAN if tp + fp == 0 else tp / (tp + fn),', "precision computed with FN"),
    Mutant("dice-global-is-mean", M, 'agg["dice_global"] = ', 'agg["dice_global"] = agg["dice_mean"] if True else ',
           "global Dice = mean of case Dice"),
    Mutant("nanmean-counts-nan-as-zero", M,
           "vals = [float(x) for x in xs if x is not None and not math.isnan(float(x))]",
           "vals = [0.0 if math.isnan(float(x)) else float(x) for x in xs if x is not None]",
           "aggregation counts undefined (NaN) cases as 0"),
    Mutant("row-iou-formula", M, '"iou": 1.0 if tp + fp + fn == 0 else tp / (tp + fp + fn),',
           '"iou": 1.0 if tp + fp + fn == 0 else tp / (tp + fp),', "IoU in the evaluation rows over |P| only"),
    # -- NIfTI ---------------------------------------------------------------------------------------------
    Mutant("spacing-affine-rows", N, "zooms = np.sqrt((canon.affine[:3, :3] ** 2).sum(axis=0))",
           "zooms = np.sqrt((canon.affine[:3, :3] ** 2).sum(axis=1))", "voxel spacing from the affine's rows"),
    Mutant("spacing-header-zooms", N, "zooms = np.sqrt((canon.affine[:3, :3] ** 2).sum(axis=0))",
           "zooms = np.asarray(img.header.get_zooms()[:3], dtype=np.float64)",
           "spacing from the header zooms in file order (wrong for permuted files)"),
    Mutant("no-canonical", N, "canon = nib.as_closest_canonical(img)", "canon = img",
           "no reorientation to RAS+ (LPS scans mirrored)"),
    Mutant("to-original-inverted", N, "back = nib.orientations.ornt_transform(ras, orig)",
           "back = nib.orientations.ornt_transform(orig, ras)", "to_original applies the forward transform"),
    Mutant("labels-not-integer-checked", N, "if not np.array_equal(rounded, data):", "if False:",
           "fractional label values silently rounded"),
    Mutant("pixdim-fixed-silently", N, "zooms = np.where(raw <= 0, raw, zooms)", "zooms = zooms",
           "trust nibabel's silent fix of pixdim 0 / negative"),
    Mutant("check-header-steps-rows", N, "steps = np.sqrt((aff[:3, :3] ** 2).sum(axis=0))",
           "steps = np.sqrt((aff[:3, :3] ** 2).sum(axis=1))", "header sanity check on the affine's rows"),
    Mutant("label-uint8-overflow", N, "np.uint8 if hi < 256 else np.int16", "np.uint8 if hi <= 256 else np.int16",
           "label value 256 stored as uint8 (wraps to 0)"),
    Mutant("no-4d-squeeze", N, "if len(shape) == 4 and shape[3] == 1:", "if len(shape) == 4 and shape[3] == 0:",
           "(X, Y, Z, 1) files refused as 4D"),
    # -- preprocessing ---------------------------------------------------------------------------------------
    Mutant("window-full-width", P, "np.float32(level - width / 2)", "np.float32(level - width)",
           "window starts a full width below the level"),
    Mutant("window-no-clip", P, "return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)",
           "return out.astype(np.float32, copy=False)", "window not clipped to [0, 1]"),
    Mutant("label-index-corner", P, "((np.arange(n_out) + 0.5) * (n_in / n_out))",
           "(np.arange(n_out) * (n_in / n_out))",
           "nearest-neighbour labels on corner- instead of centre-aligned grids"),
    Mutant("image-align-corners", P, "mode=mode, align_corners=False)", "mode=mode, align_corners=True)",
           "linear image resize with align_corners=True (grid shifted against the labels)"),
    Mutant("target-shape-floor", P, "int(round(n * s / t))", "int(n * s / t)", "target shape floored"),
    Mutant("normalizer-percentiles", P, "np.percentile(values, [0.5, 99.5])", "np.percentile(values, [5, 95])",
           "nnU-Net clip percentiles 5/95 instead of 0.5/99.5"),
    Mutant("normalizer-stats-after-clip", P, "float(values.mean()), float(values.std()))",
           "float(np.clip(values, lo, hi).mean()), float(np.clip(values, lo, hi).std()))",
           "mean/std of the clipped values (nnU-Net takes them before clipping)"),
    Mutant("normalizer-no-std", P, "return (out - np.float32(self.mean)) / np.float32(max(self.std, 1e-8))",
           "return out - np.float32(self.mean)", "z-score without dividing by the std"),
    Mutant("preprocessed-spacing-inverted", P, "spacing = tuple(float(s * c / o)", "spacing = tuple(float(s * o / c)",
           "spacing of the resampled grid inverted"),
    Mutant("restore-background-prob-zero", P, "out[0] = 1.0  # background outside the crop",
           "out[0] = 0.0  # background outside the crop", "restored probabilities: background 0 outside the crop"),
    Mutant("bbox-pad-ignores-stride", P, "pad = margin + step - 1", "pad = margin",
           "subsampled body box not widened by the stride"),
    # -- losses ------------------------------------------------------------------------------------------------
    Mutant("ds-targets-averaged", L, 'size=out.shape[2:], mode="nearest")', 'size=out.shape[2:], mode="area")',
           "deep-supervision targets downsampled by averaging instead of nearest"),
    Mutant("ds-weights-not-normalised", L, "(wi / total_w) * self.loss(out, ti[:, 0].long())",
           "wi * self.loss(out, ti[:, 0].long())", "deep-supervision weights not normalised"),
    Mutant("dice-no-smooth-numerator", L, "dc = (2 * tp + self.smooth) / (denom + self.smooth).clamp_min(1e-8)",
           "dc = (2 * tp) / (denom + self.smooth).clamp_min(1e-8)", "ε only in the denominator"),
    Mutant("dice-background-slice-batch", L, "            dc = dc[..., 1:]\n", "            dc = dc[1:]\n",
           "background dropped along the batch axis"),
    Mutant("batch-dice-ignored", L, "axes = [0, *range(2, probs.dim())] if batch else list(range(2, probs.dim()))",
           "axes = list(range(2, probs.dim()))", "batch_dice does not pool over the batch"),
    Mutant("focal-alpha-background", L, "a[0] = 1 - float(self.alpha)", "a[0] = float(self.alpha)",
           "focal α given to the background too"),
    Mutant("tversky-swapped", L, "tp + self.alpha * fp + self.beta * fn", "tp + self.beta * fp + self.alpha * fn",
           "Tversky α/β swapped"),
    Mutant("ce-weight-ignored", L, "F.cross_entropy(logits, _prepare(logits, target), weight=w)",
           "F.cross_entropy(logits, _prepare(logits, target))", "class weights silently ignored"),
    # -- lesion synthesis ------------------------------------------------------------------------------------
    Mutant("synth-ramp-in-mm", Y, "out += np.clip((1 - rho) * r_dir / pix + 0.5, 0, 1)",
           "out += np.clip((1 - rho) * r_dir + 0.5, 0, 1)", "partial-volume edge in mm instead of voxels"),
    Mutant("synth-z-ignored", Y, "w2 = ((dz_mm + t * sz) / c) ** 2", "w2 = ((t * sz) / c) ** 2",
           "every 2.5D channel gets the centre slice's cross-section"),
    Mutant("synth-no-contrast-rule", Y, "or abs(float(x[context][core].mean()) - stats.mean) < contrast",
           "or False", "a lesion may be drawn onto tissue as bright as itself (a label on nothing visible)"),
    Mutant("ring-label-ignored", "ctseg_lib/lesion_paste.py",
           "np.bincount(y[ring].astype(np.int64)).argmax() != ring_label", "False",
           "a liver tumour may be pasted or drawn outside the liver (placement rule of copy-paste and synthesis)"),
    Mutant("synth-diameter-as-radius", Y, "r = 0.5 * float(np.exp(", "r = float(np.exp(",
           "the drawn diameter used as the radius (lesions twice as large)"),
    # -- the course project's pitfalls, kept to measure them (chapter 10) -----------------------------------------
    Mutant("label-resize-rounds", P, "is_label=False).astype(np.uint8)", "is_label=False).round().astype(np.uint8)",
           "the linear_uint8 pitfall rounds instead of truncating (it would hide the mistake it is kept to measure)"),
    Mutant("label-resize-ignored", P, "tuple(out_shape), params.label_resize)", "tuple(out_shape))",
           "preprocess_case ignores label_resize (the pitfall run would train on correct masks)"),
    Mutant("merge-keeps-tumour", T, "case.label = (case.label > 0).astype(np.uint8)",
           "case.label = (case.label == 1).astype(np.uint8)",
           "merging drops the tumour instead of adding it to the liver"),
    Mutant("synth-stats-ring-includes-lesion", Y, "& (lab != cl)", "", "the ring statistics include the lesion itself"),
    # -- dot filter (Hessian blob channel) ------------------------------------------------------------------
    Mutant("dot-ratio-swapped", D, "small**2 / (-big).clamp_min(1e-6)", "big**2 / (-small).clamp_min(1e-6)",
           "Li's ratio upside down (the largest curvature over the smallest): tubes answer like blobs"),
    Mutant("dot-any-negative", D, "torch.where(small < 0,", "torch.where(big < 0,",
           "the response kept where any eigenvalue is negative, not all three (tubes and sheets pass)"),
    Mutant("dot-no-scale-norm", D, "h = h * (self.sigmas[i] ** 2)", "h = h",
           "derivatives not scale-normalised: the smallest radius always wins and the response depends on mm"),
    Mutant("dot-eig-wrong-root", D, "q + 2 * p * torch.cos(phi + 2 * math.pi / 3), q + 2 * p * torch.cos(phi)",
           "q + 2 * p * torch.cos(phi + 4 * math.pi / 3), q + 2 * p * torch.cos(phi)",
           "closed-form eigenvalues: the middle root taken for the smallest"),
    # -- shipped weights -------------------------------------------------------------------------------------
    Mutant("weights-recipe-unchecked", W, 'if k != "name" and a.get(k) != b.get(k)]',
           'if k != "name" and a.get(k) != a.get(k)]',
           "shipped weights of another recipe accepted (the checkpoint's config compared with itself)"),
    Mutant("weights-name-compared", W, 'if k != "name" and a.get(k) != b.get(k)]', 'if a.get(k) != b.get(k)]',
           "the run's name counts as a recipe difference (every command-line run refused)"),
    Mutant("weights-run-unchecked", WN, "ckpt, path = pretrained_checkpoint(preset)",
           "from .pretrained import load_checkpoint, pretrained_path; path = pretrained_path(preset); "
           "ckpt = load_checkpoint(path)",
           "a chapter's shipped network read without the recipe check that load_pretrained makes"),
    Mutant("weights-history-cut", WS, "            return run\n", "            return own\n",
           "shipped weights keep only the history up to the saved epoch: the epochs after it, their mining "
           "rounds and training time are lost"),
]

_IGNORE = shutil.ignore_patterns(".git", ".venv", "_build", "_data", "__pycache__", ".pytest_cache",
                                 ".hypothesis", ".ruff_cache", "*.egg-info")


def apply(text: str, m: Mutant) -> str:
    """``text`` with ``m`` planted; ValueError unless ``m.search`` occurs exactly once."""
    n = text.count(m.search)
    if n != 1:
        raise ValueError(f"mutant {m.id}: search text occurs {n} times in {m.path} (must be exactly once)")
    return text.replace(m.search, m.replace)


def run_one(work: Path, m: Mutant, timeout: float) -> tuple[str, float, str]:
    """Plant ``m`` in ``work``, run its tests, restore.  Returns ``(status, seconds, last line)``."""
    target = work / m.path
    original = target.read_text(encoding="utf-8")
    tests = [t for t in TESTS[m.path] if (work / t).is_file()]
    target.write_text(apply(original, m), encoding="utf-8")
    t0 = time.perf_counter()
    try:
        env = {**os.environ, "PYTHONPATH": str(work), "PYTHONDONTWRITEBYTECODE": "1"}
        r = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                           cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
        lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
        status = "survived" if r.returncode == 0 else "killed"
        last = lines[-1] if lines else ""
    except subprocess.TimeoutExpired:
        status, last = "killed", f"timeout after {timeout:.0f} s"
    finally:
        target.write_text(original, encoding="utf-8")
    return status, time.perf_counter() - t0, last


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=REPO, help="repository to mutate (copied; never modified)")
    ap.add_argument("--only", default="", help="run only mutants whose id contains one of these (comma-separated)")
    ap.add_argument("--timeout", type=float, default=180.0, help="seconds per mutant (a timeout counts as killed)")
    ap.add_argument("--list", action="store_true", help="print the mutants and exit")
    args = ap.parse_args(argv)
    wanted = [w for w in args.only.split(",") if w] or [""]
    mutants = [m for m in MUTANTS if any(w in m.id for w in wanted)]
    if not mutants:
        print(f"mutate: no mutant id contains any of {wanted}", file=sys.stderr)
        return 2
    if args.list:
        for m in mutants:
            print(f"{m.id:32s} {m.path:28s} {m.why}")
        return 0
    root = args.root.resolve()
    with tempfile.TemporaryDirectory(prefix="ctseg-mutate-") as tmp:
        work = Path(tmp) / "repo"
        shutil.copytree(root, work, ignore=_IGNORE, symlinks=True)
        for m in mutants:  # fail fast on a rotten list, before spending minutes
            apply((work / m.path).read_text(encoding="utf-8"), m)
        # the unmutated copy must pass, else every mutant would count as killed
        base = {t for m in mutants for t in TESTS[m.path] if (work / t).is_file()}
        env = {**os.environ, "PYTHONPATH": str(work), "PYTHONDONTWRITEBYTECODE": "1"}
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *sorted(base)],
                           cwd=work, env=env, capture_output=True, text=True, timeout=args.timeout * 3)
        if r.returncode != 0:
            print((r.stdout + r.stderr)[-3000:])
            print("mutate: the unmutated tests fail; fix them first", file=sys.stderr)
            return 2
        survived = []
        for i, m in enumerate(mutants, 1):
            status, secs, last = run_one(work, m, args.timeout)
            print(f"[{i:2d}/{len(mutants)}] {status:8s} {secs:5.1f}s  {m.id}  ({m.why})", flush=True)
            if status == "survived":
                survived.append(m)
    killed = len(mutants) - len(survived)
    print(f"\nmutation score: {killed}/{len(mutants)} killed = {killed / max(len(mutants), 1):.0%}")
    for m in survived:
        print(f"  survived: {m.id} [{m.path}] {m.why}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
