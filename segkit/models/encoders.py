"""Encoders behind one contract: ``channels``, ``reductions`` and ``forward(x) -> list of feature maps``.

The decoder only ever reads ``channels`` (one entry per feature map) and ``reductions`` (the stride of each
map relative to the input), so any module honouring this contract plugs into :class:`segkit.models.UNet`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
from torch import nn

from segkit.models.blocks import DoubleConv
from segkit.models.weights import LoadReport, key_spellings, load_encoder_state, resolve_weights, weights_path
from segkit.quiet import quiet_import

with quiet_import():
    import timm

log = logging.getLogger(__name__)


class Encoder(nn.Module):
    """What every encoder shares: the contract attributes, weight loading with a report, and freezing.

    Subclasses set ``channels`` and ``reductions`` and implement ``forward(x) -> list of feature maps``.
    """

    name: str  # "unet" or the timm model name
    channels: list[int]
    reductions: list[int]
    mean: tuple[float, ...] | None = None  # normalisation the pretrained weights expect
    std: tuple[float, ...] | None = None
    load_report: LoadReport | None = None
    frozen: bool = False

    def load_weights(
        self,
        weights: str,
        model_name: str,
        in_channels: int,
        strict: bool = False,
        target: nn.Module | None = None,
        first_conv: str | None = None,
    ) -> None:
        """Load a ``weights`` spec into ``target`` (default: self) and log the load report."""
        state_dict, source = resolve_weights(weights, model_name)
        report = load_encoder_state(target or self, state_dict, source, in_channels, first_conv, strict)
        report.mean, report.std = self.mean, self.std
        self.load_report = report
        log.info("%s", report)
        if not log.isEnabledFor(logging.INFO):  # plain Python use without logging set up: still show it
            print(report)
        if kept := len(report.missing) + len(report.mismatched):
            log.warning("%d of %d encoder tensors keep their random initialisation (missing from %s or shaped "
                        "differently): are these %s weights? model.strict_weights=true refuses such a file",
                        kept, report.total, report.source, model_name)  # fmt: skip

    def freeze(self) -> None:
        """Fix weights and BatchNorm statistics: no gradients, and eval mode whatever the parent's mode."""
        self.requires_grad_(False)
        self.frozen = True
        self.eval()

    def train(self, mode: bool = True) -> Encoder:
        """Switch modes; a frozen encoder stays in eval mode."""
        return super().train(mode and not self.frozen)


class UNetEncoder(Encoder):
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
        self.name = "unet"
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


class TimmEncoder(Encoder):
    """Any timm model with ``features_only`` support behind the encoder contract.

    ``channels`` and ``reductions`` are read from timm's ``feature_info`` (never from a table), so ResNet
    (strides 2..32), ConvNeXt (4..32), VGG (1..32) and other families work without special cases. Families
    whose features come out channels-last (Swin, some MaxViT/Hiera variants: timm's ``output_fmt == "NHWC"``)
    are permuted to ``(B, C, H, W)``. Plain ViTs (timm's getter wrapper) give every map at stride 16; the
    decoder then fuses them at that stride and the high-resolution branch supplies the finer skips. Models
    built for a fixed input size (Swin, ViT without dynamic size) need inputs of that size.

    Shape: ``(B, in_channels, H, W)`` -> one map per ``feature_info`` entry, ``(B, channels[i], H/r_i, W/r_i)``.

    Args:
        name: timm model name, e.g. ``"resnet34"``, ``"convnext_tiny"``, ``"convnextv2_atto"``.
        in_channels: input channels; pretrained first convs are adapted (1: sum, C: repeat and scale by 3/C).
        weights: ``None`` (random init), a timm tag (``"imagenet"``, ``"convnext_tiny.fb_in22k_ft_in1k"``) or
            ``"file:<path>"``; see :mod:`segkit.models.weights`.
        strict: raise when a weight file lacks any encoder tensor.
        out_indices: which feature levels to return (timm's ``out_indices``); ``None`` = all.
    """

    def __init__(
        self,
        name: str,
        in_channels: int = 3,
        weights: str | None = None,
        strict: bool = False,
        out_indices: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        kwargs = {"out_indices": tuple(out_indices)} if out_indices is not None else {}
        try:
            self.model = timm.create_model(name, features_only=True, pretrained=False, in_chans=in_channels, **kwargs)
        except RuntimeError as err:
            raise ValueError(f"timm cannot build encoder {name!r}: {err}") from err
        self.name = name
        self.channels_last_output = str(getattr(self.model, "output_fmt", "NCHW")).upper().endswith("NHWC")
        self.channels = list(self.model.feature_info.channels())
        self.reductions = list(self.model.feature_info.reduction())
        cfg = getattr(self.model, "pretrained_cfg", None) or {}
        self.mean, self.std = cfg.get("mean"), cfg.get("std")
        if self.mean is not None and len(self.mean) != in_channels:  # adapted first conv: average statistics
            self.mean = (sum(self.mean) / len(self.mean),) * in_channels
            self.std = (sum(self.std) / len(self.std),) * in_channels
        if weights is not None:
            self.load_weights(weights, name, in_channels, strict, target=self.model, first_conv=cfg.get("first_conv"))
        self.undecayed = {f"model.{key}" for key in timm_no_weight_decay(name, in_channels, self.model)}

    def no_weight_decay(self) -> set[str]:
        """Parameters timm's model keeps out of weight decay (position embeddings, relative position bias
        tables), in this module's names; :func:`segkit.tasks.base.param_groups` reads it, as timm's optimizer
        factory reads the method of the same name."""
        return self.undecayed

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the feature maps ``(B, C, H, W)``, finest first."""
        features = self.model(x)
        if self.channels_last_output:  # (B, H, W, C) -> (B, C, H, W)
            features = [f.permute(0, 3, 1, 2) for f in features]
        return features


def timm_no_weight_decay(name: str, in_channels: int, features: nn.Module) -> set[str]:
    """Names of ``features``' parameters that timm model ``name`` lists in its ``no_weight_decay()``.

    timm's ``features_only`` wrappers drop that method and rename top-level modules (``layers.0`` ->
    ``layers_0``), so the whole model is built once more on the meta device (no memory, no initialisation) to
    ask it, and its names are matched through the wrapper's spellings. Where timm cannot build it there (timm
    1.0.12's CoAtNet), it is built on the CPU; a model that cannot be built at all lists nothing: the list
    refines the optimizer's groups, it is no reason to refuse an encoder.
    """
    for device in ("meta", "cpu"):  # older timm builds some models only with real tensors
        try:
            with torch.device(device):
                full = timm.create_model(name, pretrained=False, in_chans=in_channels)
            break
        except (RuntimeError, NotImplementedError, TypeError, ValueError) as err:
            log.debug("timm model %s not built on %s (%s)", name, device, err)
    else:
        return set()
    listed = set(full.no_weight_decay()) if hasattr(full, "no_weight_decay") else set()
    return {key for key, _ in features.named_parameters() if any(k in listed for k in key_spellings(key))}


def no_weight_decay_names(module: nn.Module) -> set[str]:
    """The parameter names ``module`` lists in ``no_weight_decay()``. smp's ``tu-<timm name>`` encoders wrap
    a timm ``features_only`` model and do not pass the method on, so theirs come from the timm model they
    name, as :class:`TimmEncoder`'s do: smp and segkit models train alike."""
    from segmentation_models_pytorch.encoders.timm_universal import TimmUniversalEncoder

    if isinstance(module, TimmUniversalEncoder):
        return {f"model.{name}" for name in timm_no_weight_decay(module.name, 3, module.model)}
    method = getattr(module, "no_weight_decay", None)
    return set(method()) if callable(method) else set()


def build_encoder(
    name: str,
    in_channels: int = 3,
    weights: str | None = None,
    strict: bool = False,
    depth: int = 4,
    base_channels: int = 64,
    padding: str = "same",
    norm: str | None = "batch",
    dropout: float = 0.0,
) -> Encoder:
    """The encoder named ``name``: ``"unet"`` for the classic contracting path, else a timm model name.

    ``depth``, ``base_channels``, ``padding``, ``norm`` and ``dropout`` shape the classic encoder only.
    """
    if name != "unet":
        return TimmEncoder(name, in_channels, weights, strict)
    encoder = UNetEncoder(in_channels, depth, base_channels, padding, norm, dropout)
    if weights is not None:
        if weights_path(weights) is None:
            raise ValueError(f"the classic 'unet' encoder has no hub weights; got weights={weights!r}, use file:<path>")
        encoder.load_weights(weights, name, in_channels, strict)
    return encoder
