"""Segmentation losses on logits ``(B, K, H, W)`` and int64 targets ``(B, H, W)``, all honouring ``ignore_index``.

This module holds what torch and smp lack or get wrong for us: cross-entropy with class weights from config
(lists, not tensors), soft Dice (batch or per sample, with or without background), Dice + CE as nnU-Net
builds it, per-class BCE, and the U-Net paper's cross-entropy weighted by a per-pixel map. Focal, Tversky and
Lovász come from ``segmentation_models_pytorch.losses`` (``conf/loss/{focal,tversky,lovasz}.yaml``): they mask
``ignore_index`` correctly, which the tests check.
One-channel (binary mode) logits are read as two classes (:mod:`segkit.metrics.binary`), so BCE is ``loss=ce`` on them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segkit.metrics.binary import two_class_logits


def _one_hot_valid(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One-hot targets ``(B, K, H, W)`` and the valid-pixel mask ``(B, 1, H, W)``."""
    valid = target != ignore_index
    safe = torch.where(valid, target, torch.zeros_like(target))
    one_hot = F.one_hot(safe, logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype)
    return one_hot, valid.unsqueeze(1).to(logits.dtype)


class CrossEntropyLoss(nn.CrossEntropyLoss):
    """``torch.nn.CrossEntropyLoss`` with class weights given as a plain list (Hydra configs cannot make tensors).

    Args:
        ignore_index: target value left out of the loss.
        class_weights: one weight per class (e.g. median-frequency balancing), or ``None``.
        label_smoothing: share of the target mass spread uniformly over the classes.
    """

    def __init__(
        self, ignore_index: int = 255, class_weights: Sequence[float] | None = None, label_smoothing: float = 0.0
    ) -> None:
        if isinstance(class_weights, str):
            raise ValueError(
                f"class_weights={class_weights!r}: give one number per class, or median_frequency / "
                "sqrt_median_frequency through segkit.train (which computes the weights from the training masks "
                "before building the loss)"
            )
        weight = torch.tensor(list(class_weights), dtype=torch.float32) if class_weights is not None else None
        super().__init__(weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Return the scalar loss (a weighted mean over the non-ignored pixels)."""
        return super().forward(two_class_logits(logits).float(), target)


class DiceLoss(nn.Module):
    """Soft Dice loss, ``1 - mean_k dice_k``, over softmax probabilities.

    ``dice_k = (2 sum(p_k t_k) + smooth) / (sum(p_k) + sum(t_k) + smooth)``, the sums over the whole batch
    (``batch_dice``, nnU-Net's choice for 2-D: rare classes get a stable estimate) or over each image, then
    averaged over images. A class absent from both target and prediction scores ``smooth / smooth = 1``.

    Args:
        ignore_index: target value whose pixels are left out of every sum.
        smooth: added to numerator and denominator.
        include_background: whether class 0 counts in the mean.
        batch_dice: pool the sums over the batch (True) or score each image on its own (False).
    """

    def __init__(
        self, ignore_index: int = 255, smooth: float = 1.0, include_background: bool = True, batch_dice: bool = True
    ) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.smooth = smooth
        self.include_background = include_background
        self.batch_dice = batch_dice

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Return the scalar loss."""
        probs = two_class_logits(logits).float().softmax(dim=1)
        one_hot, valid = _one_hot_valid(probs, target, self.ignore_index)
        probs, one_hot = probs * valid, one_hot * valid
        dims = (0, 2, 3) if self.batch_dice else (2, 3)
        intersection = (probs * one_hot).sum(dims)
        cardinality = probs.sum(dims) + one_hot.sum(dims)
        dice = (2 * intersection + self.smooth) / (cardinality + self.smooth)  # (K,) or (B, K)
        if not self.include_background:
            dice = dice[..., 1:]
        return 1 - dice.mean()


class BCELoss(nn.Module):
    """Per-class binary cross-entropy on one-hot targets (each class its own sigmoid), ignored pixels masked.

    On one-channel logits (binary mode) it is the plain BCE of the foreground (class 1).
    """

    def __init__(self, ignore_index: int = 255) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Return the scalar loss, averaged over valid pixels and classes."""
        if logits.shape[1] == 1:  # binary mode: the foreground's own sigmoid against target == 1
            valid = (target != self.ignore_index).unsqueeze(1).float()
            one_hot = (target == 1).unsqueeze(1).float()
        else:
            one_hot, valid = _one_hot_valid(logits, target, self.ignore_index)
        loss = F.binary_cross_entropy_with_logits(logits.float(), one_hot.float(), reduction="none")
        return (loss * valid).sum() / (valid.sum() * logits.shape[1]).clamp_min(1)


class DiceCELoss(nn.Module):
    """``ce_weight * CrossEntropy + dice_weight * Dice`` with nnU-Net's defaults.

    nnU-Net (Isensee et al. 2021, ``DC_and_CE_loss``) leaves the background out of the Dice term, smooths it
    by only 1e-5 and pools it over the batch; those are the defaults here.
    """

    def __init__(
        self,
        ignore_index: int = 255,
        ce_weight: float = 1.0,
        dice_weight: float = 1.0,
        include_background: bool = False,
        smooth: float = 1e-5,
        batch_dice: bool = True,
        class_weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.ce = CrossEntropyLoss(ignore_index=ignore_index, class_weights=class_weights)
        self.dice = DiceLoss(ignore_index, smooth, include_background, batch_dice)
        self.ce_weight, self.dice_weight = ce_weight, dice_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Return the weighted sum of both losses."""
        return self.ce_weight * self.ce(logits, target) + self.dice_weight * self.dice(logits, target)


class WeightMapCrossEntropyLoss(nn.Module):
    """Cross-entropy weighted per pixel, the U-Net paper's loss: ``sum(w * ce) / sum(w)`` over valid pixels.

    The weights come with the batch (``batch["weight"]``, the border weight map of
    :mod:`segkit.data.weight_map`); the task passes them as ``weight=``. Without them (validation, whose
    samples carry no maps) every valid pixel weighs 1 and this is plain cross-entropy.
    """

    uses_weight_map = True

    def __init__(self, ignore_index: int = 255) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """Return the weighted mean cross-entropy; ``weight`` is ``(B, H, W)`` like ``target``."""
        valid = target != self.ignore_index
        ce = F.cross_entropy(two_class_logits(logits).float(), target, ignore_index=self.ignore_index, reduction="none")
        weight = valid.float() if weight is None else torch.where(valid, weight.float(), torch.zeros_like(ce))
        return (ce * weight).sum() / weight.sum().clamp_min(1e-12)
