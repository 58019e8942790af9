"""Class weights from the training masks, for losses on imbalanced data (CamVid's poles and cyclists).

Median-frequency balancing (Eigen & Fergus 2015, used by SegNet): ``freq_c`` = pixels of class c divided by
the pixels of the images where c occurs; ``weight_c = median(freq) / freq_c``. Frequent classes get weights
below 1, rare ones above. A class that never occurs gets weight 0 (there is nothing to weigh).

On CamVid the full weights (building 0.20, bicyclist 8.8) trade too much of the large classes for the small
ones; their square root (``power=0.5``) keeps most of the gain on the small classes without that loss.
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset, Subset

from segkit.data.folder import FolderDataset
from segkit.data.io import read_mask

POWER_BY_NAME = {"median_frequency": 1.0, "sqrt_median_frequency": 0.5}
"""The names ``task.loss.class_weights`` accepts, and the power each takes of the median-frequency weights."""


def class_pixel_counts(dataset: Dataset, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Per class: its pixel count, and the pixel count of the images it occurs in (ignored pixels excluded).

    Reads the stored masks of a :class:`FolderDataset` (or a ``Subset`` of one) without augmentation.
    """
    indices = list(dataset.indices) if isinstance(dataset, Subset) else None
    base = dataset.dataset if isinstance(dataset, Subset) else dataset
    if not isinstance(base, FolderDataset):
        raise TypeError(f"class weights are computed from folder datasets, got {type(base).__name__}")
    pixels, image_pixels = np.zeros(num_classes, np.int64), np.zeros(num_classes, np.int64)
    for index in indices if indices is not None else range(len(base)):
        _, _, mask_path = base.samples[index]
        mask = base.encoding(read_mask(mask_path), mask_path)
        counts = np.bincount(mask[mask < num_classes].ravel(), minlength=num_classes)[:num_classes]
        pixels += counts
        image_pixels += np.where(counts > 0, counts.sum(), 0)
    return pixels, image_pixels


def median_frequency_weights(dataset: Dataset, num_classes: int, power: float = 1.0) -> list[float]:
    """``(median(freq) / freq_c) ** power`` per class (0 for classes that never occur)."""
    pixels, image_pixels = class_pixel_counts(dataset, num_classes)
    present = image_pixels > 0
    freq = np.zeros(num_classes)
    freq[present] = pixels[present] / image_pixels[present]
    median = np.median(freq[present])
    return [float((median / f) ** power) if f > 0 else 0.0 for f in freq]
