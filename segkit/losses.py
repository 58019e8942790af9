"""Segmentation losses on logits ``(B, K, H, W)`` and int64 targets ``(B, H, W)``, all honouring ``ignore_index``.

Cross-entropy alone is ``torch.nn.CrossEntropyLoss(ignore_index=...)``; this module adds what torch lacks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _one_hot_valid(logits: torch.Tensor, target: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One-hot targets ``(B, K, H, W)`` and the valid-pixel mask ``(B, 1, H, W)``."""
    valid = target != ignore_index
    safe = torch.where(valid, target, torch.zeros_like(target))
    one_hot = F.one_hot(safe, logits.shape[1]).permute(0, 3, 1, 2).to(logits.dtype)
    return one_hot, valid.unsqueeze(1).to(logits.dtype)


class DiceLoss(nn.Module):
    """Soft Dice loss, ``1 - mean_k dice_k``, over softmax probabilities, pooled over the whole batch.

    Classes absent from both target and prediction give dice 1 through ``smooth`` (no NaN, no penalty).

    Args:
        ignore_index: target value whose pixels are left out of every sum.
        smooth: added to numerator and denominator.
        include_background: whether class 0 counts in the mean.
    """

    def __init__(self, ignore_index: int = 255, smooth: float = 1.0, include_background: bool = True) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.smooth = smooth
        self.include_background = include_background

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Return the scalar loss."""
        probs = logits.float().softmax(dim=1)
        one_hot, valid = _one_hot_valid(probs, target, self.ignore_index)
        probs, one_hot = probs * valid, one_hot * valid
        dims = (0, 2, 3)
        intersection = (probs * one_hot).sum(dims)
        cardinality = probs.sum(dims) + one_hot.sum(dims)
        dice = (2 * intersection + self.smooth) / (cardinality + self.smooth)  # (K,)
        if not self.include_background:
            dice = dice[1:]
        return 1 - dice.mean()


class BCELoss(nn.Module):
    """Per-class binary cross-entropy on one-hot targets (each class its own sigmoid), ignored pixels masked."""

    def __init__(self, ignore_index: int = 255) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Return the scalar loss, averaged over valid pixels and classes."""
        one_hot, valid = _one_hot_valid(logits, target, self.ignore_index)
        loss = F.binary_cross_entropy_with_logits(logits.float(), one_hot.float(), reduction="none")
        return (loss * valid).sum() / (valid.sum() * logits.shape[1]).clamp_min(1)


class DiceCELoss(nn.Module):
    """``ce_weight * CrossEntropy + dice_weight * Dice``: nnU-Net's default recipe."""

    def __init__(self, ignore_index: int = 255, ce_weight: float = 1.0, dice_weight: float = 1.0) -> None:
        super().__init__()
        self.ce = nn.CrossEntropyLoss(ignore_index=ignore_index)
        self.dice = DiceLoss(ignore_index=ignore_index)
        self.ce_weight, self.dice_weight = ce_weight, dice_weight

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Return the weighted sum of both losses."""
        return self.ce_weight * self.ce(logits.float(), target) + self.dice_weight * self.dice(logits, target)
