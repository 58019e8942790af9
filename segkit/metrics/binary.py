"""Binary mode: a network with one output channel (sigmoid) read as a two-class one.

For a logit ``z``, ``softmax([0, z]) = [1 - sigmoid(z), sigmoid(z)]``. Turning ``(B, 1, H, W)`` logits into
``(B, 2, H, W)`` this way makes every multi-class loss and metric exact for binary tasks: cross-entropy on the
pair is binary cross-entropy on ``z``, soft Dice of class 1 is the sigmoid Dice, and the argmax is the 0.5
threshold. Training, validation, ``segkit.predict`` and ``segkit.eval`` all go through it, so the threshold a
model is scored with is the one it is used with, and metric names keep both class names
(``val/iou_membrane``).
"""

from __future__ import annotations

import torch


def two_class_logits(logits: torch.Tensor) -> torch.Tensor:
    """``(B, 1, ...)`` sigmoid logits -> ``(B, 2, ...)`` softmax logits ``[0, z]``; other shapes pass through."""
    if logits.shape[1] != 1:
        return logits
    return torch.cat([torch.zeros_like(logits), logits], dim=1)
