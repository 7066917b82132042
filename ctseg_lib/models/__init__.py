"""Segmentation networks: :class:`UNet` (2D/2.5D/3D) and the course project's :class:`OriginalProjectUNet`."""

from .original import OriginalProjectUNet
from .unet import UNet, count_parameters, pad_to_divisor, receptive_field, shape_walkthrough

__all__ = ["UNet", "OriginalProjectUNet", "count_parameters", "pad_to_divisor", "receptive_field",
           "shape_walkthrough"]
