"""segkit: U-Net image segmentation on PyTorch Lightning, Hydra and albumentations."""

from segkit.model_io import LoadedModel, load_model

__version__ = "0.2.0"
__all__ = ["LoadedModel", "load_model"]
