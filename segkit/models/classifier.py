"""Classifier: any segkit encoder + global pooling + linear head, so encoders move between tasks."""

from __future__ import annotations

import torch
from torch import nn

from segkit.models.encoders import build_encoder
from segkit.models.heads import ClassificationHead
from segkit.models.pretrained import PretrainedMixin


class Classifier(PretrainedMixin, nn.Module):
    """Image classifier on the same encoders (and the same ``weights`` spec) as :class:`segkit.models.UNet`.

    Shape: ``(B, in_channels, H, W)`` -> ``(B, num_classes)`` logits.

    ``Classifier(encoder=X, weights="file:<segmentation run checkpoint>")`` starts from a U-Net's encoder, and a
    U-Net started from this classifier's checkpoint gets its encoder: the state-dict keys are the same
    (``encoder.*``).

    Args:
        encoder: ``"unet"`` (the classic U-Net contracting path) or any timm model name.
        num_classes: number of classes.
        in_channels: image channels.
        weights: ``None``, a timm tag or ``"file:<path>"`` (see :mod:`segkit.models.weights`).
        strict_weights: raise when the weight file lacks any encoder tensor.
        pool: ``"avg"``, ``"max"`` or ``"avgmax"``.
        dropout: dropout before the linear layer.
        freeze_encoder: keep encoder weights and BatchNorm statistics fixed (linear probing).
    """

    def __init__(
        self,
        encoder: str,
        num_classes: int,
        in_channels: int = 3,
        weights: str | None = None,
        strict_weights: bool = False,
        pool: str = "avg",
        dropout: float = 0.0,
        freeze_encoder: bool = False,
    ) -> None:
        super().__init__()
        self.config = dict(
            encoder=encoder, num_classes=num_classes, in_channels=in_channels, weights=weights,
            strict_weights=strict_weights, pool=pool, dropout=dropout, freeze_encoder=freeze_encoder,
        )  # fmt: skip
        self.encoder = build_encoder(encoder, in_channels, weights, strict_weights)
        self.head = ClassificationHead(self.encoder.channels[-1], num_classes, pool, dropout)
        if freeze_encoder:
            self.encoder.freeze()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return class logits from the deepest encoder feature map."""
        return self.head(self.encoder(x)[-1])
