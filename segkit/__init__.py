"""segkit: U-Net image segmentation on PyTorch Lightning, Hydra and albumentations."""

__version__ = "0.1.0"
