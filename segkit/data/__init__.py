"""Datasets and the Lightning datamodules that feed them."""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # type checkers and IDEs see the lazily imported names (see __getattr__)
    from segkit.data.datamodule import ClassificationDataModule, ImageDataModule, SegmentationDataModule
    from segkit.data.folder import FolderDataset, MaskEncoding
    from segkit.data.image_folder import ImageFolderDataset
    from segkit.data.synthetic import SyntheticShapeClasses, SyntheticShapes

# each name and the module that defines it
_MODULES = {
    "ClassificationDataModule": "datamodule",
    "FolderDataset": "folder",
    "ImageDataModule": "datamodule",
    "ImageFolderDataset": "image_folder",
    "MaskEncoding": "folder",
    "SegmentationDataModule": "datamodule",
    "SyntheticShapeClasses": "synthetic",
    "SyntheticShapes": "synthetic",
}
__all__ = [
    "ClassificationDataModule",
    "FolderDataset",
    "ImageDataModule",
    "ImageFolderDataset",
    "MaskEncoding",
    "SegmentationDataModule",
    "SyntheticShapeClasses",
    "SyntheticShapes",
]


def __getattr__(name: str):
    """Import each name's module on first use, not with the package.

    ``python -m segkit.data.synthetic`` needs numpy and torch only; importing the datamodules (Lightning,
    albumentations, OpenCV) with the package cost it 3 s. And a command module imported eagerly here makes
    runpy warn that it was already imported before it ran as ``__main__``.
    """
    if name in _MODULES:
        return getattr(importlib.import_module(f"{__name__}.{_MODULES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
