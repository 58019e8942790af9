"""U-Net: encoder, decoder with skip connections, 1x1 head (Ronneberger et al. 2015, arXiv:1505.04597).

The decoder is built from whatever ``channels`` / ``reductions`` the encoder reports, so the encoder can be
swapped without touching it. ``padding="same"`` returns logits at the input size for any input size (the
input is padded to the encoder's total stride and the logits cropped back); ``padding="valid"`` reproduces
the paper exactly (572x572 in -> 388x388 out, skips centre-cropped).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from segkit.models.blocks import ConvNormAct, DoubleConv
from segkit.models.encoders import UNetEncoder, build_encoder
from segkit.models.heads import ClassificationHead
from segkit.models.pretrained import PretrainedMixin


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

    def forward(self, features: list[torch.Tensor], every_level: bool = False) -> torch.Tensor | list[torch.Tensor]:
        """Fuse the encoder features from the coarsest up; returns the finest decoder map (or, with
        ``every_level``, each block's output, coarsest first)."""
        x, outputs = features[-1], []
        for block, skip in zip(self.blocks, features[-2::-1], strict=True):
            x = block(x, skip)
            outputs.append(x)
        return outputs if every_level else x


class HighResBranch(nn.Module):
    """Light full-resolution features from the input, for encoders whose first map is at stride > 1.

    ResNet starts at stride 2 and ConvNeXt at stride 4; instead of fake empty skips, this branch gives the
    decoder real high-resolution skips: one 3x3 conv + ReLU of the (average-pooled) input per missing stride.
    It is kept thin (8 channels at full resolution, no norm) because full-resolution maps cost memory
    bandwidth, not MACs.

    Shape: ``(B, in_channels, H, W)`` -> maps at strides ``1, 2, ..., first_reduction / 2``.
    """

    def __init__(self, in_channels: int, first_reduction: int, channels: int = 8) -> None:
        super().__init__()
        self.reductions = [2**i for i in range(first_reduction.bit_length() - 1)]
        self.channels = [channels * r for r in self.reductions]
        self.branches = nn.ModuleList(
            nn.Sequential(nn.AvgPool2d(r) if r > 1 else nn.Identity(), ConvNormAct(in_channels, c, norm=None))
            for r, c in zip(self.reductions, self.channels, strict=True)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the high-resolution maps, finest first."""
        return [branch(x) for branch in self.branches]


def build_aux_head(spec: Mapping[str, float | int | str] | None, in_channels: int) -> tuple[nn.Module | None, float]:
    """Build the optional auxiliary classification head from its mapping; returns (head, loss weight)."""
    if spec is None:
        return None, 0.0
    unknown = set(spec) - {"num_classes", "pool", "dropout", "loss_weight"}
    if unknown or "num_classes" not in spec:
        raise ValueError(f"aux_head takes num_classes, pool, dropout, loss_weight; got {sorted(spec)}")
    head = ClassificationHead(
        in_channels, int(spec["num_classes"]), str(spec.get("pool", "avg")), float(spec.get("dropout", 0.0))
    )
    return head, float(spec.get("loss_weight", 0.4))


class UNet(PretrainedMixin, nn.Module):
    """U-Net returning per-pixel class logits, with segkit's classic encoder or any timm encoder.

    Shape: ``(B, in_channels, H, W)`` -> ``(B, num_classes, H, W)`` with same padding, or
    ``(B, num_classes, *self.output_size((H, W)))`` with valid padding (classic encoder only).

    Args:
        num_classes: number of output channels (classes, background included).
        in_channels: image channels.
        encoder: ``"unet"`` (the paper's contracting path, built from ``depth``/``base_channels``) or any timm
            model name (``"resnet34"``, ``"convnext_tiny"``, ``"convnextv2_atto"``, ``"vgg16_bn"``...).
        weights: encoder weights: ``None``, a timm tag (``"imagenet"``) or ``"file:<path>"``.
        strict_weights: raise when the weight file lacks any encoder tensor.
        decoder_channels: channels of each decoder block, coarsest first; default mirrors the classic encoder,
            or ``256, 128, 64, ...`` (at least 16) for timm encoders.
        depth: pooling steps of the classic encoder (4 in the paper).
        base_channels: channels at full resolution of the classic encoder (64 in the paper).
        padding: ``"same"`` (any input size, output = input size) or ``"valid"`` (the paper; classic encoder).
        up_mode: ``"transpose"`` (2x2 up-conv, the paper) or ``"bilinear"`` (+1x1 conv).
        norm: ``"batch"``, ``"group"``, ``"instance"`` or ``None`` (the paper has no norm).
        dropout: Dropout2d at the bottleneck of the classic encoder.
        freeze_encoder: keep encoder weights and BatchNorm statistics fixed during training.
        aux_head: optional image-level classification head on the deepest encoder feature, as a mapping with
            ``num_classes``, ``pool`` (default ``"avg"``), ``dropout`` (0.0) and ``loss_weight`` (0.4). With
            it, ``forward`` returns ``(mask_logits, class_logits)``.
        deep_supervision: nnU-Net's deep supervision: this many coarser decoder levels (next to the finest)
            get their own 1x1 logit head. In training, ``forward`` then returns a list of logits, finest
            first, each level at half the previous resolution; the task adds their losses against
            downsampled masks with halving weights. In eval mode the output is the usual one, and with 0
            (the default) no extra layer exists, so DDP never sees unused parameters.

    Example:
        >>> net = UNet(num_classes=2, in_channels=1, padding="valid", norm=None)
        >>> net.output_size((572, 572))
        (388, 388)
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        encoder: str = "unet",
        weights: str | None = None,
        strict_weights: bool = False,
        decoder_channels: Sequence[int] | None = None,
        depth: int = 4,
        base_channels: int = 64,
        padding: str = "same",
        up_mode: str = "transpose",
        norm: str | None = "batch",
        dropout: float = 0.0,
        freeze_encoder: bool = False,
        aux_head: Mapping[str, float | int | str] | None = None,
        deep_supervision: int = 0,
    ) -> None:
        super().__init__()
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
        # The constructor arguments, so the network can be saved and rebuilt without Hydra (save_pretrained).
        self.config = dict(
            num_classes=num_classes, in_channels=in_channels, encoder=encoder, weights=weights,
            strict_weights=strict_weights, decoder_channels=list(decoder_channels) if decoder_channels else None,
            depth=depth, base_channels=base_channels, padding=padding, up_mode=up_mode, norm=norm, dropout=dropout,
            freeze_encoder=freeze_encoder, aux_head=dict(aux_head) if aux_head else None,
            deep_supervision=deep_supervision,
        )  # fmt: skip
        self.padding = padding
        self.num_classes = num_classes
        self.encoder = build_encoder(
            encoder, in_channels, weights, strict_weights, depth, base_channels, padding, norm, dropout
        )
        if padding == "valid" and not isinstance(self.encoder, UNetEncoder):
            raise ValueError("padding='valid' needs the classic encoder (encoder='unet'); timm encoders pad 'same'")
        self.high_res = None
        channels, reductions = list(self.encoder.channels), list(self.encoder.reductions)
        if reductions[0] > 1:
            self.high_res = HighResBranch(in_channels, reductions[0])
            channels, reductions = self.high_res.channels + channels, self.high_res.reductions + reductions
        if decoder_channels is None:
            n_skips = len(channels) - 1
            decoder_channels = (
                channels[-2::-1]
                if isinstance(self.encoder, UNetEncoder)
                else [max(16, 256 // 2**i) for i in range(n_skips)]
            )
        self.decoder = UNetDecoder(channels, reductions, decoder_channels, up_mode, padding, norm)
        self.head = nn.Conv2d(self.decoder.out_channels, num_classes, kernel_size=1)
        if not 0 <= deep_supervision < len(decoder_channels):
            raise ValueError(
                f"deep_supervision must be between 0 and {len(decoder_channels) - 1} (decoder levels below the "
                f"finest), got {deep_supervision}"
            )
        if deep_supervision and padding == "valid":
            raise ValueError("deep_supervision needs padding='same' (valid-padding levels do not align)")
        # coarser levels, next-to-finest first
        self.deep_heads = nn.ModuleList(
            nn.Conv2d(c, num_classes, kernel_size=1) for c in list(decoder_channels)[-2 : -2 - deep_supervision : -1]
        )
        self.aux_head, self.aux_loss_weight = build_aux_head(aux_head, self.encoder.channels[-1])
        if freeze_encoder:
            self.encoder.freeze()

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encoder maps, preceded by the high-resolution branch's maps when the encoder starts below stride 1."""
        features = self.encoder(x)
        return self.high_res(x) + features if self.high_res is not None else features

    @property
    def total_stride(self) -> int:
        """Input sizes that are multiples of this need no internal padding."""
        return self.encoder.reductions[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor] | tuple:
        """Return logits (and class logits with an aux head); see the class docstring for the output size."""
        h, w = x.shape[-2:]
        if self.padding == "valid":
            out_h, out_w = self.output_size((h, w))  # raises a clear error for inputs that are too small
        else:
            s = self.total_stride
            # Always padded (a no-op pad costs one copy of the input): an exported graph (ONNX, TorchScript)
            # then pads every input size correctly, instead of baking in the example's "no padding" branch.
            x = F.pad(x, (0, (-w) % s, 0, (-h) % s))
            out_h, out_w = h, w
        features = self.features(x)
        if self.training and len(self.deep_heads):
            levels = self.decoder(features, every_level=True)[::-1]  # finest first
            logits = [self.head(levels[0])[..., :out_h, :out_w]]
            for level, head in zip(levels[1:], self.deep_heads, strict=False):
                scale = x.shape[-1] // level.shape[-1]
                logits.append(head(level)[..., : -(-out_h // scale), : -(-out_w // scale)])
        else:
            logits = self.head(self.decoder(features))[..., :out_h, :out_w]  # crop the padding back off
        if self.aux_head is None:
            return logits
        return logits, self.aux_head(features[-1])

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
