"""U-Net shapes for same and valid padding, the paper's 23 conv layers and 572 -> 388 case."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from segkit.models import UNet


@pytest.mark.parametrize("hw", [(64, 64), (67, 93), (33, 17)])
@pytest.mark.parametrize("up_mode", ["transpose", "bilinear"])
def test_same_padding_returns_logits_at_input_size(hw: tuple[int, int], up_mode: str) -> None:
    net = UNet(num_classes=3, depth=3, base_channels=8, up_mode=up_mode)
    assert net(torch.rand(2, 3, *hw)).shape == (2, 3, *hw)


@pytest.mark.parametrize("norm", ["batch", "group", "instance", None])
def test_norm_choices_build_and_run(norm: str | None) -> None:
    net = UNet(num_classes=2, in_channels=1, depth=2, base_channels=8, norm=norm)
    assert net(torch.rand(2, 1, 64, 64)).shape == (2, 2, 64, 64)


def test_paper_configuration_has_23_conv_layers_and_maps_572_to_388() -> None:
    net = UNet(num_classes=2, in_channels=1, padding="valid", norm=None)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    assert len(convs) == 23  # 18 3x3 convs + 4 up-convs + 1 1x1 head, as counted in the paper
    assert net.output_size((572, 572)) == (388, 388)
    assert net.input_size_for((388, 388)) == (572, 572)
    with torch.no_grad():
        assert net(torch.rand(1, 1, 572, 572)).shape == (1, 2, 388, 388)


@pytest.mark.parametrize("hw", [(67, 93), (64, 64), (101, 60)])
def test_valid_padding_output_size_matches_forward(hw: tuple[int, int]) -> None:
    net = UNet(num_classes=3, depth=2, base_channels=8, padding="valid")
    out = net(torch.rand(1, 3, *hw))
    assert tuple(out.shape[-2:]) == net.output_size(hw)
    # input_size_for gives an input whose logits cover the requested size
    need = net.input_size_for(out.shape[-2:])
    assert all(o >= t for o, t in zip(net.output_size(need), out.shape[-2:], strict=True))


def test_valid_padding_rejects_too_small_input_with_the_minimum() -> None:
    net = UNet(num_classes=2, padding="valid")
    with pytest.raises(ValueError, match="too small"):
        net(torch.rand(1, 3, 40, 40))


def test_encoder_contract_and_gradients_reach_first_layer() -> None:
    net = UNet(num_classes=2, depth=3, base_channels=8)
    assert net.encoder.channels == [8, 16, 32, 64]
    assert net.encoder.reductions == [1, 2, 4, 8]
    features = net.encoder(torch.rand(2, 3, 32, 32))
    assert [f.shape[1] for f in features] == net.encoder.channels
    assert [32 // f.shape[-1] for f in features] == net.encoder.reductions
    net(torch.rand(2, 3, 32, 32)).sum().backward()
    assert net.encoder.stem[0][0].weight.grad.abs().sum() > 0


def test_bad_arguments_raise_value_error() -> None:
    with pytest.raises(ValueError, match="padding"):
        UNet(num_classes=2, padding="full")
    with pytest.raises(ValueError, match="up_mode"):
        UNet(num_classes=2, up_mode="nearest")
    with pytest.raises(ValueError, match="norm"):
        UNet(num_classes=2, norm="layer")


def test_deep_supervision_outputs_in_training_only_and_every_head_learns() -> None:
    from segkit.tasks.segmentation import deep_supervision_loss

    net = UNet(num_classes=3, in_channels=1, depth=3, base_channels=8, deep_supervision=2)
    x = torch.randn(2, 1, 60, 60)  # not a multiple of 8: the internal padding is cropped at every level
    outs = net.train()(x)
    assert [tuple(o.shape[-2:]) for o in outs] == [(60, 60), (30, 30), (15, 15)]
    assert net.eval()(x).shape == (2, 3, 60, 60)  # inference: the usual single output
    mask = torch.randint(0, 3, (2, 60, 60))
    mask[:, :4] = 255
    loss_fn = torch.nn.CrossEntropyLoss(ignore_index=255)
    outs = net.train()(x)
    loss = deep_supervision_loss(loss_fn, loss_fn(outs[0], mask), outs[1:], mask, batch_size=2)
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())  # no unused parameter (DDP-safe)
    constant = deep_supervision_loss(lambda logits, target: torch.tensor(2.0), torch.tensor(1.0), outs[1:], mask, 2)
    assert constant.item() == pytest.approx((1.0 * 1 + 2.0 * 0.5 + 2.0 * 0.25) / 1.75)  # halving weights, normalised
    plain = UNet(num_classes=3, in_channels=1, depth=3, base_channels=8)
    assert len(plain.deep_heads) == 0 and isinstance(plain.train()(x), torch.Tensor)
    with pytest.raises(ValueError, match="deep_supervision"):
        UNet(num_classes=3, depth=3, base_channels=8, deep_supervision=3)
