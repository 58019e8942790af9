"""Segmentation scores from a confusion matrix (rows = target, columns = prediction), checkable by hand.

A class that appears in neither target nor prediction has no defined IoU/Dice: it gets NaN and is left
out of the means (``nanmean``), instead of counting as 0 or 1.
"""

from __future__ import annotations

import torch


def iou_per_class(confmat: torch.Tensor) -> torch.Tensor:
    """IoU_k = TP / (TP + FP + FN), NaN where the denominator is 0. Shape ``(K, K)`` -> ``(K,)``."""
    confmat = confmat.double()
    tp = confmat.diag()
    denom = confmat.sum(0) + confmat.sum(1) - tp
    return torch.where(denom > 0, tp / denom.clamp_min(1), torch.full_like(tp, float("nan")))


def dice_per_class(confmat: torch.Tensor) -> torch.Tensor:
    """Dice_k = 2 TP / (2 TP + FP + FN), NaN where the denominator is 0."""
    confmat = confmat.double()
    tp = confmat.diag()
    denom = confmat.sum(0) + confmat.sum(1)
    return torch.where(denom > 0, 2 * tp / denom.clamp_min(1), torch.full_like(tp, float("nan")))


def pixel_accuracy(confmat: torch.Tensor) -> torch.Tensor:
    """Share of (non-ignored) pixels whose predicted class is right."""
    confmat = confmat.double()
    return confmat.diag().sum() / confmat.sum().clamp_min(1)


def segmentation_scores(confmat: torch.Tensor, class_names: list[str], prefix: str) -> dict[str, float]:
    """All scores as ``{f"{prefix}/miou": ..., f"{prefix}/iou_<name>": ..., ...}`` for logging."""
    iou, dice = iou_per_class(confmat), dice_per_class(confmat)
    acc = pixel_accuracy(confmat)
    scores = {
        f"{prefix}/miou": iou.nanmean().item(),
        f"{prefix}/dice": dice.nanmean().item(),
        f"{prefix}/acc": acc.item(),
        f"{prefix}/pixel_error": 1.0 - acc.item(),
    }
    for name, value in zip(class_names, iou.tolist(), strict=True):
        scores[f"{prefix}/iou_{name}"] = value
    for name, value in zip(class_names, dice.tolist(), strict=True):
        scores[f"{prefix}/dice_{name}"] = value
    return scores
