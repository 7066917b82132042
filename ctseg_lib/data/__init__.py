"""Reading CT data: NIfTI volumes, MSD datasets, synthetic phantoms, the MSD downloader, the real CT samples."""

from .msd import Case, MSDDataset
from .nifti import Volume, axial_display, from_canonical, load_nifti, save_nifti
from .samples import RealSample, list_samples, load_sample, sample_dir

__all__ = ["Case", "MSDDataset", "Volume", "axial_display", "from_canonical", "load_nifti", "save_nifti",
           "RealSample", "list_samples", "load_sample", "sample_dir"]
