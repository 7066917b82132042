"""Segmentation networks: :class:`UNet` (2D/2.5D/3D), the course project's :class:`OriginalProjectUNet`, and
:class:`Ensemble` (the mean softmax of several trained networks), and :class:`DotFilter` (a fixed 3D blob-response
input channel for 2.5D networks)."""

from .dot_filter import DotFilter
from .ensemble import Ensemble
from .original import OriginalProjectUNet
from .unet import UNet, count_parameters, pad_to_divisor, receptive_field, shape_walkthrough

__all__ = ["UNet", "OriginalProjectUNet", "Ensemble", "DotFilter", "count_parameters", "pad_to_divisor",
           "receptive_field", "shape_walkthrough"]
