"""ctseg_lib: CT segmentation with U-Net, the library behind the ctseg book."""
__version__ = "0.1.0"
