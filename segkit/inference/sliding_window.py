"""Sliding-window inference for images of any size, with Gaussian blending, test-time augmentation and the
U-Net paper's overlap-tile strategy for valid-padding networks.

Memory stays bounded: the network only ever sees ``tile_batch_size`` tiles at once; the whole image lives in
two accumulators (weighted logits and weights), kept on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch import nn

from segkit.data.settings import checked_size, positive_int

TTA_MODES = (None, "hflip", "flips", "d4")
AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
DEFAULT_TILE = (256, 256)  # the tile of a model that does not say what crop it trained on
WHOLE_IMAGE_PIXELS = 1024 * 1024  # larger images are tiled at validation, eval and predict alike


def gaussian_importance(tile: Sequence[int], sigma_scale: float = 0.125, floor: float = 1e-3) -> torch.Tensor:
    """``(h, w)`` separable Gaussian centred on the tile, σ = ``sigma_scale`` x tile size, max 1, at least ``floor``.

    Tiles then count most where their predictions are best (the centre, far from the zero-padded border),
    which removes seams between tiles; the floor keeps every pixel's weight positive.
    """
    axes = []
    for n in tile:
        x = torch.arange(n, dtype=torch.float32) - (n - 1) / 2
        axes.append(torch.exp(-(x**2) / (2 * (sigma_scale * n) ** 2)))
    weights = axes[0][:, None] * axes[1][None, :]
    weights = weights / weights.max()
    return weights.clamp_min(floor)


def tile_starts(size: int, tile: int, overlap: float) -> list[int]:
    """Start offsets of tiles of length ``tile`` covering ``size`` with about ``overlap`` shared between tiles.

    The step is ``int(tile * (1 - overlap))`` (at least 1), and the last tile is moved back to end at the
    border, so every tile lies inside the image.
    """
    if tile >= size:
        return [0]
    step = max(1, int(tile * (1 - overlap)))
    starts = list(range(0, size - tile, step))
    return [*starts, size - tile]


def mirror_pad(image: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
    """Mirror the last two dims about the edge pixels, which are not repeated (``np.pad(mode="reflect")``, the
    same as OpenCV's and albumentations' ``BORDER_REFLECT_101`` that training crops use), on the image's
    device. Pads wider than the image reflect again."""
    pad = [(0, 0)] * (image.dim() - 2) + [(top, bottom), (left, right)]
    return torch.from_numpy(np.pad(image.detach().cpu().float().numpy(), pad, mode="reflect")).to(image.device)


def smallest_good_valid_tile(net: nn.Module) -> tuple[int, int]:
    """The smallest square input tile whose logits are at least half its side, for a valid-padding network:
    the default tile's floor, so a model trained on the minimum crop does not predict through 4x4 windows."""
    side = next(n for n in range(8, 4096, 4) if 2 * n >= net.input_size_for((n, n))[0])
    return net.input_size_for((side, side))


def default_tile(net: nn.Module, patch_size: Sequence[int] | None) -> tuple[int, int]:
    """The tile inference and large-image validation use unless told otherwise: the training crop (256x256
    when the run had none), for a valid-padding network at least :func:`smallest_good_valid_tile`."""
    tile = tuple(int(n) for n in patch_size) if patch_size else DEFAULT_TILE
    if getattr(net, "padding", "same") == "valid":
        floor = smallest_good_valid_tile(net)
        tile = (max(tile[0], floor[0]), max(tile[1], floor[1]))
    return tile


def check_valid_tile(net: nn.Module, tile: tuple[int, int]) -> None:
    """Refuse a tile below a valid-padding network's minimum (its own clear error), or one whose logits are
    under a quarter of its side: the minimum input of the paper's U-Net, 188 px, yields 4x4 logits, so a
    1040x1388 image took ~90,000 tiles and ran for hours. The paper's tile, 572 px, yields 388."""
    out = net.output_size(tile)
    if all(4 * o >= t for o, t in zip(out, tile, strict=True)):
        return
    suggested = smallest_good_valid_tile(net)
    side = net.output_size(suggested)[0]
    raise ValueError(
        f"tile={list(tile)} gives {out[0]}x{out[1]} logits a tile with this valid-padding network (it trims "
        f"{tile[0] - out[0]} px off each side length), so an image would take thousands of tiles: give at least "
        f"tile=[{suggested[0]},{suggested[1]}] ({side} px of logits), or leave tile= out"
    )


def mirror_pad_for_valid(net: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """Mirror the borders of ``(B, C, H, W)`` images so a valid-padding network's logits cover all ``H x W``.

    The overlap-tile strategy of the U-Net paper with a single tile: the logits come out at least ``H x W``,
    aligned with the image at the top-left; crop them to ``[..., :H, :W]``. Used at validation, where the
    whole image is one tile; :class:`SlidingWindow` tiles large images the same way.
    """
    h, w = image.shape[-2:]
    tile_in = net.input_size_for((h, w))
    out = net.output_size(tile_in)
    top, left = (tile_in[0] - out[0]) // 2, (tile_in[1] - out[1]) // 2
    return mirror_pad(image, top, tile_in[0] - h - top, left, tile_in[1] - w - left)


def _tta_pairs(mode: str | None) -> list[tuple[Callable, Callable]]:
    """(forward, inverse) transforms on ``(B, C, H, W)`` tensors; the identity first."""
    if mode not in TTA_MODES:
        raise ValueError(f"tta must be none, hflip, flips or d4 (1, 2, 4 or 8 passes averaged), got {mode!r}")
    flips = {None: [()], "hflip": [(), (-1,)]}.get(mode, [(), (-1,), (-2,), (-2, -1)])
    pairs = [((lambda x, d=d: x.flip(d) if d else x), (lambda x, d=d: x.flip(d) if d else x)) for d in flips]
    if mode == "d4":  # the 4 flips of the transposed image complete the 8 symmetries of the square
        pairs += [
            ((lambda x, d=d: (x.flip(d) if d else x).transpose(-2, -1)),
             (lambda x, d=d: (x.transpose(-2, -1).flip(d) if d else x.transpose(-2, -1))))
            for d in flips
        ]  # fmt: skip
    return pairs


class SlidingWindow:
    """Predicts logits ``(K, H, W)`` for one normalised image ``(C, H, W)`` of any size.

    Args:
        net: the network; logits ``(B, K, h', w')`` with ``h' = output_size(h)`` (valid padding) or ``h``.
        tile: input tile ``(h, w)``; clipped to the image for same-padding networks. ``None``: the whole image
            as one tile (mirrored for valid padding: exactly what validation scores).
        overlap: share of a tile shared with its neighbour (0.5: each pixel is seen by about 4 tiles).
        sigma_scale: Gaussian σ as a fraction of the tile (1/8, as nnU-Net and MONAI); ``None``: flat weights.
        tile_batch_size: tiles per forward pass.
        tta: ``None``, ``"hflip"`` (the image and its mirror), ``"flips"`` (the 4 flips) or ``"d4"`` (the 8
            rotations/flips), logits averaged.
        device: where the network runs; accumulators stay on the CPU.
        precision: ``"fp32"`` (the network as it is), ``"bf16"`` (autocast) or ``"fp16"`` (autocast, GPUs).
            fp32 by default because bf16 is only faster where the hardware has bf16 kernels (9-16x slower
            on an AVX2-only CPU); :class:`~segkit.inference.predictor.Predictor` chooses per machine.
        channels_last: feed tiles in channels-last memory format.
    """

    def __init__(
        self,
        net: nn.Module,
        tile: Sequence[int] | None,
        overlap: float = 0.5,
        sigma_scale: float | None = 0.125,
        tile_batch_size: int = 4,
        tta: str | None = None,
        device: str | torch.device = "cpu",
        precision: str = "fp32",
        channels_last: bool = True,
    ) -> None:
        if not 0 <= overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {overlap}")
        if precision not in AUTOCAST:
            raise ValueError(f"precision must be one of {sorted(AUTOCAST)}, got {precision!r}")
        self.net, self.overlap, self.sigma_scale = net, overlap, sigma_scale
        if not positive_int(tile_batch_size):
            raise ValueError(f"tile_batch_size must be a positive whole number of tiles, got {tile_batch_size!r}")
        self.tile = checked_size(tile, "tile")
        self.tile_batch_size, self.tta = tile_batch_size, _tta_pairs(tta)
        self.device, self.precision, self.channels_last = torch.device(device), precision, channels_last
        self.valid = getattr(net, "padding", "same") == "valid"
        if self.valid and self.tile is not None:
            check_valid_tile(net, self.tile)

    def geometry(self, hw: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        """``(input tile, output tile, margin)`` for an image of ``hw``: what each tile reads and writes."""
        if not self.valid:
            tile = hw if self.tile is None else (min(self.tile[0], hw[0]), min(self.tile[1], hw[1]))
            return tile, tile, (0, 0)
        if self.tile is None:
            tile_in = self.net.input_size_for(hw)
            out = self.net.output_size(tile_in)
            return tile_in, out, ((tile_in[0] - out[0]) // 2, (tile_in[1] - out[1]) // 2)
        out = self.net.output_size(self.tile)
        out = self.net.output_size(self.net.input_size_for((min(out[0], hw[0]), min(out[1], hw[1]))))
        tile_in = self.net.input_size_for(out)
        out = self.net.output_size(tile_in)
        return tile_in, out, ((tile_in[0] - out[0]) // 2, (tile_in[1] - out[1]) // 2)

    def _forward(self, tiles: torch.Tensor) -> torch.Tensor:
        """Logits of a tile batch, averaged over the TTA transforms, as float32 on the CPU."""
        total = None
        for forward, inverse in self.tta:
            x = forward(tiles).to(self.device)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            dtype = AUTOCAST[self.precision]
            with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                out = self.net(x)
            out = out[0] if isinstance(out, tuple) else out
            out = inverse(out.float()).cpu()
            total = out if total is None else total + out
        return total / len(self.tta)

    def windows(self, hw: tuple[int, int]) -> Iterator[tuple[int, int]]:
        """Top-left corners (in output coordinates) of the tiles covering an image of ``hw``."""
        _, out, _ = self.geometry(hw)
        size = (max(hw[0], out[0]), max(hw[1], out[1]))
        for y in tile_starts(size[0], out[0], self.overlap):
            for x in tile_starts(size[1], out[1], self.overlap):
                yield y, x

    @torch.inference_mode()
    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """Logits ``(K, H, W)`` (float32, CPU) for a normalised ``(C, H, W)`` image."""
        return self.many([image])[0]

    @torch.inference_mode()
    def many(self, images: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Logits for several normalised ``(C, H, W)`` images of one size, their tiles pooled into shared
        forward passes of ``tile_batch_size`` (a server's batch of small images becomes one pass)."""
        h, w = images[0].shape[-2:]
        if any(tuple(image.shape[-2:]) != (h, w) for image in images):
            raise ValueError("SlidingWindow.many takes images of one size; group them by size first")
        tile_in, out, margin = self.geometry((h, w))
        size = (max(h, out[0]), max(w, out[1]))  # a valid-padding tile may reach past the image
        sources = list(images)
        if self.valid:  # mirror the borders so the output covers the whole image (the paper's overlap-tile)
            pads = (margin[0], margin[0] + size[0] - h, margin[1], margin[1] + size[1] - w)
            sources = [mirror_pad(image.cpu(), *pads) for image in images]
        weight = (
            gaussian_importance(out, self.sigma_scale) if self.sigma_scale else torch.ones(out, dtype=torch.float32)
        )
        corners = list(self.windows((h, w)))
        counts = torch.zeros(size, dtype=torch.float32)
        for y, x in corners:
            counts[y : y + out[0], x : x + out[1]] += weight
        logits: list[torch.Tensor | None] = [None] * len(images)
        jobs = [(i, y, x) for i in range(len(images)) for y, x in corners]
        for first in range(0, len(jobs), self.tile_batch_size):
            batch = jobs[first : first + self.tile_batch_size]
            tiles = torch.stack([sources[i][:, y : y + tile_in[0], x : x + tile_in[1]] for i, y, x in batch])
            pred = self._forward(tiles)  # (b, K, out_h, out_w)
            for (i, y, x), tile_logits in zip(batch, pred, strict=True):
                if logits[i] is None:
                    logits[i] = torch.zeros((pred.shape[1], *size), dtype=torch.float32)
                logits[i][:, y : y + out[0], x : x + out[1]] += tile_logits * weight
        return [total.div_(counts)[:, :h, :w] for total in logits]  # in place: no second image-sized buffer
