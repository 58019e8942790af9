"""Classic image kernels (Sobel, Laplacian, sharpening, mean and Gaussian blur) as fixed-weight convolutions.

A CNN layer is the same operation with learned weights: ``fixed_conv(kernel)`` is an ``nn.Conv2d`` whose
weights are a hand-made kernel and stay frozen. ``filter2d`` applies one to any image tensor, ``(H, W)``,
``(C, H, W)`` or ``(B, C, H, W)``, each channel on its own, with reflected borders so the size is kept.
PyTorch's convolution is a cross-correlation (the kernel is not flipped), so the Sobel x-kernel is positive
where brightness grows to the right.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def sobel_kernels() -> tuple[torch.Tensor, torch.Tensor]:
    """The 3x3 Sobel derivative kernels ``(d/dx, d/dy)``: a central difference smoothed across it."""
    gx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    return gx, gx.T.contiguous()


def laplacian_kernel(diagonals: bool = False) -> torch.Tensor:
    """3x3 discrete Laplacian (sum of second derivatives): 0 on flat and linear ramps, large on edges.

    Args:
        diagonals: use the 8-neighbour kernel (centre -8) instead of the 4-neighbour one (centre -4).
    """
    if diagonals:
        kernel = torch.ones(3, 3)
        kernel[1, 1] = -8.0
        return kernel
    return torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def sharpen_kernel(amount: float = 1.0) -> torch.Tensor:
    """``identity - amount * laplacian``: adds back the edges, so contrast grows across them (sums to 1)."""
    identity = torch.zeros(3, 3)
    identity[1, 1] = 1.0
    return identity - amount * laplacian_kernel()


def mean_kernel(size: int = 3) -> torch.Tensor:
    """``size x size`` box blur: every output pixel is the average of its window."""
    return torch.full((size, size), 1.0 / size**2)


def gaussian_kernel(sigma: float, size: int | None = None) -> torch.Tensor:
    """Normalised 2-D Gaussian of standard deviation ``sigma`` px; ``size`` defaults to ``2 * ceil(3 sigma) + 1``."""
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    size = size or 2 * math.ceil(3 * sigma) + 1
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = torch.outer(g, g)
    return (kernel / kernel.sum()).float()


def fixed_conv(kernel: torch.Tensor, channels: int = 1) -> nn.Conv2d:
    """A depthwise ``nn.Conv2d`` that applies ``kernel`` ``(k_h, k_w)`` to each of ``channels``; weights frozen.

    Odd kernel sizes keep the image size (``padding="same"``, reflected borders).
    """
    kh, kw = kernel.shape
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"kernel sizes must be odd to keep the image size, got {kh}x{kw}")
    conv = nn.Conv2d(channels, channels, (kh, kw), padding="same", padding_mode="reflect", groups=channels, bias=False)
    conv.weight.data.copy_(kernel.to(conv.weight.dtype).expand(channels, 1, kh, kw))
    conv.weight.requires_grad_(False)
    return conv


def filter2d(image: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Convolve each channel of ``image`` (``(H, W)``, ``(C, H, W)`` or ``(B, C, H, W)``) with ``kernel``.

    Returns a float tensor of the input's shape.
    """
    if image.ndim not in (2, 3, 4):
        raise ValueError(f"expected an (H, W), (C, H, W) or (B, C, H, W) image, got shape {tuple(image.shape)}")
    batch = image.float() if image.ndim == 4 else image.float().reshape(1, -1, *image.shape[-2:])
    with torch.no_grad():
        out = fixed_conv(kernel, batch.shape[1])(batch)
    return out.reshape(image.shape)


def sobel_magnitude(image: torch.Tensor) -> torch.Tensor:
    """Gradient magnitude ``sqrt(gx^2 + gy^2)`` of each channel: the classic edge map."""
    gx, gy = sobel_kernels()
    return torch.hypot(filter2d(image, gx), filter2d(image, gy))
