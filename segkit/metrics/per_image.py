"""Scores computed per image and averaged over images: adapted Rand error (cell topology) and 95 % Hausdorff
distance (boundary placement).

Unlike the confusion-matrix scores these cannot be pooled over pixels, so :class:`ImageMetricMean` keeps a
sum and a count as torchmetrics states: under DDP both are summed over processes before the division, so the
mean over N images is exact whatever the split of images over ranks. They run at validation and test only.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage
from torchmetrics import Metric

IMAGE_METRICS = ("adapted_rand_error", "hd95")


def adapted_rand_error(true_boundary: np.ndarray, pred_boundary: np.ndarray) -> float:
    """ISBI 2012's adapted Rand error between the cells of two boundary maps (0 = identical segmentations).

    Cells are the 4-connected components of the non-boundary pixels, numbered by ``skimage.measure.label``;
    the score is ``skimage.metrics.adapted_rand_error(true_cells, pred_cells)[0]``, which leaves true
    boundary pixels (label 0) out.

    Args:
        true_boundary, pred_boundary: ``(H, W)`` bool maps, True on boundary (membrane) pixels.
    """
    from skimage.measure import label
    from skimage.metrics import adapted_rand_error as skimage_are

    true_cells = label(~true_boundary, connectivity=1)
    pred_cells = label(~pred_boundary, connectivity=1)
    return float(skimage_are(true_cells, pred_cells)[0])


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(2, 1))


def hausdorff95(true_mask: np.ndarray, pred_mask: np.ndarray) -> float:
    """95th-percentile symmetric Hausdorff distance, in pixels, between the boundaries of two binary masks.

    Each direction takes the 95th percentile of the distances from one boundary's pixels to the other
    boundary; the score is the larger of the two (MONAI's and the Medical Segmentation Decathlon's
    definition). 0 when both masks are empty. When only one is (a missed or an invented object) no distance
    exists; the score is then the image diagonal, the largest distance possible in the image, so a model
    that misses objects is penalised in the mean rather than excused from it.
    """
    true_mask, pred_mask = true_mask.astype(bool), pred_mask.astype(bool)
    if not true_mask.any() and not pred_mask.any():
        return 0.0
    if not true_mask.any() or not pred_mask.any():
        return float(np.hypot(*true_mask.shape))
    true_surface, pred_surface = _surface(true_mask), _surface(pred_mask)
    to_true = ndimage.distance_transform_edt(~true_surface)
    to_pred = ndimage.distance_transform_edt(~pred_surface)
    return float(max(np.percentile(to_true[pred_surface], 95), np.percentile(to_pred[true_surface], 95)))


class ImageMetricMean(Metric):
    """Mean over images of a per-image score of class maps; NaN scores are left out of the mean.

    Args:
        name: ``"adapted_rand_error"`` (``foreground_class`` = boundary class) or ``"hd95"`` (of
            ``foreground_class``).
        foreground_class: the class index the score is about.
        ignore_index: target value of unlabelled pixels: counted as boundary for the Rand error (where true
            boundaries are left out) and as background for HD95.
    """

    full_state_update = False

    def __init__(self, name: str, foreground_class: int = 1, ignore_index: int = 255) -> None:
        super().__init__()
        if name not in IMAGE_METRICS:
            raise ValueError(f"image metric must be one of {IMAGE_METRICS}, got {name!r}")
        self.score = adapted_rand_error if name == "adapted_rand_error" else hausdorff95
        self.foreground_class, self.ignore_index, self.is_rand = foreground_class, ignore_index, name != "hd95"
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def image_score(self, pred: np.ndarray, target: np.ndarray) -> float:
        """The score of one image, class maps ``(H, W)``; NaN where it is undefined."""
        ignored = target == self.ignore_index
        true_fg, pred_fg = target == self.foreground_class, pred == self.foreground_class
        if self.is_rand:
            return self.score(true_fg | ignored, pred_fg | ignored)
        return self.score(true_fg & ~ignored, pred_fg & ~ignored)

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        """Score each image of ``pred`` and ``target``, class maps ``(B, H, W)``."""
        for p, t in zip(pred.cpu().numpy(), target.cpu().numpy(), strict=True):
            value = self.image_score(p, t)
            if not np.isnan(value):
                self.total += value
                self.count += 1

    def compute(self) -> torch.Tensor:
        """The mean, NaN when no image had a defined score."""
        return self.total / self.count if self.count > 0 else torch.tensor(float("nan"), dtype=torch.float64)
