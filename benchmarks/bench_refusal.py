"""How fast broken NIfTI files are refused (ctseg only; the timing claim the tests no longer assert).

    python benchmarks/bench_refusal.py

A header that claims a huge volume (a 400-byte file claiming 32767³ int16 voxels ≈ 70 TB, or a NIfTI-2
file claiming 100000³) must be refused from the header alone, before nibabel allocates anything.
``tests/test_bad_inputs.py`` checks that behaviour with an allocation bound (tracemalloc); it used to
assert wall-clock limits (< 1 s / < 2 s), which are flaky on a loaded machine, so the time is measured
here instead: median of ``--repeats`` refusals per file.  Expected: a few milliseconds each.
"""

from __future__ import annotations

import argparse
import gzip
import io
import statistics
import struct
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np


def _nii_bytes(two: bool = False) -> bytes:
    cls = nib.Nifti2Image if two else nib.Nifti1Image
    img = cls(np.zeros((8, 6, 4), np.int16), np.eye(4))
    bio = io.BytesIO()
    img.to_file_map({"image": nib.FileHolder(fileobj=bio), "header": nib.FileHolder(fileobj=bio)})
    return bio.getvalue()


def huge_headers() -> dict[str, bytes]:
    """``{file name: bytes}`` of files whose headers claim absurdly large volumes."""
    n1 = bytearray(_nii_bytes())
    struct.pack_into("<4h", n1, 40, 3, 32767, 32767, 32767)  # NIfTI-1 dim[0:4]
    n2 = bytearray(_nii_bytes(two=True))
    struct.pack_into("<4q", n2, 16, 3, 100000, 100000, 100000)  # NIfTI-2 dim[0:4] (int64)
    return {"huge1.nii": bytes(n1), "huge1.nii.gz": gzip.compress(bytes(n1), mtime=0),
            "huge2.nii.gz": gzip.compress(bytes(n2), mtime=0)}


def run(repeats: int = 20) -> dict[str, float]:
    """Median seconds to refuse each file with a CTSegError."""
    from ctseg_lib.data.nifti import load_nifti
    from ctseg_lib.errors import CTSegError

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, data in huge_headers().items():
            path = Path(tmp) / name
            path.write_bytes(data)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                try:
                    load_nifti(path)
                except CTSegError:
                    times.append(time.perf_counter() - t0)
                else:
                    raise AssertionError(f"{name} was not refused")
            out[name] = statistics.median(times)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    for name, secs in run(ap.parse_args().repeats).items():
        print(f"refuse {name:14s} {secs * 1000:7.2f} ms (median)")


if __name__ == "__main__":
    main()
