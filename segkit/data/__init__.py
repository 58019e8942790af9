"""Datasets and the Lightning datamodules that feed them."""

from segkit.data.datamodule import ClassificationDataModule, ImageDataModule, SegmentationDataModule
from segkit.data.folder import FolderDataset, MaskEncoding
from segkit.data.image_folder import ImageFolderDataset
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
