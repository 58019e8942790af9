"""The inspector reproduces published parameter/MAC counts and the conv arithmetic by hand."""

from __future__ import annotations

import subprocess
import sys

import pytest
import timm
import torchvision
from torch import nn

from segkit.inspect import profile

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


def test_command_line_prints_the_table() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "segkit.inspect", "model=unet_paper", "model.num_classes=2", "input_size=[572,572]"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "total: 31.0" in out  # the paper's U-Net: 31.0 M parameters
    assert "2x388x388" in out


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
