"""U-Net: encoder, decoder with skip connections, 1x1 head (Ronneberger et al. 2015, arXiv:1505.04597).

The decoder is built from whatever ``channels`` / ``reductions`` the encoder reports, so the encoder can be
swapped without touching it. ``padding="same"`` returns logits at the input size for any input size (the
input is padded to the encoder's total stride and the logits cropped back); ``padding="valid"`` reproduces
the paper exactly (572x572 in -> 388x388 out, skips centre-cropped).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segkit.models.blocks import DoubleConv
from segkit.models.encoders import UNetEncoder


def center_crop(x: torch.Tensor, hw: Sequence[int]) -> torch.Tensor:
    """Crop the centre ``(h, w)`` window of ``x`` (B, C, H, W), as the paper does to its skips."""
    h, w = hw
    top, left = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
    return x[..., top : top + h, left : left + w]


class DecoderBlock(nn.Module):
    """Upsample by ``scale``, concatenate the skip, apply a DoubleConv.

    Shape: ``(B, in_channels, h, w)`` + skip ``(B, skip_channels, H, W)`` -> ``(B, out_channels, H', W')``,
    with ``H' = H`` for same padding and ``H' = scale*h - 4`` for valid padding (the skip is centre-cropped).
    """

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        scale: int = 2,
        up_mode: str = "transpose",
        padding: str = "same",
        norm: str | None = "batch",
    ) -> None:
        super().__init__()
        if up_mode == "transpose":
            # The paper's "up-convolution": a 2x2 transposed conv that also halves the channels.
            self.up = nn.ConvTranspose2d(in_channels, out_channels, kernel_size=scale, stride=scale)
        elif up_mode == "bilinear":
            self.up = nn.Sequential(
                nn.Upsample(scale_factor=scale, mode="bilinear", align_corners=False),
                nn.Conv2d(in_channels, out_channels, kernel_size=1),
            )
        else:
            raise ValueError(f"up_mode must be 'transpose' or 'bilinear', got {up_mode!r}")
        self.conv = DoubleConv(out_channels + skip_channels, out_channels, padding, norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Upsample ``x``, match the skip's size and fuse them."""
        x = self.up(x)
        if skip.shape[-2:] != x.shape[-2:]:
            skip = center_crop(skip, x.shape[-2:])
        return self.conv(torch.cat([x, skip], dim=1))  # (B, out + skip, H, W) -> (B, out, H', W')


class UNetDecoder(nn.Module):
    """Expanding path built from an encoder's ``channels`` and ``reductions`` (finest first).

    Args:
        encoder_channels: channels of each encoder feature map, finest first.
        encoder_reductions: stride of each map relative to the input, finest first.
        decoder_channels: output channels of each decoder block, coarsest block first; one per skip.
    """

    def __init__(
        self,
        encoder_channels: Sequence[int],
        encoder_reductions: Sequence[int],
        decoder_channels: Sequence[int],
        up_mode: str = "transpose",
        padding: str = "same",
        norm: str | None = "batch",
    ) -> None:
        super().__init__()
        skips = list(encoder_channels[:-1])[::-1]  # coarsest skip first
        if len(decoder_channels) != len(skips):
            raise ValueError(
                f"decoder_channels has {len(decoder_channels)} entries but the encoder gives {len(skips)} skip "
                f"connections (channels {list(encoder_channels)}); pass one entry per skip."
            )
        reductions = list(encoder_reductions)[::-1]
        in_channels = [encoder_channels[-1], *decoder_channels[:-1]]
        self.blocks = nn.ModuleList(
            DecoderBlock(c_in, c_skip, c_out, reductions[i] // reductions[i + 1], up_mode, padding, norm)
            for i, (c_in, c_skip, c_out) in enumerate(zip(in_channels, skips, decoder_channels, strict=True))
        )
        self.out_channels = decoder_channels[-1]

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Fuse the encoder features from the coarsest up; returns the finest decoder map."""
        x = features[-1]
        for block, skip in zip(self.blocks, features[-2::-1], strict=True):
            x = block(x, skip)
        return x


class UNet(nn.Module):
    """U-Net returning per-pixel class logits.

    Shape: ``(B, in_channels, H, W)`` -> ``(B, num_classes, H, W)`` with same padding, or
    ``(B, num_classes, *self.output_size((H, W)))`` with valid padding.

    Args:
        num_classes: number of output channels (classes, background included).
        in_channels: image channels.
        depth: pooling steps of the encoder (4 in the paper).
        base_channels: channels at full resolution (64 in the paper), doubled per level.
        padding: ``"same"`` (any input size, output = input size) or ``"valid"`` (the paper's unpadded convs).
        up_mode: ``"transpose"`` (2x2 up-conv, the paper) or ``"bilinear"`` (+1x1 conv).
        norm: ``"batch"``, ``"group"``, ``"instance"`` or ``None`` (the paper has no norm).
        dropout: Dropout2d at the bottleneck.

    Example:
        >>> net = UNet(num_classes=2, in_channels=1, padding="valid", norm=None)
        >>> net.output_size((572, 572))
        (388, 388)
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        depth: int = 4,
        base_channels: int = 64,
        padding: str = "same",
        up_mode: str = "transpose",
        norm: str | None = "batch",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
        self.padding = padding
        self.num_classes = num_classes
        self.encoder = UNetEncoder(in_channels, depth, base_channels, padding, norm, dropout)
        self.decoder = UNetDecoder(
            self.encoder.channels,
            self.encoder.reductions,
            decoder_channels=self.encoder.channels[-2::-1],
            up_mode=up_mode,
            padding=padding,
            norm=norm,
        )
        self.head = nn.Conv2d(self.decoder.out_channels, num_classes, kernel_size=1)

    @property
    def total_stride(self) -> int:
        """Input sizes that are multiples of this need no internal padding."""
        return self.encoder.reductions[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits; see the class docstring for the output size."""
        h, w = x.shape[-2:]
        if self.padding == "valid":
            out_hw = self.output_size((h, w))  # raises a clear error for inputs that are too small
            logits = self.head(self.decoder(self.encoder(x)))
            return logits[..., : out_hw[0], : out_hw[1]]
        s = self.total_stride
        pad_h, pad_w = (-h) % s, (-w) % s
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        logits = self.head(self.decoder(self.encoder(x)))  # (B, K, H + pad_h, W + pad_w)
        return logits[..., :h, :w]

    def output_size(self, input_hw: Sequence[int]) -> tuple[int, int]:
        """Logit size for an input of ``input_hw``; the identity for same padding."""
        if self.padding == "same":
            return int(input_hw[0]), int(input_hw[1])
        return tuple(self._valid_output_len(int(n)) for n in input_hw)  # type: ignore[return-value]

    def input_size_for(self, output_hw: Sequence[int]) -> tuple[int, int]:
        """Smallest input size whose logits cover ``output_hw`` (for overlap-tile inference with valid padding)."""
        if self.padding == "same":
            return int(output_hw[0]), int(output_hw[1])
        return tuple(self._valid_input_len(int(n)) for n in output_hw)  # type: ignore[return-value]

    def _valid_output_len(self, n: int) -> int:
        depth = len(self.encoder.reductions) - 1
        size = n
        for _ in range(depth):
            size -= 4  # two unpadded 3x3 convs
            if size < 2:
                break
            size //= 2  # 2x2 max-pool floors odd sizes
        size -= 4  # bottleneck DoubleConv
        for _ in range(depth):
            size = size * 2 - 4  # up-conv, then two unpadded convs
        if size < 1:
            raise ValueError(
                f"input length {n} is too small for a depth-{depth} U-Net with valid padding; "
                f"the smallest that works is {self._valid_input_len(1)}."
            )
        return size

    def _valid_input_len(self, n: int) -> int:
        depth = len(self.encoder.reductions) - 1
        size = n
        for _ in range(depth):
            size = (size + 4 + 1) // 2  # invert "x2 then -4", rounding up
        size += 4
        for _ in range(depth):
            size = size * 2 + 4
        return size
