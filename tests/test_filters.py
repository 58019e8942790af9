"""Classic kernels do what their names say, checked on images whose answer is known by hand."""

from __future__ import annotations

import pytest
import torch

from segkit.filters import (
    filter2d,
    fixed_conv,
    gaussian_kernel,
    laplacian_kernel,
    mean_kernel,
    sharpen_kernel,
    sobel_kernels,
    sobel_magnitude,
)


def ramp(height: int = 8, width: int = 9) -> torch.Tensor:
    """Brightness growing by 1 per column to the right."""
    return torch.arange(width, dtype=torch.float32).expand(height, width).clone()


def test_sobel_measures_the_slope_of_a_ramp() -> None:
    gx, gy = sobel_kernels()
    image = ramp()
    inner = (slice(1, -1), slice(1, -1))  # reflected borders fold the ramp back
    assert torch.allclose(filter2d(image, gx)[inner], torch.full((6, 7), 8.0))  # (1 + 2 + 1) * 2 px * slope 1
    assert torch.allclose(filter2d(image, gy)[inner], torch.zeros(6, 7))
    assert torch.allclose(sobel_magnitude(image)[inner], torch.full((6, 7), 8.0))


def test_laplacian_is_zero_on_ramps_and_marks_a_point() -> None:
    assert torch.allclose(filter2d(ramp(), laplacian_kernel())[1:-1, 1:-1], torch.zeros(6, 7))
    point = torch.zeros(7, 7)
    point[3, 3] = 1.0
    out = filter2d(point, laplacian_kernel())
    assert out[3, 3] == -4 and out[2, 3] == 1 and out[2, 2] == 0
    assert filter2d(point, laplacian_kernel(diagonals=True))[2, 2] == 1


def test_blurs_keep_the_mean_and_sharpening_keeps_flat_areas() -> None:
    flat = torch.full((3, 10, 10), 0.4)
    for kernel in (mean_kernel(5), gaussian_kernel(1.5), sharpen_kernel(2.0)):
        assert kernel.sum().item() == pytest.approx(1.0)
        assert torch.allclose(filter2d(flat, kernel), flat)
    step = torch.zeros(10, 10)
    step[:, 5:] = 1.0
    sharp = filter2d(step, sharpen_kernel())
    assert sharp[0, 4] == -1 and sharp[0, 5] == 2  # overshoot on both sides of the edge
    assert filter2d(step, mean_kernel(3))[0, 4] == pytest.approx(1 / 3)


def test_gaussian_kernel_shape_and_spread() -> None:
    kernel = gaussian_kernel(2.0)
    assert kernel.shape == (13, 13)  # 2 * ceil(3 sigma) + 1
    x = torch.arange(13.0) - 6
    variance = (kernel.sum(0) * x**2).sum()
    assert variance.item() == pytest.approx(4.0, rel=0.02)  # sigma^2, up to the truncated tails
    with pytest.raises(ValueError, match="sigma"):
        gaussian_kernel(0.0)


def test_fixed_conv_is_a_frozen_depthwise_layer_on_any_layout() -> None:
    conv = fixed_conv(gaussian_kernel(1.0), channels=3)
    assert conv.groups == 3 and not conv.weight.requires_grad and conv.bias is None
    batch = torch.rand(2, 3, 16, 17)
    assert filter2d(batch, mean_kernel()).shape == batch.shape
    assert torch.allclose(filter2d(batch[0], mean_kernel()), filter2d(batch, mean_kernel())[0])
    assert torch.allclose(filter2d(batch[0, 1], mean_kernel()), filter2d(batch, mean_kernel())[0, 1])
    with pytest.raises(ValueError, match="odd"):
        fixed_conv(torch.ones(2, 2))
    with pytest.raises(ValueError, match="image"):
        filter2d(torch.ones(5), mean_kernel())
