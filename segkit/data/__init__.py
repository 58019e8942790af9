"""Datasets and the Lightning datamodules that feed them."""

from typing import TYPE_CHECKING

from segkit.data.datamodule import ClassificationDataModule, ImageDataModule, SegmentationDataModule
from segkit.data.folder import FolderDataset, MaskEncoding
from segkit.data.image_folder import ImageFolderDataset

if TYPE_CHECKING:  # type checkers and IDEs see the lazily imported names (see __getattr__)
    from segkit.data.synthetic import SyntheticShapeClasses, SyntheticShapes

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
    """Import the synthetic datasets on first use, not with the package.

    ``segkit.data.synthetic`` is also a command (``python -m segkit.data.synthetic``); importing it here eagerly
    makes runpy warn that the module was already imported before it ran as ``__main__``.
    """
    if name in ("SyntheticShapes", "SyntheticShapeClasses"):
        from segkit.data import synthetic

        return getattr(synthetic, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
