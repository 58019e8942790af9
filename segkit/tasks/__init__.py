"""LightningModules: the training logic around an injected network."""

from segkit.tasks.classification import ClassificationTask
from segkit.tasks.segmentation import SegmentationTask

__all__ = ["ClassificationTask", "SegmentationTask"]
