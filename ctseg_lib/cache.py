"""A disk cache of preprocessed cases, memory-mapped for fast training.

Decoding a gzipped 512×512×500 NIfTI and resampling it takes seconds; doing that every epoch would
starve the GPU.  :class:`CaseCache` preprocesses each case once and stores::

    CACHE_DIR/<case_id>/<key>/image.npy   float32, stored (Z, X, Y) so an axial slice is contiguous
                               label.npy   uint8, same layout (absent for unlabelled cases)
                               meta.json   written last: its presence marks a complete entry

``key`` = sha256 of (source file fingerprints, ``PreprocessParams.to_dict()``, normaliser dict,
:data:`FORMAT_VERSION`), so changing any parameter, normaliser or source file never reuses a stale
entry; several parameter sets can live side by side.  Arrays are opened with ``mmap_mode="r"``: only
the slices a batch touches are read from disk, and the OS page cache shares them between
DataLoader workers.  Every file is written atomically (temp file + rename); an entry that fails to
load (truncated ``.npy``, bad JSON, shape mismatch) is rebuilt.

Source fingerprint: a full sha256 of the file bytes for files up to :data:`FULL_HASH_BYTES`; for
larger files, sha256 of (size, first MiB, last MiB).  Real MSD volumes are ``.nii.gz`` of 30-700 MB
and the last bytes of a gzip stream hold the CRC32 and length of the *whole* uncompressed data, so
any content change shows up in the tail, while a cache lookup stays ~1 ms instead of ~1 s of
hashing per case.  Modification times are not used, so copying a dataset does not invalidate it.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from .data.msd import Case, MSDDataset
from .data.nifti import load_nifti
from .errors import CTSegError
from .io import atomic_write, write_json_atomic
from .preprocessing import CTNormalizer, Preprocessed, PreprocessParams, preprocess_case

#: Bump when the on-disk layout or the preprocessing code changes meaning.
FORMAT_VERSION = 2  # 2: FOV padding (< -1024 HU) is air in windowing and normalisation
FULL_HASH_BYTES = 64 * 1024 * 1024
_CHUNK = 1024 * 1024


def file_fingerprint(path: str | Path) -> str:
    """sha256 hex digest identifying the content of ``path`` (see module docstring)."""
    path = Path(path)
    size = path.stat().st_size
    h = hashlib.sha256(f"{size}:".encode())
    with open(path, "rb") as f:
        if size <= FULL_HASH_BYTES:
            for chunk in iter(lambda: f.read(_CHUNK), b""):
                h.update(chunk)
        else:
            h.update(f.read(_CHUNK))
            f.seek(size - _CHUNK)
            h.update(f.read(_CHUNK))
    return h.hexdigest()


def _save_npy(path: Path, arr: np.ndarray) -> None:
    with atomic_write(path, "wb", suffix=".npy") as f:
        np.save(f, arr, allow_pickle=False)


class CaseCache:
    """Preprocess-once cache of MSD cases.

    Args:
        cache_dir: where entries live (must not be inside the source dataset; the CLI checks).
        params: the preprocessing recipe.
        normalizer: fitted :class:`CTNormalizer`, required when ``params`` use nnU-Net normalisation.
        dataset: the :class:`MSDDataset` cases come from (used to load + validate them); if None,
            one is opened from the case's image path (``<root>/imagesTr/x.nii.gz``).

    Attributes ``hits`` / ``misses`` count lookups (the CLI prints them).
    """

    def __init__(self, cache_dir: str | Path, params: PreprocessParams,
                 normalizer: CTNormalizer | None = None, dataset: MSDDataset | None = None) -> None:
        self.dir = Path(cache_dir)
        self.params = params
        self.normalizer = normalizer
        self.dataset = dataset
        self.hits = self.misses = 0
        if params.intensity_mode()[0] == "nnunet" and normalizer is None:
            raise CTSegError("normalization 'nnunet' needs a fitted CTNormalizer for the cache")

    def key(self, case: Case) -> str:
        """The cache key of ``case`` under this cache's parameters."""
        payload = {
            "image": file_fingerprint(case.image),
            "label": file_fingerprint(case.label) if case.label else None,
            "params": self.params.to_dict(),
            "normalizer": self.normalizer.to_dict() if self.normalizer else None,
            "version": FORMAT_VERSION,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]

    def entry_dir(self, case: Case) -> Path:
        return self.dir / case.id / self.key(case)

    def get(self, case: Case) -> Preprocessed:
        """The preprocessed case, from the cache if a valid entry exists, else built and stored."""
        entry = self.entry_dir(case)
        cached = self._load(entry, case)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        pre = self._build(case)
        self._store(entry, pre)
        loaded = self._load(entry, case)
        if loaded is None:  # pragma: no cover - we just wrote it
            raise CTSegError("cache entry unreadable right after writing it", entry)
        return loaded

    # -- internals -------------------------------------------------------------------------
    def _build(self, case: Case) -> Preprocessed:
        if case.label is None:  # an unlabelled (test) image: nothing to cross-check
            img, lab = load_nifti(case.image, "image"), None
        else:
            ds = self.dataset or MSDDataset(case.image.parent.parent)
            img, lab = ds.load_case(case.id)  # validates labels and the shared grid
        pre = preprocess_case(img, lab, self.params, self.normalizer)
        pre.case_id = case.id
        return pre

    def _store(self, entry: Path, pre: Preprocessed) -> None:
        entry.mkdir(parents=True, exist_ok=True)
        # np.moveaxis(a, 2, 0) of a slice-major view is contiguous: saved as (Z, X, Y) without a copy.
        _save_npy(entry / "image.npy", np.moveaxis(pre.image, 2, 0))
        if pre.label is not None:
            _save_npy(entry / "label.npy", np.moveaxis(pre.label, 2, 0))
        meta = dict(pre.meta, case_id=pre.case_id, has_label=pre.label is not None, format=FORMAT_VERSION)
        write_json_atomic(entry / "meta.json", meta)  # last: marks the entry complete

    def _load(self, entry: Path, case: Case) -> Preprocessed | None:
        """Open an entry (memory-mapped) or return None if it is missing or damaged."""
        meta_path = entry / "meta.json"
        if not meta_path.is_file():
            return None
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
            zxy = (meta["shape"][2], meta["shape"][0], meta["shape"][1])
            image = np.load(entry / "image.npy", mmap_mode="r", allow_pickle=False)
            label = None
            if meta["has_label"]:
                label = np.load(entry / "label.npy", mmap_mode="r", allow_pickle=False)
                if label.shape != zxy or label.dtype != np.uint8:
                    raise ValueError(f"label.npy is {label.shape} {label.dtype}, expected {zxy} uint8")
            if image.shape != zxy or image.dtype != np.float32:
                raise ValueError(f"image.npy is {image.shape} {image.dtype}, expected {zxy} float32")
        except (OSError, ValueError, KeyError, TypeError, IndexError, json.JSONDecodeError):
            # Truncated/corrupt entry (e.g. a killed external copy): drop the marker, rebuild.
            meta_path.unlink(missing_ok=True)
            return None
        return Preprocessed(
            image=np.moveaxis(image, 0, 2),
            label=None if label is None else np.moveaxis(label, 0, 2),
            spacing=tuple(meta["spacing"]),  # type: ignore[arg-type]
            meta=meta,
            case_id=case.id,
        )


def cache_size_bytes(cache_dir: str | Path) -> int:
    """Total size of the files under ``cache_dir`` (for reporting)."""
    return sum(f.stat().st_size for f in Path(cache_dir).rglob("*") if f.is_file() and not os.path.islink(f))
