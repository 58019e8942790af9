"""Encoders behind one contract: ``channels``, ``reductions`` and ``forward(x) -> list of feature maps``.

The decoder only ever reads ``channels`` (one entry per feature map) and ``reductions`` (the stride of each
map relative to the input), so any module honouring this contract plugs into :class:`segkit.models.UNet`.
"""

from __future__ import annotations

import torch
from torch import nn

from segkit.models.blocks import DoubleConv


class UNetEncoder(nn.Module):
    """The contracting path of the original U-Net: DoubleConv, then ``depth`` x (2x2 max-pool, DoubleConv).

    Shape:
        input ``(B, in_channels, H, W)`` -> ``depth + 1`` maps, map ``i`` is
        ``(B, base_channels * 2**i, ~H / 2**i, ~W / 2**i)`` (exactly so with same padding).

    Args:
        in_channels: channels of the input image.
        depth: number of pooling steps (4 in the paper).
        base_channels: channels of the first block (64 in the paper); doubled at every level.
        padding: ``"same"`` keeps sizes, ``"valid"`` trims 4 pixels per DoubleConv as in the paper.
        norm: normalisation after each conv (``"batch"``, ``"group"``, ``"instance"`` or ``None``).
        dropout: Dropout2d at the bottleneck (the paper uses dropout at the end of the contracting path).
    """

    def __init__(
        self,
        in_channels: int = 3,
        depth: int = 4,
        base_channels: int = 64,
        padding: str = "same",
        norm: str | None = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.padding = padding
        self.channels = [base_channels * 2**i for i in range(depth + 1)]
        self.reductions = [2**i for i in range(depth + 1)]
        self.stem = DoubleConv(in_channels, self.channels[0], padding, norm)
        self.stages = nn.ModuleList(
            nn.Sequential(
                nn.MaxPool2d(2),
                DoubleConv(c_in, c_out, padding, norm, dropout if i == depth - 1 else 0.0),
            )
            for i, (c_in, c_out) in enumerate(zip(self.channels[:-1], self.channels[1:], strict=True))
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the feature map of every level, finest first."""
        features = [self.stem(x)]
        for stage in self.stages:
            features.append(stage(features[-1]))
        return features
