"""Segmentation scores from a confusion matrix (rows = target, columns = prediction), checkable by hand.

A class that appears in neither target nor prediction has no defined IoU/Dice: it gets NaN and is left
out of the means (``nanmean``), instead of counting as 0 or 1.
"""

from __future__ import annotations

import torch

LOWER_IS_BETTER = ("loss", "error", "hd95")


def metric_mode(name: str) -> str:
    """``"min"`` for a metric where lower is better (``*loss*``, ``*error*``, ``*hd95*``), else ``"max"``.

    The monitored checkpoint, early stopping and sweeps all read the direction from here (the config's
    ``${metric_mode:${optimized_metric}}``), so one key, ``optimized_metric``, decides what "best" means.
    """
    leaf = str(name).rsplit("/", 1)[-1]
    return "min" if any(word in leaf for word in LOWER_IS_BETTER) else "max"


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


def precision_per_class(confmat: torch.Tensor) -> torch.Tensor:
    """Precision_k = TP / (TP + FP): of the pixels predicted k, the share that is k; NaN if none is predicted k."""
    confmat = confmat.double()
    tp, predicted = confmat.diag(), confmat.sum(0)
    return torch.where(predicted > 0, tp / predicted.clamp_min(1), torch.full_like(tp, float("nan")))


def recall_per_class(confmat: torch.Tensor) -> torch.Tensor:
    """Recall_k = TP / (TP + FN): of the pixels that are k, the share predicted k; NaN if the class is absent."""
    confmat = confmat.double()
    tp, actual = confmat.diag(), confmat.sum(1)
    return torch.where(actual > 0, tp / actual.clamp_min(1), torch.full_like(tp, float("nan")))


def pixel_accuracy(confmat: torch.Tensor) -> torch.Tensor:
    """Share of (non-ignored) pixels whose predicted class is right."""
    confmat = confmat.double()
    return confmat.diag().sum() / confmat.sum().clamp_min(1)


def segmentation_scores(confmat: torch.Tensor, class_names: list[str], prefix: str) -> dict[str, float]:
    """All scores as ``{f"{prefix}/miou": ..., f"{prefix}/iou_<name>": ..., ...}`` for logging.

    Means (``miou``, ``dice``) over the classes with a defined score; per class: ``iou``, ``dice``,
    ``precision`` and ``recall``; pooled: ``acc`` and ``pixel_error = 1 - acc``.
    """
    iou, dice = iou_per_class(confmat), dice_per_class(confmat)
    acc = pixel_accuracy(confmat)
    scores = {
        f"{prefix}/miou": iou.nanmean().item(),
        f"{prefix}/dice": dice.nanmean().item(),
        f"{prefix}/acc": acc.item(),
        f"{prefix}/pixel_error": 1.0 - acc.item(),
    }
    per_class = {
        "iou": iou,
        "dice": dice,
        "precision": precision_per_class(confmat),
        "recall": recall_per_class(confmat),
    }
    for metric, values in per_class.items():
        for name, value in zip(class_names, values.tolist(), strict=True):
            scores[f"{prefix}/{metric}_{name}"] = value
    return scores
