"""Conv arithmetic and a per-layer profile of any ``nn.Module``: output shapes, parameters, MACs, receptive fields.

``python -m segkit.inspect model=<config> input_size=[H,W]`` prints the table for a configured model;
``profile(module, input_size=(H, W))`` returns it for any module (torchvision's and timm's included);
``conv_output_size``, ``conv_params`` and ``pixel_use_counts`` are the formulas behind it, on their own.

The arithmetic is the CNN basics the toolkit rests on:
- conv output size: ``floor((n + 2p - d(k - 1) - 1) / s) + 1``;
- conv parameters: ``C_in / groups * C_out * k_h * k_w`` (+ ``C_out`` bias);
- conv MACs: one multiply-accumulate per weight per output position: ``H_out W_out C_out C_in/groups k_h k_w``;
- receptive field: ``r_out = r_in + (k_eff - 1) * j_in`` and jump ``j_out = j_in * s``, ``k_eff = d(k - 1) + 1``;
  a transposed conv reads ``ceil(k / s)`` inputs per output: ``r_out = r_in + (ceil(k / s) - 1) * j_in``,
  ``j_out = j_in / s``.
MACs count convolutions and linear layers only (norms, activations and pooling, min pooling included, are
ignored), as published
figures do. Receptive fields follow each layer's input. A tensor made by a functional op (residual add,
concatenation, padding) gets the largest field recorded so far at its spatial size: the field of a sum or
concatenation is that of its widest input.
"""

from __future__ import annotations

# ruff: noqa: E402 -- a command line is answered (--help, a typo) before the imports it runs with
from segkit.cli import answer_first

if __name__ == "__main__":  # ~2 s instead of the 10-18 s torch and Lightning take to import
    answer_first("inspect", "segkit.inspect")

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from segkit.models.blocks import MinPool2d

WINDOWED = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d, MinPool2d)  # layers whose output sees a k x k input window
Pair = int | Sequence[int]


@dataclass
class LayerRow:
    """One leaf layer: its name, type, output shape, own parameters, MACs and receptive field."""

    name: str
    kind: str
    output_shape: tuple[int, ...]
    params: int
    macs: int
    receptive_field: int


@dataclass
class Profile:
    """Totals and per-layer rows of one forward pass (batch size 1)."""

    params: int
    macs: int
    rows: list[LayerRow] = field(default_factory=list)

    def table(self) -> str:
        """Fixed-width text table of the rows and totals."""
        lines = [f"{'layer':48} {'type':18} {'output':>20} {'params':>12} {'MACs':>14} {'RF':>5}"]
        for r in self.rows:
            shape = "x".join(map(str, r.output_shape))
            lines.append(
                f"{r.name[:48]:48} {r.kind[:18]:18} {shape:>20} {r.params:>12,} {r.macs:>14,} {r.receptive_field:>5}"
            )
        lines.append(f"total: {self.params / 1e6:.2f} M parameters, {self.macs / 1e9:.3f} GMACs")
        return "\n".join(lines)


def _pair(value: Pair) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _padding_sides(padding: Pair | str, kernel: int, dilation: int, stride: int, size: int) -> tuple[int, int]:
    """Padding before and after one axis. ``"same"`` pads ``d(k - 1)`` in all (the extra pixel after, as
    PyTorch does) at stride 1; at stride s it pads just enough for ``ceil(n / s)`` outputs (TensorFlow's
    definition: every output then "owns" s input pixels; PyTorch refuses ``padding="same"`` with stride > 1)."""
    if padding == "valid":
        return 0, 0
    if padding == "same":
        out = math.ceil(size / stride)
        total = max((out - 1) * stride + dilation * (kernel - 1) + 1 - size, 0)
        return total // 2, total - total // 2
    if isinstance(padding, str):
        raise ValueError(f"padding must be an int, a pair, 'same' or 'valid', got {padding!r}")
    return padding, padding


def conv_output_size(
    size: Pair, kernel_size: Pair, stride: Pair = 1, padding: Pair | str = 0, dilation: Pair = 1
) -> int | tuple[int, int]:
    """Output length of a convolution or pooling window: ``floor((n + 2p - d(k - 1) - 1) / s) + 1``.

    Args:
        size: input length ``n``, or ``(H, W)``.
        kernel_size, stride, dilation: ints or ``(h, w)`` pairs, as ``nn.Conv2d`` takes them.
        padding: pixels added on each side, or ``"valid"`` (none: the output shrinks by ``d(k - 1)``) or
            ``"same"`` (output length ``n`` at stride 1; ``ceil(n / s)`` at stride s).

    Returns:
        An int when every argument is an int, else an ``(H_out, W_out)`` pair.

    Raises:
        ValueError: when the window does not fit the padded input.
    """
    scalar = all(isinstance(v, int) for v in (size, kernel_size, stride, dilation, padding) if not isinstance(v, str))
    pad = padding if isinstance(padding, str) else _pair(padding)
    out = []
    for axis, (n, k, s, d) in enumerate(zip(*map(_pair, (size, kernel_size, stride, dilation)), strict=True)):
        before, after = _padding_sides(pad if isinstance(pad, str) else pad[axis], k, d, s, n)
        length = (n + before + after - d * (k - 1) - 1) // s + 1
        if length < 1:
            raise ValueError(f"a window of {k} (dilation {d}) does not fit an input of {n} padded by {before + after}")
        out.append(length)
    return out[0] if scalar else (out[0], out[1])


def conv_params(in_channels: int, out_channels: int, kernel_size: Pair, bias: bool = True, groups: int = 1) -> int:
    """Weights of one conv layer: ``C_in / groups * C_out * k_h * k_w``, plus ``C_out`` biases."""
    kh, kw = _pair(kernel_size)
    return in_channels // groups * out_channels * kh * kw + (out_channels if bias else 0)


def pixel_use_counts(
    size: Pair, kernel_size: Pair, stride: Pair = 1, padding: Pair | str = 0, dilation: Pair = 1
) -> torch.Tensor:
    """How many output positions read each input pixel, as an ``(H, W)`` int64 map.

    Without padding a 3x3 kernel reads an interior pixel 9 times but a corner pixel once: the border
    contributes less to the output, which is what padding (and U-Net's overlap-tile strategy) is about.
    """
    (h, w), (kh, kw), (sh, sw), (dh, dw) = map(_pair, (size, kernel_size, stride, dilation))
    pads = [padding] * 2 if isinstance(padding, str) else list(_pair(padding))
    (top, bottom), (left, right) = (
        _padding_sides(pads[0], kh, dh, sh, h),
        _padding_sides(pads[1], kw, dw, sw, w),
    )
    padded = (h + top + bottom, w + left + right)
    out_h = (padded[0] - dh * (kh - 1) - 1) // sh + 1
    out_w = (padded[1] - dw * (kw - 1) - 1) // sw + 1
    if out_h < 1 or out_w < 1:
        raise ValueError(f"a {kh}x{kw} window does not fit an input of {h}x{w} with this padding")
    windows = torch.ones(1, kh * kw, out_h * out_w, dtype=torch.float64)
    counts = F.fold(windows, padded, (kh, kw), dilation=(dh, dw), stride=(sh, sw))[0, 0]
    return counts[top : top + h, left : left + w].round().long()


def _layer_macs(module: nn.Module, inputs: torch.Tensor, output: torch.Tensor) -> int:
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return output.numel() * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.ConvTranspose2d):
        kh, kw = module.kernel_size
        return inputs.numel() * (module.out_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return output.numel() * module.in_features
    return 0


def _layer_rf(module: nn.Module, rf: float, jump: float) -> tuple[float, float]:
    if isinstance(module, WINDOWED):
        k = _pair(module.kernel_size)[0]
        d = _pair(getattr(module, "dilation", 1))[0]
        s = _pair(module.stride if module.stride is not None else k)[0]
        return rf + (d * (k - 1)) * jump, jump * s
    if isinstance(module, nn.ConvTranspose2d):  # an output reads ceil(k / s) input positions (1 for 2x2 up-convs)
        s = module.stride[0]
        return rf + (math.ceil(module.kernel_size[0] / s) - 1) * jump, jump / s
    return rf, jump


def profile(module: nn.Module, input_size: Sequence[int] = (224, 224), in_channels: int | None = None) -> Profile:
    """Run one forward pass of a ``(1, in_channels, H, W)`` zero tensor and record every leaf layer.

    Args:
        module: any network taking an image batch.
        input_size: ``(H, W)``.
        in_channels: input channels; default: ``in_channels`` of the first conv layer found.
    """
    if in_channels is None:
        first = next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)
        in_channels = first.in_channels if first is not None else 3
    x = torch.zeros(1, in_channels, *input_size)
    fields: dict[int, tuple[torch.Tensor, float, float]] = {id(x): (x, 1.0, 1.0)}
    widest: dict[tuple[int, ...], tuple[float, float]] = {tuple(x.shape[-2:]): (1.0, 1.0)}  # per spatial size
    last = (1.0, 1.0)
    rows: list[LayerRow] = []

    def field_of(t: torch.Tensor | None) -> tuple[float, float]:
        if t is None:
            return last
        if id(t) in fields:
            return fields[id(t)][1:]
        return widest.get(tuple(t.shape[-2:]), last) if t.ndim == 4 else last

    def hook(name: str):
        def record(mod: nn.Module, inputs: tuple, output: object) -> None:
            nonlocal last
            first_in = inputs[0] if inputs and isinstance(inputs[0], torch.Tensor) else None
            rf, jump = _layer_rf(mod, *field_of(first_in))
            if isinstance(output, torch.Tensor):
                fields[id(output)] = (output, rf, jump)  # keep the tensor so its id is not reused
                last = (rf, jump)
                if output.ndim == 4 and rf > widest.get(tuple(output.shape[-2:]), (0.0, 0.0))[0]:
                    widest[tuple(output.shape[-2:])] = (rf, jump)
                own = sum(p.numel() for p in mod.parameters(recurse=False))
                macs = _layer_macs(mod, first_in, output) if first_in is not None else 0
                rows.append(LayerRow(name, type(mod).__name__, tuple(output.shape[1:]), own, macs, round(rf)))

        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in module.named_modules() if not list(m.children())]
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            module(x)
    finally:
        for h in handles:
            h.remove()
        module.train(was_training)
    total_params = sum(p.numel() for p in module.parameters())
    return Profile(params=total_params, macs=sum(r.macs for r in rows), rows=rows)


def print_profile(cfg) -> None:
    """Print the profile table of ``cfg.model`` (a composed ``conf/inspect.yaml``) at ``cfg.input_size``."""
    from hydra.utils import instantiate  # the command line only; the library above stays free of Hydra

    net = instantiate(cfg.model)
    print(profile(net, input_size=tuple(cfg.input_size), in_channels=cfg.model.get("in_channels")).table())


def main() -> None:
    """``python -m segkit.inspect model=<config> input_size=[H,W]``: print the profile of a configured model."""
    import hydra

    from segkit.cli import clear_errors

    @hydra.main(version_base="1.3", config_path="conf", config_name="inspect")
    def run(cfg) -> None:
        clear_errors(print_profile)(cfg)

    run()


if __name__ == "__main__":
    main()
