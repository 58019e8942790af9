"""Datasets and the Lightning datamodule that feeds them."""

from segkit.data.datamodule import SegmentationDataModule
from segkit.data.folder import FolderDataset, MaskEncoding
from segkit.data.synthetic import SyntheticShapes

__all__ = ["FolderDataset", "MaskEncoding", "SegmentationDataModule", "SyntheticShapes"]
