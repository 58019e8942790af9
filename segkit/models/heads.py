"""Heads that turn encoder features into predictions."""

from __future__ import annotations

import torch
from torch import nn

POOLS = ("avg", "max", "avgmax")


class ClassificationHead(nn.Module):
    """Global pooling -> dropout -> linear layer.

    Shape: ``(B, in_channels, h, w)`` -> ``(B, num_classes)`` logits.

    Args:
        in_channels: channels of the feature map.
        num_classes: number of outputs.
        pool: ``"avg"``, ``"max"`` or ``"avgmax"`` (both, concatenated: twice the features).
        dropout: dropout probability before the linear layer.
    """

    def __init__(self, in_channels: int, num_classes: int, pool: str = "avg", dropout: float = 0.0) -> None:
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        self.pool = pool
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_channels * (2 if pool == "avgmax" else 1), num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits."""
        if self.pool == "avg":
            pooled = x.mean(dim=(2, 3))  # (B, C)
        elif self.pool == "max":
            pooled = x.amax(dim=(2, 3))
        else:
            pooled = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], dim=1)  # (B, 2C)
        return self.fc(self.dropout(pooled))
