"""Conv building blocks shared by the U-Net encoder and decoder (Ronneberger et al. 2015, arXiv:1505.04597)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NORMS = ("batch", "group", "instance", None)


def make_norm(norm: str | None, channels: int) -> nn.Module:
    """Return the normalisation layer named by ``norm`` (``None`` gives an identity)."""
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "group":
        # 8 groups is a good default for small channel counts; fall back to LayerNorm-like 1 group.
        return nn.GroupNorm(8 if channels % 8 == 0 else 1, channels)
    if norm == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if norm is None:
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


class ConvNormAct(nn.Sequential):
    """3x3 (or kxk) conv -> norm -> ReLU. The conv has no bias when a norm follows it."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        padding: int = 1,
        norm: str | None = "batch",
    ) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding, bias=norm is None),
            make_norm(norm, out_channels),
            nn.ReLU(inplace=True),
        )


class DoubleConv(nn.Sequential):
    """Two ConvNormAct layers: the repeated unit of the U-Net paper.

    With ``padding="valid"`` each conv trims one pixel per side, so the block shrinks H and W by 4.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        padding: str = "same",
        norm: str | None = "batch",
        dropout: float = 0.0,
    ) -> None:
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
        pad = 1 if padding == "same" else 0
        layers: list[nn.Module] = [
            ConvNormAct(in_channels, out_channels, padding=pad, norm=norm),
            ConvNormAct(out_channels, out_channels, padding=pad, norm=norm),
        ]
        if dropout > 0:
            layers.append(nn.Dropout2d(dropout))
        super().__init__(*layers)


class MinPool2d(nn.Module):
    """Min pooling, the mirror image of ``nn.MaxPool2d`` (PyTorch has max and average pooling only).

    ``min(x) = -max(-x)``, so it inherits max pooling's arguments, its padding (which never wins: it pads with
    +inf for the minimum) and its gradient. On a binary mask it is a morphological erosion, as max pooling is
    a dilation.
    """

    def __init__(
        self,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] | None = None,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding = padding
        self.dilation = dilation
        self.ceil_mode = ceil_mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` -> ``(B, C, H_out, W_out)``, sizes as for ``nn.MaxPool2d``."""
        return -F.max_pool2d(-x, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)

    def extra_repr(self) -> str:
        return (
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, ceil_mode={self.ceil_mode}"
        )
