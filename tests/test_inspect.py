"""The inspector reproduces published parameter/MAC counts and the conv arithmetic by hand."""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest
import timm
import torch
import torchvision
from torch import nn

from segkit.inspect import conv_output_size, conv_params, pixel_use_counts, print_profile, profile
from segkit.models import MinPool2d, UNet
from tests.conftest import compose_command

PUBLISHED = [  # (model, millions of parameters, GMACs at 224x224 or None)
    (lambda: torchvision.models.resnet50(), 25.56, 4.1),
    (lambda: torchvision.models.resnet152(), 60.19, 11.5),
    (lambda: timm.create_model("convnext_tiny"), 28.6, 4.5),
    (lambda: torchvision.models.vgg16(), 138.4, 15.5),
    (lambda: torchvision.models.alexnet(), 61.1, None),
]


@pytest.mark.parametrize(
    ("build", "mparams", "gmacs"), PUBLISHED, ids=["resnet50", "resnet152", "convnext_t", "vgg16", "alexnet"]
)
def test_published_figures_within_one_percent(build, mparams: float, gmacs: float | None) -> None:
    result = profile(build(), input_size=(224, 224))
    assert result.params / 1e6 == pytest.approx(mparams, rel=0.01)
    if gmacs is not None:
        assert result.macs / 1e9 == pytest.approx(gmacs, rel=0.01)


def test_conv_arithmetic_by_hand() -> None:
    net = nn.Sequential(
        nn.Conv2d(3, 8, kernel_size=3, padding=1, stride=2),  # 32 -> 16, RF 3, jump 2
        nn.MaxPool2d(2),  # 16 -> 8, RF 3 + 1*2 = 5, jump 4
        nn.Conv2d(8, 4, kernel_size=3, dilation=2, bias=False),  # k_eff 5: 8 -> 4, RF 5 + 4*4 = 21
    )
    rows = profile(net, input_size=(32, 32)).rows
    assert [r.output_shape for r in rows] == [(8, 16, 16), (8, 8, 8), (4, 4, 4)]
    assert [r.params for r in rows] == [3 * 8 * 9 + 8, 0, 8 * 4 * 9]
    assert rows[0].macs == 16 * 16 * 8 * 3 * 9 and rows[2].macs == 4 * 4 * 4 * 8 * 9
    assert [r.receptive_field for r in rows] == [3, 5, 21]
    assert rows[1].macs == 0


def test_the_command_prints_the_table(capsys) -> None:
    cfg = compose_command("inspect", "model=unet_paper", "model.num_classes=2", "input_size=[572,572]")
    print_profile(cfg)  # what python -m segkit.inspect runs (its errors: the next test)
    out = capsys.readouterr().out
    assert "total: 31.0" in out  # the paper's U-Net: 31.0 M parameters
    assert "2x388x388" in out


def test_a_size_the_network_cannot_take_is_one_line_not_a_traceback() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "segkit.inspect", "model=unet_paper", "model.num_classes=2", "input_size=[100,100]"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "input length 100 is too small for a depth-4 U-Net with valid padding; the smallest that works is 188" in (
        done.stderr
    )


def test_receptive_field_flows_through_residual_adds() -> None:
    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1))  # RF 5
            self.after = nn.Conv2d(4, 4, 3, padding=1)

        def forward(self, x):
            return self.after(x + self.body(x))  # the sum has the body's field: 5, then +2

    rows = profile(Residual(), input_size=(16, 16), in_channels=4).rows
    assert [r.receptive_field for r in rows] == [3, 5, 7]


@pytest.mark.parametrize(("kernel", "stride", "dilation"), list(itertools.product((1, 2, 3, 5), (1, 2, 3), (1, 2))))
def test_conv_output_size_matches_torch(kernel: int, stride: int, dilation: int) -> None:
    for size, padding in itertools.product((7, 8, 13), (0, 1, 2, "valid", "same")):
        if padding == "same" and stride > 1:
            continue  # torch refuses it; checked against TensorFlow's definition below
        padded = size + 2 * padding if isinstance(padding, int) else size + (padding == "same") * dilation * kernel
        if padded < dilation * (kernel - 1) + 1:
            with pytest.raises(ValueError, match="does not fit"):
                conv_output_size(size, kernel, stride, padding, dilation)
            continue
        conv = nn.Conv2d(1, 1, kernel, stride=stride, padding=padding, dilation=dilation)
        expected = conv(torch.zeros(1, 1, size, size + 1)).shape[-2:]
        got = conv_output_size((size, size + 1), kernel, stride, padding, dilation)
        assert got == tuple(expected), (size, kernel, stride, padding, dilation)
        assert conv_output_size(size, kernel, stride, padding, dilation) == expected[0]


def test_same_padding_with_stride_gives_ceil_of_size_over_stride() -> None:
    assert conv_output_size(7, 3, stride=2, padding="same") == 4
    assert conv_output_size((8, 9), (3, 3), stride=(2, 3), padding="same") == (4, 3)


def test_pixel_use_counts_by_hand_and_against_autograd() -> None:
    counts = pixel_use_counts(5, 3)
    assert counts.tolist() == [
        [1, 2, 3, 2, 1],
        [2, 4, 6, 4, 2],
        [3, 6, 9, 6, 3],
        [2, 4, 6, 4, 2],
        [1, 2, 3, 2, 1],
    ]
    assert pixel_use_counts(6, 2, stride=2).eq(1).all()  # non-overlapping windows read every pixel once
    same = pixel_use_counts(5, 3, padding="same")
    assert same[1:-1, 1:-1].eq(9).all() and same[0, 0] == 4 and same[0, 2] == 6
    # d(sum of a conv with all-one weights)/dx counts exactly how many windows read each pixel
    for kernel, stride, padding, dilation in [(3, 1, 1, 1), (4, 2, 1, 1), (3, 2, 0, 2), ((3, 5), 1, (1, 2), 1)]:
        x = torch.zeros(1, 1, 11, 12, requires_grad=True)
        conv = nn.Conv2d(1, 1, kernel, stride=stride, padding=padding, dilation=dilation, bias=False)
        nn.init.ones_(conv.weight)
        conv(x).sum().backward()
        assert torch.equal(pixel_use_counts((11, 12), kernel, stride, padding, dilation), x.grad[0, 0].long())


def test_conv_params_formula() -> None:
    for c_in, c_out, k, bias, groups in [(3, 64, 3, True, 1), (64, 64, (1, 7), False, 1), (32, 32, 7, True, 32)]:
        conv = nn.Conv2d(c_in, c_out, k, bias=bias, groups=groups)
        assert conv_params(c_in, c_out, k, bias, groups) == sum(p.numel() for p in conv.parameters())


def test_min_pool_is_the_mirror_of_max_pool() -> None:
    x = torch.randn(2, 3, 9, 10)
    pool = MinPool2d(3, stride=2, padding=1)
    assert torch.equal(pool(x), -nn.functional.max_pool2d(-x, 3, stride=2, padding=1))
    assert pool(x).shape[-2:] == nn.MaxPool2d(3, stride=2, padding=1)(x).shape[-2:]
    mask = torch.zeros(1, 1, 7, 7)
    mask[..., 1:6, 1:6] = 1  # a 5x5 square erodes to 3x3 under a 3x3 min filter
    assert MinPool2d(3, stride=1, padding=1)(mask).sum() == 9
    rows = profile(nn.Sequential(nn.Conv2d(1, 2, 3), MinPool2d(2), nn.Conv2d(2, 2, 3)), input_size=(16, 16)).rows
    assert [r.receptive_field for r in rows] == [3, 4, 8]  # same arithmetic as max pooling
    assert rows[1].macs == 0 and rows[1].output_shape == (2, 7, 7)


@pytest.mark.parametrize(("depth", "expected"), [(1, 18), (2, 44)])
def test_unet_receptive_field_equals_the_footprint_autograd_measures(depth: int, expected: int) -> None:
    net = UNet(num_classes=1, in_channels=1, padding="valid", norm=None, base_channels=4, depth=depth).eval()
    for weight in net.parameters():
        nn.init.uniform_(weight, 0.0, 0.1)  # every ReLU stays on, so a zero gradient means "not read"
    for name, module in list(net.named_modules()):  # max pooling sends gradient to one pixel a window only
        if isinstance(module, nn.MaxPool2d):
            parent, child = name.rsplit(".", 1)
            setattr(net.get_submodule(parent), child, nn.AvgPool2d(module.kernel_size, module.stride))
    size = net.input_size_for((8, 8))[0]
    x = torch.rand(1, 1, size, size, requires_grad=True)
    net(x)[0, 0, 4, 4].backward()
    rows = x.grad[0, 0].abs().sum(1).nonzero().flatten()  # input rows the output pixel depends on
    assert rows[-1] - rows[0] + 1 == expected
    assert max(r.receptive_field for r in profile(net, input_size=(size, size)).rows) == expected
