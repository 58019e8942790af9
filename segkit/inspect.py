"""Per-layer profile of any ``nn.Module``: output shapes, parameters, MACs and receptive fields.

``python -m segkit.inspect model=<config> input_size=[H,W]`` prints the table for a configured model;
``profile(module, input_size=(H, W))`` returns it for any module (torchvision's and timm's included).

The arithmetic is the CNN basics the toolkit rests on:
- conv output size: ``floor((n + 2p - d(k - 1) - 1) / s) + 1``;
- conv parameters: ``C_in / groups * C_out * k_h * k_w`` (+ ``C_out`` bias);
- conv MACs: one multiply-accumulate per weight per output position: ``H_out W_out C_out C_in/groups k_h k_w``;
- receptive field: ``r_out = r_in + (k_eff - 1) * j_in`` and jump ``j_out = j_in * s``, ``k_eff = d(k - 1) + 1``.
MACs count convolutions and linear layers only (norms, activations and pooling are ignored), as published
figures do. Receptive fields follow each layer's input. A tensor made by a functional op (residual add,
concatenation, padding) gets the largest field recorded so far at its spatial size: the field of a sum or
concatenation is that of its widest input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

POOLS = (nn.MaxPool2d, nn.AvgPool2d)


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


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


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
    if isinstance(module, nn.Conv2d | nn.MaxPool2d | nn.AvgPool2d):
        k = _pair(module.kernel_size)[0]
        d = _pair(getattr(module, "dilation", 1))[0]
        s = _pair(module.stride if module.stride is not None else k)[0]
        return rf + (d * (k - 1)) * jump, jump * s
    if isinstance(module, nn.ConvTranspose2d):
        s = module.stride[0]
        return rf + (module.kernel_size[0] - 1) * jump / s, jump / s
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


def main() -> None:
    """``python -m segkit.inspect model=<config> input_size=[H,W]``: print the profile of a configured model."""
    import hydra  # the command line only; the library above stays free of Hydra
    from hydra.utils import instantiate

    @hydra.main(version_base="1.3", config_path="conf", config_name="inspect")
    def run(cfg) -> None:
        net = instantiate(cfg.model)
        result = profile(net, input_size=tuple(cfg.input_size), in_channels=cfg.model.get("in_channels"))
        print(result.table())

    run()


if __name__ == "__main__":
    main()
