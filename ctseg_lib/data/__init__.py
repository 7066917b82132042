"""Reading CT data: NIfTI volumes, MSD datasets, synthetic phantoms, the MSD downloader."""

from .msd import Case, MSDDataset
from .nifti import Volume, axial_display, from_canonical, load_nifti, save_nifti

__all__ = ["Case", "MSDDataset", "Volume", "axial_display", "from_canonical", "load_nifti", "save_nifti"]
