"""Tiles land where they belong: tiled output equals whole-image output for models whose output depends on the
input (a constant model would pass any placement), for same and valid padding, with sizes that do not divide."""

from __future__ import annotations

import re

import cv2
import numpy as np
import pytest
import torch
from torch import nn

from segkit.inference import Predictor
from segkit.inference.model_files import LoadedModel, inference_metadata
from segkit.inference.sliding_window import SlidingWindow, mirror_pad, mirror_pad_for_valid
from segkit.models import UNet

SIZES = [(50, 77), (64, 64), (33, 100), (97, 41)]
TILES = [(16, 16), (24, 40), (32, 32)]
OVERLAPS = [0.0, 0.25, 0.5]


class Pointwise(nn.Module):
    """A random 1x1 convolution: every output pixel depends on its own input pixel only, so tiles computed
    anywhere must reassemble the whole-image output exactly, and a tile put one pixel off shows."""

    padding = "same"

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class ValidConvs(nn.Module):
    """Two unpadded 3x3 convolutions: output = input - 4 px, and no border effects at all, so the overlap-tile
    result must equal the network run once on the whole image mirrored by 2 px."""

    padding = "valid"

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 5, 3), nn.ReLU(), nn.Conv2d(5, 4, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def output_size(self, hw):
        if min(hw) < 5:
            raise ValueError(f"tile {hw} too small")
        return (hw[0] - 4, hw[1] - 4)

    def input_size_for(self, hw):
        return (hw[0] + 4, hw[1] + 4)


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("overlap", OVERLAPS)
def test_tiles_reassemble_the_whole_image_output(padding, size, tile, overlap) -> None:
    """Same padding: equal to the network on the whole image. Valid padding: equal to the network run once on
    the whole image mirrored by its 2-px margin (the overlap-tile strategy with one tile)."""
    net = (Pointwise() if padding == "same" else ValidConvs()).eval()
    image = torch.randn(3, *size)
    tiled = SlidingWindow(net, tile, overlap, precision="fp32", channels_last=False)(image)
    with torch.no_grad():
        whole = net(image[None] if padding == "same" else mirror_pad(image[None], 2, 2, 2, 2))[0]
    assert tiled.shape == (4, *size)
    torch.testing.assert_close(tiled, whole, atol=1e-5, rtol=0)


def test_mirroring_is_albumentations_border_reflect_101() -> None:
    """Training crops pad with BORDER_REFLECT_101; validation and predict must mirror the same way."""
    image = np.random.default_rng(0).random((7, 9)).astype(np.float32)
    expected = cv2.copyMakeBorder(image, 3, 5, 4, 2, cv2.BORDER_REFLECT_101)
    padded = mirror_pad(torch.from_numpy(image)[None, None], 3, 5, 4, 2)[0, 0].numpy()
    np.testing.assert_array_equal(padded, expected)


def test_a_valid_unet_predicts_a_whole_image_as_the_validation_did() -> None:
    """By default a valid-padding model takes an image that fits as one mirrored tile: exactly the logits
    validation scored (``mirror_pad_for_valid``), not a mosaic of training-size tiles."""
    net = UNet(num_classes=2, in_channels=3, depth=2, base_channels=4, padding="valid", norm=None).eval()
    meta = inference_metadata(net, "segmentation", ["a", "b"], None)
    meta.update(mean=[0.0] * 3, std=[1.0] * 3, patch_size=[60, 60], precision="fp32")
    predictor = Predictor(LoadedModel(net, meta, "test"), device="cpu", precision="fp32")
    image = np.random.default_rng(0).integers(0, 256, (90, 70, 3), dtype=np.uint8)
    x = predictor.to_tensor(image)[None]
    with torch.no_grad():
        expected = net(mirror_pad_for_valid(net, x))[0, :, :90, :70]
    calls = []
    net.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    torch.testing.assert_close(predictor.logits(image), expected, atol=1e-5, rtol=0)
    assert calls == [1]  # one tile
    calls.clear()
    Predictor(LoadedModel(net, meta, "test"), tile=[60, 60], device="cpu").logits(image)
    assert sum(calls) > 1  # an explicit tile still tiles


def test_a_model_trained_on_whole_images_predicts_them_whole() -> None:
    """A same-padding model trained without a crop validated whole images, so predict takes an image larger
    than the 256² fallback tile as one tile too (its logits are the network's on the whole image); a model
    trained on crops, or whose metadata does not say, still tiles it."""
    net = UNet(num_classes=2, in_channels=3, depth=2, base_channels=4, norm=None).eval()
    meta = inference_metadata(net, "segmentation", ["a", "b"], None)
    meta.update(mean=[0.0] * 3, std=[1.0] * 3, patch_size=None, precision="fp32")
    predictor = Predictor(LoadedModel(net, meta, "test"), device="cpu", precision="fp32")
    image = np.random.default_rng(0).integers(0, 256, (300, 270, 3), dtype=np.uint8)
    with torch.no_grad():
        expected = net(predictor.to_tensor(image)[None])[0]
    calls = []
    net.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    torch.testing.assert_close(predictor.logits(image), expected, atol=1e-5, rtol=0)
    assert calls == [1] and "whole images up to" in predictor.describe()
    calls.clear()
    Predictor(LoadedModel(net, {**meta, "patch_size": [64, 64]}, "test"), device="cpu").logits(image)
    assert sum(calls) > 1  # trained on crops: tiles of the crop
    calls.clear()
    unsaid = {k: v for k, v in meta.items() if k != "patch_size"}  # metadata that does not say: 256² tiles
    Predictor(LoadedModel(net, unsaid, "test"), device="cpu").logits(image)
    assert sum(calls) > 1


@pytest.mark.parametrize(
    ("tile", "shown"), [([50], "[50]"), (50, "50"), ([64, 0], "[64, 0]"), ([64.5, 64], "[64.5, 64]")]
)
def test_a_malformed_tile_is_refused_by_name(tile, shown: str) -> None:
    """``tile=[50]`` stopped on "tuple index out of range" inside the sliding window, ``tile=50`` on "'int'
    object is not iterable"."""
    net = UNet(num_classes=2, depth=2, base_channels=4)
    with pytest.raises(ValueError, match=rf"tile must be \[height, width\] in pixels .*, got {re.escape(shown)}$"):
        SlidingWindow(net, tile)
    with pytest.raises(ValueError, match="tile_batch_size must be a positive whole number of tiles, got 0"):
        SlidingWindow(net, [64, 64], tile_batch_size=0)


def test_a_valid_padding_tile_with_tiny_logits_is_refused_with_a_size_that_works() -> None:
    """``tile=[188,188]``, the paper U-Net's minimum input, yields 4x4 logits a tile: ~90,000 tiles for a
    1040x1388 image, hours of predicting, where the error for 100 px had pointed to 188."""
    net = UNet(num_classes=2, in_channels=1, padding="valid", norm=None)
    with pytest.raises(ValueError, match=r"tile=\[188, 188\] gives 4x4 logits .* at least tile=\[380,380\] \(196 px"):
        SlidingWindow(net, [188, 188])
    assert net.output_size((380, 380)) == (196, 196)
    SlidingWindow(net, [572, 572])  # the paper's tile: 388 px of logits
    meta = inference_metadata(net, "segmentation", ["a", "b"], None)
    meta.update(mean=[0.0], std=[1.0], patch_size=[188, 188], precision="fp32")  # trained on the minimum crop
    assert Predictor(LoadedModel(net, meta, "test"), device="cpu").window.tile == (380, 380)  # the default's floor
    meta.update(patch_size=[572, 572])
    assert Predictor(LoadedModel(net, meta, "test"), device="cpu").window.tile == (572, 572)  # the crop itself
